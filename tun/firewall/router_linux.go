package firewall

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// RouterTable is the name of the nftables table (family inet) a subnet
// router or exit node installs while it offers routes: it masquerades what
// the overlay sends out of other interfaces and clamps the MSS of TCP
// forwarded to or from the overlay.
const RouterTable = "glow-router"

// ForwardMark marks packets forwarded from the overlay (bits of 0xff0000,
// the mask Tailscale uses too), for the masquerade in postrouting, where
// the incoming interface is no longer known.
const ForwardMark = 0x40000

const markMask = 0xff0000

// RouterRules returns the router table, its chains and rules for glow's
// interface iface. It talks to no kernel.
//
//	forward     (filter, priority mangle): from iface: mark ForwardMark;
//	            TCP SYN to or from iface: MSS set to the route's MTU
//	postrouting (nat, priority srcnat): marked and not out of iface: masquerade
func RouterRules(iface string) (*nftables.Table, []*nftables.Chain, []*nftables.Rule) {
	table := &nftables.Table{Name: RouterTable, Family: nftables.TableFamilyINet}
	accept := nftables.ChainPolicyAccept
	fwd := &nftables.Chain{Name: "forward", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityMangle, Policy: &accept}
	post := &nftables.Chain{Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept}
	rule := func(c *nftables.Chain, comment string, exprs ...expr.Any) *nftables.Rule {
		return &nftables.Rule{Table: table, Chain: c, Exprs: exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, comment)}
	}
	ifIs := func(key expr.MetaKey, op expr.CmpOp) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: key, Register: 1},
			&expr.Cmp{Op: op, Register: 1, Data: ifname(iface)},
		}
	}
	setMark := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(markMask)),
			Xor:  binaryutil.NativeEndian.PutUint32(ForwardMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
	clamp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0}},
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt},
	}
	marked := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(markMask), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(ForwardMark)},
	}
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	rules := []*nftables.Rule{
		rule(fwd, "glow: mark what the overlay forwards", cat(ifIs(expr.MetaKeyIIFNAME, expr.CmpOpEq), setMark)...),
		rule(fwd, "glow: clamp the MSS of TCP from the overlay", cat(ifIs(expr.MetaKeyIIFNAME, expr.CmpOpEq), clamp)...),
		rule(fwd, "glow: clamp the MSS of TCP to the overlay", cat(ifIs(expr.MetaKeyOIFNAME, expr.CmpOpEq), clamp)...),
		rule(post, "glow: masquerade what the overlay sends elsewhere",
			cat(marked, ifIs(expr.MetaKeyOIFNAME, expr.CmpOpNeq), []expr.Any{&expr.Masq{}})...),
	}
	return table, []*nftables.Chain{fwd, post}, rules
}

// SetRouter installs the router table for iface through c (on), replacing
// one left before, or removes it (off; no table is not an error).
func SetRouter(c *nftables.Conn, iface string, on bool) error {
	table, chains, rules := RouterRules(iface)
	c.AddTable(table) // exists afterwards either way, so the delete cannot fail
	c.DelTable(table)
	if on {
		c.AddTable(table)
		for _, ch := range chains {
			c.AddChain(ch)
		}
		for _, r := range rules {
			c.AddRule(r)
		}
	}
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		if on {
			return fmt.Errorf("firewall: install nftables table inet %s: %w", RouterTable, err)
		}
		return fmt.Errorf("firewall: remove nftables table inet %s: %w", RouterTable, err)
	}
	return nil
}

// RemoveStaleRouter deletes the router table in the calling thread's
// network namespace if the interface it serves no longer exists (its
// daemon crashed), and reports whether it removed one.
func RemoveStaleRouter() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("firewall: netlink: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, nil // no nftables: no table either
	}
	var table *nftables.Table
	for _, t := range tables {
		if t.Name == RouterTable {
			table = t
		}
	}
	if table == nil {
		return false, nil
	}
	rules, err := c.GetRules(table, &nftables.Chain{Name: "forward", Table: table})
	if err == nil && len(rules) > 0 {
		if owner := ruleIifname(rules[0]); owner != "" && interfaceExists(owner) {
			return false, nil
		}
	}
	c.DelTable(table)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, fmt.Errorf("firewall: remove stale nftables table inet %s: %w", RouterTable, err)
	}
	return true, nil
}
