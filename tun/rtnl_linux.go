package tun

// Route netlink, the few requests the kernel interface needs (its link,
// addresses, routes and the exit node's ip rules), over
// github.com/jsimonetti/rtnetlink, which glow links anyway (tailscale's
// netmon, under the port mapper, uses it). vishvananda/netlink, used here
// before, does the same but carries every other netlink family with it:
// about a megabyte of binary, and so of an idle daemon's resident memory.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/jsimonetti/rtnetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// rtnl is a route netlink socket. It stays in the network namespace of the
// thread that opened it, whichever goroutine uses it later. Not safe for
// concurrent use (Kernel serialises on its mutex).
type rtnl struct {
	c *rtnetlink.Conn
}

func dialRtnl() (*rtnl, error) {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, err
	}
	return &rtnl{c: c}, nil
}

func (r *rtnl) Close() error { return r.c.Close() }

// errNoLink is what linkByName returns for a name no interface has.
var errNoLink = errors.New("no such interface")

// link is what glow reads of an interface.
type link struct {
	Index int
	Kind  string // IFLA_INFO_KIND: "tun", "veth", ...; "" for none
	Tun   tunInfo
}

// tunInfo is a TUN/TAP device's IFLA_INFO_DATA.
type tunInfo struct {
	Type       uint8 // IFF_TUN or IFF_TAP
	NonPersist bool  // IFLA_TUN_PERSIST present and 0: it lives only while a process holds it
	MultiQueue bool
	Queues     uint32
}

// linkByName looks up one interface by name (RTM_GETLINK with IFLA_IFNAME,
// not a dump: interfaces glow cannot parse elsewhere do not matter).
func (r *rtnl) linkByName(name string) (link, error) {
	msgs, err := r.c.Execute(&rtnetlink.LinkMessage{
		Family:     unix.AF_UNSPEC,
		Attributes: &rtnetlink.LinkAttributes{Name: name},
	}, unix.RTM_GETLINK, netlink.Request)
	if errors.Is(err, unix.ENODEV) {
		return link{}, fmt.Errorf("%s: %w", name, errNoLink)
	}
	if err != nil {
		return link{}, err
	}
	for _, m := range msgs {
		lm, ok := m.(*rtnetlink.LinkMessage)
		if !ok || lm.Attributes == nil || lm.Attributes.Name != name {
			continue
		}
		l := link{Index: int(lm.Index)}
		if info := lm.Attributes.Info; info != nil {
			l.Kind = info.Kind
			if l.Kind == "tun" {
				if l.Tun, err = parseTunInfo(info.Data); err != nil {
					return link{}, fmt.Errorf("%s: %w", name, err)
				}
			}
		}
		return l, nil
	}
	return link{}, fmt.Errorf("%s: %w", name, errNoLink)
}

// IFLA_TUN_* (linux/if_link.h).
const (
	iflaTunType       = 3
	iflaTunPersist    = 6
	iflaTunMultiQueue = 7
	iflaTunNumQueues  = 8
)

// parseTunInfo decodes a TUN device's IFLA_INFO_DATA attributes.
func parseTunInfo(b []byte) (tunInfo, error) {
	var t tunInfo
	if len(b) == 0 {
		return t, nil
	}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return t, fmt.Errorf("tun link info: %w", err)
	}
	for ad.Next() {
		switch ad.Type() {
		case iflaTunType:
			t.Type = ad.Uint8()
		case iflaTunPersist:
			t.NonPersist = ad.Uint8() == 0
		case iflaTunMultiQueue:
			t.MultiQueue = ad.Uint8() != 0
		case iflaTunNumQueues:
			t.Queues = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return tunInfo{}, fmt.Errorf("tun link info: %w", err)
	}
	return t, nil
}

func (r *rtnl) linkSetMTU(index, mtu int) error {
	return r.c.Link.Set(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC, Index: uint32(index),
		Attributes: &rtnetlink.LinkAttributes{MTU: uint32(mtu)},
	})
}

