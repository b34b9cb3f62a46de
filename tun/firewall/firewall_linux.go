package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Table is the name of glow's nftables table (family inet).
const Table = "glow"

// Chain is the name of the table's only chain.
const Chain = "underlay"

// Config says what the firewall guards. It is validated once, by Install.
type Config struct {
	// Interface is glow's TUN: the only interface (besides loopback) on
	// which overlay addresses may arrive. Required.
	Interface string
	// Prefixes are the overlay's address ranges: IPv4 and IPv6, any number.
	Prefixes []netip.Prefix
}

func (c Config) validate() error {
	if c.Interface == "" || len(c.Interface) >= unix.IFNAMSIZ {
		return fmt.Errorf("firewall: Config.Interface %q: want 1 to 15 bytes", c.Interface)
	}
	for _, p := range c.Prefixes {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return fmt.Errorf("firewall: Config.Prefixes: invalid prefix %v", p)
		}
	}
	return nil
}

// normalize returns the prefixes masked, unmapped, sorted, without
// duplicates and without any prefix another one covers.
func normalize(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			a, bits = a.Unmap(), max(bits-96, 0)
		}
		out = append(out, netip.PrefixFrom(a, bits).Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	var keep []netip.Prefix
	for _, p := range out {
		covered := false
		for _, k := range keep {
			if k.Addr().Is4() == p.Addr().Is4() && k.Bits() <= p.Bits() && k.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			keep = append(keep, p)
		}
	}
	return keep
}

// Rules returns the table, its chain and the chain's rules for cfg, in
// order: accept from the interface, accept from loopback, then for each
// prefix a counted drop of packets with it as source, then as destination
// (for IPv4 prefixes, only when the address is not the incoming interface's
// own: see notOwnedByIncoming). It talks to no kernel.
func Rules(cfg Config) (*nftables.Table, *nftables.Chain, []*nftables.Rule) {
	table := &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
	accept := nftables.ChainPolicyAccept
	chain := &nftables.Chain{
		Name: Chain, Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw,
		Policy: &accept,
	}
	rule := func(comment string, exprs ...expr.Any) *nftables.Rule {
		return &nftables.Rule{Table: table, Chain: chain, Exprs: exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, comment)}
	}
	acceptFrom := func(name string) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}
	}
	rules := []*nftables.Rule{
		rule("glow: the overlay's own interface", acceptFrom(cfg.Interface)...),
		rule("glow: this host's own traffic", acceptFrom("lo")...),
	}
	for _, p := range normalize(cfg.Prefixes) {
		for _, dst := range []bool{false, true} {
			dir := "source"
			if dst {
				dir = "destination"
			}
			exprs := matchPrefix(p, dst)
			if p.Addr().Is4() {
				exprs = append(exprs, notOwnedByIncoming(dst)...)
			}
			exprs = append(exprs, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
			rules = append(rules, rule(fmt.Sprintf("glow: overlay %s %v from the underlay", dir, p), exprs...))
		}
	}
	return table, chain, rules
}

// notOwnedByIncoming matches an IPv4 packet whose address is not the
// incoming interface's business: for a destination, one that is not an
// address of that interface (fib daddr . iif type != local); for a source,
// one that is not routed back through it (fib saddr . iif oif missing, the
// strict reverse-path check). 100.64.0.0/10 is also carrier-grade NAT
// space: a host whose WAN address is 100.72.5.9/20 must keep receiving on
// it, and from its neighbours in that /20 (a more specific route than the
// overlay's /10), while a forged or misrouted overlay address never passes.
func notOwnedByIncoming(dst bool) []expr.Any {
	if dst {
		return []expr.Any{
			&expr.Fib{Register: 1, ResultADDRTYPE: true, FlagDADDR: true, FlagIIF: true},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		}
	}
	return []expr.Any{
		&expr.Fib{Register: 1, ResultOIF: true, FlagSADDR: true, FlagIIF: true, FlagPRESENT: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
	}
}

// ifname is an interface name as iifname compares it: NUL-padded, as nft does.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// matchPrefix matches packets of p's family whose source (or destination)
// address is in p.
func matchPrefix(p netip.Prefix, dst bool) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if p.Addr().Is6() {
		proto, off, n = unix.NFPROTO_IPV6, 8, 16
	}
	if dst {
		off += n
	}
	mask := net.CIDRMask(p.Bits(), int(n)*8)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// Firewall is glow's table, installed. Its methods are safe for concurrent
// use.
type Firewall struct {
	iface string

	// mu guards the following.
	mu     sync.Mutex
	conn   *nftables.Conn // netlink socket in the netns Install ran in; nil after Close
	prefix []netip.Prefix
}

// Install puts glow's table in place in the network namespace of the calling
// thread, replacing a stale one (see [RemoveStale]) in the same atomic batch.
// A table left by a daemon whose interface still exists and is not
// cfg.Interface is an error that names it.
//
// Every error it returns matches [ErrInstall] (errors.Is).
func Install(cfg Config) (*Firewall, error) {
	f, err := install(cfg)
	if err != nil {
		return nil, &installError{err}
	}
	return f, nil
}

// ErrInstall matches every error of Install: the table is not in place.
var ErrInstall = errors.New("firewall: not installed")

type installError struct{ err error }

func (e *installError) Error() string        { return e.err.Error() }
func (e *installError) Unwrap() error        { return e.err }
func (e *installError) Is(target error) bool { return target == ErrInstall }

func install(cfg Config) (*Firewall, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// A lasting connection keeps its socket in this thread's netns, so later
	// calls from any goroutine act on the same namespace.
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("firewall: netlink: %w", err)
	}
	if owner, ok, err := tableOwner(c); err != nil {
		c.CloseLasting()
		return nil, err
	} else if ok && owner != cfg.Interface && interfaceExists(owner) {
		c.CloseLasting()
		return nil, fmt.Errorf("firewall: nftables table inet %s already guards interface %s, which exists (another glow daemon in this network namespace?)", Table, owner)
	}
	f := &Firewall{iface: cfg.Interface, conn: c}
	if err := f.SetPrefixes(cfg.Prefixes); err != nil {
		c.CloseLasting()
		return nil, err
	}
	return f, nil
}

