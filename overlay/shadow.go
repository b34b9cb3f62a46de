package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"glow/overlay/member"
)

// Address shadowing. Every user allocates IPv4 addresses in the same
// 100.64.0.0/10 on its own, and a friend's user key signs whatever address
// it likes, so a friend's certificate may claim an address that one of our
// nodes holds. WireGuard gives a prefix to one peer only (the one
// configured last), so routing it to the friend would move our traffic for
// that node to the friend and let the friend's packets pass the filter as
// our node's. So a friend's address is routed (WireGuard allowed IPs, the
// packet path's address map, the filter's directory, DNS) only if no node
// of another user claims it: our nodes always keep theirs, and two friends
// claiming one address both lose it (neither may take it from the other).
// A friend's IPv6 inside our /48 is never routed. The friend stays
// reachable at its other address (every user has its own IPv6 /48), and
// the collision shows in `glow status` (Status.Conflicts).

// shadowState is what refreshShadowLocked computed from the certificates
// held. Guarded by Node.mu.
type shadowState struct {
	owner     map[netip.Addr][32]byte // the user of a certificate claiming each address
	conflicts []AddrConflict
	multi     map[netip.Addr]bool // addresses claimed by more than one user
}

// computeShadowLocked builds the shadow state from the certificates held.
func (n *Node) computeShadowLocked() *shadowState {
	s := &shadowState{owner: map[netip.Addr][32]byte{}, multi: map[netip.Addr]bool{}}
	certs := n.mem.store.Certs()
	if n.mem.store.Cert(n.id) == nil {
		certs = append(certs, n.mem.cert)
	}
	// Our own certificates first, so that a conflict names ours as holder.
	slices.SortStableFunc(certs, func(a, b *member.Cert) int {
		return boolInt(!n.mem.store.Own(a.User)) - boolInt(!n.mem.store.Own(b.User))
	})
	holder := map[netip.Addr]*member.Cert{}
	// Our devices' addresses are ours as our nodes' are: only the device
	// list names them (devices.go), and a friend may have seen one as the
	// source of a device's packets (TestAttackFriendClaimsDeviceAddress).
	devs := map[netip.Addr]string{}
	for _, d := range n.devicesLocked() {
		devs[d.IPv4] = d.Name
		s.owner[d.IPv4] = n.mem.cert.User
	}
	for _, c := range certs {
		for _, a := range [2]netip.Addr{c.IPv4, c.IPv6} {
			if dev, ok := devs[a]; ok && !n.mem.store.Own(c.User) {
				s.multi[a] = true
				s.conflicts = append(s.conflicts, AddrConflict{Addr: a.String(),
					Node: c.Name + "." + n.userNameLocked(c), Holder: dev + "." + n.mem.cert.UserName + " (a device)"})
				continue
			}
			h := holder[a]
			if h == nil {
				holder[a], s.owner[a] = c, c.User
				continue
			}
			if h.User == c.User {
				continue
			}
			if !s.multi[a] && !n.mem.store.Own(h.User) {
				// Two friends: the first loses it too.
				s.conflicts = append(s.conflicts, AddrConflict{Addr: a.String(),
					Node: h.Name + "." + n.userNameLocked(h), Holder: c.Name + "." + n.userNameLocked(c)})
			}
			s.multi[a] = true
			s.conflicts = append(s.conflicts, AddrConflict{Addr: a.String(),
				Node: c.Name + "." + n.userNameLocked(c), Holder: h.Name + "." + n.userNameLocked(h)})
		}
	}
	own6 := member.UserPrefix6(n.mem.cert.User[:])
	for _, c := range certs {
		if !n.mem.store.Own(c.User) && own6.Contains(c.IPv6) && !s.multi[c.IPv6] {
			s.conflicts = append(s.conflicts, AddrConflict{Addr: c.IPv6.String(),
				Node: c.Name + "." + n.userNameLocked(c), Holder: fmt.Sprintf("%v (%s's network)", own6, n.mem.cert.UserName)})
		}
	}
	slices.SortFunc(s.conflicts, func(a, b AddrConflict) int {
		return strings.Compare(a.Addr+" "+a.Node, b.Addr+" "+b.Node)
	})
	return s
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// routedLocked returns the addresses of c that this node routes to c's
// node: all of them for our own nodes, for a friend's node those no other
// user's node claims and none in our /48. A certificate not yet in the
// shadow state (just added) is checked against the holders it knows.
func (n *Node) routedLocked(c *member.Cert) []netip.Addr {
	if n.mem.store.Own(c.User) {
		return []netip.Addr{c.IPv4, c.IPv6}
	}
	if n.paths.shadow == nil {
		n.paths.shadow = n.computeShadowLocked()
	}
	s := n.paths.shadow
	out := make([]netip.Addr, 0, 2)
	for _, a := range [2]netip.Addr{c.IPv4, c.IPv6} {
		if u, ok := s.owner[a]; s.multi[a] || ok && u != c.User {
			continue
		}
		if a.Is6() && member.UserPrefix6(n.mem.cert.User[:]).Contains(a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// wgConfigLocked sets p's WireGuard configuration: its key and the
// addresses routed to it (routedLocked), exactly.
func (n *Node) wgConfigLocked(p *peer) {
	c := p.cert
	if !n.mem.store.Own(c.User) {
		// A friend's node may send once WireGuard has its peer: the filter
		// is on from now, not from refreshPolicyLocked, which may come a
		// queue of datagrams later (flushCertsLocked) and turns it off
		// again if no friend's node is left. Until then the friend's
		// addresses are no one's in the directory: its packets are dropped.
		n.filterOnLocked()
	}
	if s := n.paths.shadow; s != nil && n.mem.store.Cert(c.Node) == c {
		refresh := false
		for _, a := range [2]netip.Addr{c.IPv4, c.IPv6} {
			switch u, ok := s.owner[a]; {
			case !ok:
				// Claimed from now on, as the state computed next will say:
				// a friend's certificate taken before then (a queue of
				// datagrams later: flushCertsLocked) is checked against it
				// (TestAttackFriendTakesOurNewAddress).
				s.owner[a] = c.User
			case u != c.User && n.mem.store.Own(c.User):
				// A new node of ours with an address a friend's node was
				// given: the friend loses it now, not when the shadow state
				// is next computed, else a wake of the friend's WireGuard
				// peer meanwhile takes it back. With c held, the state
				// computed now gives a to us: no second refresh below.
				refresh = true
			}
		}
		if refresh {
			n.refreshShadowLocked()
		}
	}
	ips := n.routedLocked(c)
	devs := n.deviceAddrsViaLocked(c) // the devices it is the via node of (devices.go)
	all := append(slices.Clone(ips), devs...)
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\nendpoint=%s\nreplace_allowed_ips=true\n", c.WG, c.Node.Hex())
	for _, a := range all {
		fmt.Fprintf(&b, "allowed_ip=%v\n", netip.PrefixFrom(a, a.BitLen()))
	}
	for _, r := range p.subnets {
		fmt.Fprintf(&b, "allowed_ip=%v\n", r)
	}
	n.bind.setWG(p.ep, fmt.Sprint(c.WG), b.String(), all)
	p.routed, p.devices = ips, devs
}

// refreshShadowLocked recomputes which friends' addresses are shadowed and
// reconfigures the peers whose routed addresses changed. Our nodes that
// hold a contested address are configured again after them, so the prefix
// is theirs in WireGuard whatever happened before.
func (n *Node) refreshShadowLocked() {
	n.paths.shadow = n.computeShadowLocked()
	changed := false
	for _, p := range n.paths.peers {
		if !slices.Equal(p.routed, n.routedLocked(p.cert)) || !slices.Equal(p.devices, n.deviceAddrsViaLocked(p.cert)) {
			n.wgConfigLocked(p)
			changed = true
		}
	}
	if !changed {
		return
	}
	for _, p := range n.paths.peers {
		if n.mem.store.Own(p.cert.User) && (n.paths.shadow.multi[p.cert.IPv4] || n.paths.shadow.multi[p.cert.IPv6] ||
			slices.ContainsFunc(p.devices, func(a netip.Addr) bool { return n.paths.shadow.multi[a] })) {
			n.wgConfigLocked(p)
		}
	}
	for _, c := range n.paths.shadow.conflicts {
		n.logf("glow: %s claims %s, which %s holds: not routed to it", c.Node, c.Addr, c.Holder)
	}
}

// routesTo reports whether this node routes ip to p.
func (p *peer) routesTo(ip netip.Addr) bool { return slices.Contains(p.routed, ip) }