func (r *rtnl) linkSetUp(index int) error {
	return r.c.Link.Set(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC, Index: uint32(index),
		Flags: unix.IFF_UP, Change: unix.IFF_UP,
	})
}

func (r *rtnl) linkDel(index int) error { return r.c.Link.Delete(uint32(index)) }

// addrs returns the addresses of interface index, as prefixes.
func (r *rtnl) addrs(index int) ([]netip.Prefix, error) {
	msgs, err := r.c.Address.List()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, m := range msgs {
		if int(m.Index) != index || m.Attributes == nil {
			continue
		}
		ip := m.Attributes.Local // IPv4: the address; IFA_ADDRESS may be a peer's
		if ip == nil {
			ip = m.Attributes.Address
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		a = a.Unmap()
		if bits := int(m.PrefixLength); bits <= a.BitLen() {
			out = append(out, netip.PrefixFrom(a, bits))
		}
	}
	return out, nil
}

func addrMsg(index int, p netip.Prefix, flags uint32) *rtnetlink.AddressMessage {
	fam := uint8(unix.AF_INET6)
	if p.Addr().Is4() {
		fam = unix.AF_INET
	}
	ip := net.IP(p.Addr().AsSlice())
	return &rtnetlink.AddressMessage{
		Family: fam, PrefixLength: uint8(p.Bits()), Index: uint32(index),
		Flags:      uint8(flags),
		Attributes: &rtnetlink.AddressAttributes{Address: ip, Local: ip, Flags: flags},
	}
}

// addrAdd adds p to interface index; IPv6 addresses without duplicate
// address detection (IFA_F_NODAD), so that they are usable at once.
func (r *rtnl) addrAdd(index int, p netip.Prefix) error {
	var flags uint32
	if p.Addr().Is6() {
		flags = unix.IFA_F_NODAD
	}
	return r.c.Address.New(addrMsg(index, p, flags))
}

func (r *rtnl) addrDel(index int, p netip.Prefix) error {
	return r.c.Address.Delete(addrMsg(index, p, 0))
}

// route is what glow reads and writes of a route.
type route struct {
	Dst      netip.Prefix
	Src      netip.Addr // preferred source (RTA_PREFSRC); zero for none
	Gateway  bool       // has a gateway (RTA_GATEWAY); glow never sets one
	Link     int        // output interface; 0 for none
	Table    uint32
	Protocol uint8
	Scope    uint8
	Type     uint8 // RTN_*; 0 means RTN_UNICAST
}

// routes lists the routes of every family and table that keep returns
// true for.
func (r *rtnl) routes(keep func(route) bool) ([]route, error) {
	msgs, err := r.c.Route.List()
	if err != nil {
		return nil, err
	}
	var out []route
	for _, m := range msgs {
		rt, ok := routeOf(m)
		if ok && keep(rt) {
			out = append(out, rt)
		}
	}
	return out, nil
}

// routeOf converts a dumped route; false for families other than IPv4 and
// IPv6 and for routes whose addresses do not parse.
func routeOf(m rtnetlink.RouteMessage) (route, bool) {
	var zero netip.Addr
	switch m.Family {
	case unix.AF_INET:
		zero = netip.IPv4Unspecified()
	case unix.AF_INET6:
		zero = netip.IPv6Unspecified()
	default:
		return route{}, false
	}
	a := m.Attributes
	dst := zero
	if a.Dst != nil {
		d, ok := netip.AddrFromSlice(a.Dst)
		if !ok || d.Unmap().BitLen() != zero.BitLen() {
			return route{}, false
		}
		dst = d.Unmap()
	}
	p, err := dst.Prefix(int(m.DstLength))
	if err != nil {
		return route{}, false
	}
	rt := route{Dst: p, Gateway: a.Gateway != nil, Link: int(a.OutIface), Table: a.Table,
		Protocol: m.Protocol, Scope: m.Scope, Type: m.Type}
	if rt.Table == 0 {
		rt.Table = uint32(m.Table)
	}
	if s, ok := netip.AddrFromSlice(a.Src); ok {
		rt.Src = s.Unmap()
	}
	return rt, true
}

func (rt route) msg() *rtnetlink.RouteMessage {
	fam := uint8(unix.AF_INET6)
	if rt.Dst.Addr().Is4() {
		fam = unix.AF_INET
	}
	typ := rt.Type
	if typ == 0 {
		typ = unix.RTN_UNICAST
	}
	m := &rtnetlink.RouteMessage{
		Family: fam, DstLength: uint8(rt.Dst.Bits()),
		Protocol: rt.Protocol, Scope: rt.Scope, Type: typ,
		Attributes: rtnetlink.RouteAttributes{
			Dst:      net.IP(rt.Dst.Addr().AsSlice()),
			OutIface: uint32(rt.Link),
			Table:    rt.Table, // RTA_TABLE: tables above 255 fit only there
		},
	}
	if rt.Table < 256 {
		m.Table = uint8(rt.Table)
	}
	if rt.Src.IsValid() {
		m.Attributes.Src = net.IP(rt.Src.AsSlice())
	}
	return m
}

func (r *rtnl) routeReplace(rt route) error { return r.c.Route.Replace(rt.msg()) }

func (r *rtnl) routeDel(rt route) error { return r.c.Route.Delete(rt.msg()) }

// syncRoutes makes the routes match selects exactly want, by destination:
// it deletes the selected routes whose destination want lacks and adds
// those of want that are missing. A route already gone (ESRCH) is no error.
func (r *rtnl) syncRoutes(match func(route) bool, want []route) error {
	cur, err := r.routes(match)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	missing := make(map[netip.Prefix]route, len(want))
	for _, w := range want {
		missing[w.Dst] = w
	}
	for _, c := range cur {
		if _, ok := missing[c.Dst]; ok {
			delete(missing, c.Dst)
			continue
		}
		if err := r.routeDel(c); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove route %v: %w", c.Dst, err)
		}
	}
	for _, w := range missing {
		if err := r.routeReplace(w); err != nil {
			return fmt.Errorf("add route %v: %w", w.Dst, err)
		}
	}
	return nil
}