// SetPrefixes makes the guarded prefixes exactly ps, replacing the table in
// one atomic batch. It returns net.ErrClosed after Close.
func (f *Firewall) SetPrefixes(ps []netip.Prefix) error {
	cfg := Config{Interface: f.iface, Prefixes: ps}
	if err := cfg.validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn == nil {
		return net.ErrClosed
	}
	table, chain, rules := Rules(cfg)
	c := f.conn
	c.AddTable(table) // exists afterwards either way, so the delete cannot fail
	c.DelTable(table)
	c.AddTable(table)
	c.AddChain(chain)
	for _, r := range rules {
		c.AddRule(r)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: install nftables table inet %s: %w", Table, err)
	}
	f.prefix = normalize(ps)
	return nil
}

// Prefixes returns the prefixes the table guards now.
func (f *Firewall) Prefixes() []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.prefix)
}

// Close removes the table. It is idempotent; later calls return nil.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn == nil {
		return nil
	}
	c := f.conn
	f.conn = nil
	defer c.CloseLasting()
	c.DelTable(&nftables.Table{Name: Table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("firewall: remove nftables table inet %s: %w", Table, err)
	}
	return nil
}

var errNoNftables = errors.New("firewall: nftables not available in this kernel")

// RemoveStale deletes glow's table in the calling thread's network namespace
// if the interface it guards no longer exists (its daemon crashed: the TUN
// died with it). It reports whether it removed one; no table, or a table
// whose interface is alive, or a kernel without nftables, is not an error.
// It needs CAP_NET_ADMIN.
func RemoveStale() (removed bool, err error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("firewall: netlink: %w", err)
	}
	owner, ok, err := tableOwner(c)
	if errors.Is(err, errNoNftables) {
		return false, nil // then no table can exist either
	}
	if err != nil || !ok {
		return false, err
	}
	if owner != "" && interfaceExists(owner) {
		return false, nil
	}
	c.DelTable(&nftables.Table{Name: Table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("firewall: remove stale nftables table inet %s: %w", Table, err)
	}
	return true, nil
}

// tableOwner returns the interface that an existing glow table accepts
// (the first rule's iifname), and whether there is a table at all. A table
// without a readable owner gives "" and true.
func tableOwner(c *nftables.Conn) (string, bool, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ENOENT) {
			return "", false, fmt.Errorf("%w (modprobe nf_tables): %w", errNoNftables, err)
		}
		return "", false, fmt.Errorf("firewall: list nftables tables: %w", err)
	}
	var table *nftables.Table
	for _, t := range tables {
		if t.Name == Table {
			table = t
		}
	}
	if table == nil {
		return "", false, nil
	}
	rules, err := c.GetRules(table, &nftables.Chain{Name: Chain, Table: table})
	if err != nil || len(rules) == 0 {
		return "", true, nil
	}
	return ruleIifname(rules[0]), true, nil
}

// ruleIifname returns the interface name a rule's iifname match compares
// with, or "".
func ruleIifname(r *nftables.Rule) string {
	for i, e := range r.Exprs {
		m, ok := e.(*expr.Meta)
		if !ok || m.Key != expr.MetaKeyIIFNAME || i+1 >= len(r.Exprs) {
			continue
		}
		if cmp, ok := r.Exprs[i+1].(*expr.Cmp); ok && cmp.Op == expr.CmpOpEq {
			return string(bytes.TrimRight(cmp.Data, "\x00"))
		}
	}
	return ""
}

func interfaceExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}