// rule is one ip rule.
type rule struct {
	Family   uint8 // AF_INET or AF_INET6
	Priority uint32
	Table    uint32 // 0: none (an action other than lookup)
	Mark     uint32 // with Mask: fwmark Mark/Mask
	Mask     uint32 // 0: no fwmark match
	Action   uint8  // FR_ACT_*; 0 means lookup Table (FR_ACT_TO_TBL)
}

func (ru rule) msg(add bool) *rtnetlink.RuleMessage {
	prio := ru.Priority
	m := &rtnetlink.RuleMessage{
		Family: ru.Family, Action: ru.Action,
		Attributes: &rtnetlink.RuleAttributes{Priority: &prio},
	}
	if m.Action == 0 && add {
		m.Action = unix.FR_ACT_TO_TBL
	}
	if ru.Table != 0 {
		table := ru.Table
		m.Attributes.Table = &table
		if table < 256 {
			m.Table = uint8(table)
		}
	}
	if ru.Mask != 0 {
		mark, mask := ru.Mark, ru.Mask
		m.Attributes.FwMark, m.Attributes.FwMask = &mark, &mask
	}
	return m
}

// ruleAdd adds ru; an identical rule already there is an error (EEXIST).
func (r *rtnl) ruleAdd(ru rule) error { return r.c.Rule.Add(ru.msg(true)) }

// ruleDel deletes one rule matching ru (any action when ru.Action is 0);
// ENOENT when there is none.
func (r *rtnl) ruleDel(ru rule) error { return r.c.Rule.Delete(ru.msg(false)) }
