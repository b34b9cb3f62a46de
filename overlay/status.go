package overlay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"glow/overlay/api"
	"glow/tun"
)

// Status reports this node and its peers.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	c := n.mem.cert
	s := Status{
		Self: SelfStatus{
			Name: c.Name, User: c.UserName, IPv4: c.IPv4.String(), IPv6: c.IPv6.String(),
			ID: c.Node.String(), Admin: n.mem.user != nil, Port: n.Port(), Endpoints: []string{},
			Expires: c.NotAfter.UTC().Format(time.RFC3339), Warning: n.renew.warning,
		},
		Peers: []PeerStatus{},
		Drops: map[string]uint64{},
	}
	s.Self.Offered = append([]string{}, prefixStrings(n.offeredLocked())...)
	s.Self.ExitNode = n.rt.prefs.ExitNode
	if p := n.exitPeerLocked(); p != nil {
		s.Self.ExitNodeInUse = slices.Contains(p.subnets, defaultRoute4) && p.path().kind != pathNone
	}
	if n.mem.info != nil {
		for _, ep := range n.mem.info.Endpoints {
			s.Self.Endpoints = append(s.Self.Endpoints, ep.String())
		}
	}
	for _, p := range n.paths.peers {
		ps := PeerStatus{
			Name: p.cert.Name, User: n.userNameLocked(p.cert), IPv4: p.cert.IPv4.String(), IPv6: p.cert.IPv6.String(),
			ID: p.cert.Node.String(), Path: "none", Via: []string{},
			Session: p.ep.wg.on.Load(), Expires: p.cert.NotAfter.UTC().Format(time.RFC3339),
		}
		c := p.path()
		switch c.kind {
		case pathDirect:
			ps.Endpoint = c.direct.String()
		case pathStream:
			ps.Endpoint = p.streamName
		case pathRelay:
			// Reachable through the relays: every link of the route is
			// confirmed by both its ends' records (routes.go).
			ps.Via = n.routeNamesLocked(p)
		}
		if c.kind != pathNone {
			ps.Online, ps.Path = true, c.kind.String()
			ps.RTTms = float64(p.rtt.Microseconds()) / 1000
		}
		if info := n.mem.store.Info(p.cert.Node); info != nil {
			ps.Offered = prefixStrings(info.Routes)
		}
		ps.Routes = prefixStrings(p.subnets)
		ps.Loss = p.quality.Loss()
		if n.standbyProvenLocked(p, now) {
			ps.Standby = n.relayNamesLocked(p.standby)
		}
		if !p.lastHeard.IsZero() {
			ps.LastSeen = now.Sub(p.lastHeard).Round(time.Second).String() + " ago"
		}
		s.Peers = append(s.Peers, ps)
	}
	slices.SortFunc(s.Peers, func(a, b PeerStatus) int { return strings.Compare(a.Name, b.Name) })
	for k, v := range n.dropCtl {
		s.Drops["control/"+k] = v
	}
	for k, v := range n.mem.store.Rejected {
		s.Drops["record/"+k] = v
	}
	for k, v := range n.FilterCounts() {
		s.Drops["filter/"+k] = v
	}
	fc, fb := n.fwd.Counts()
	for k, v := range fc {
		s.Drops["relay/"+k] = v
	}
	s.Drops["relay/bytes"] = fb
	if n.paths.shadow == nil {
		n.paths.shadow = n.computeShadowLocked()
	}
	s.Conflicts = append([]AddrConflict{}, n.paths.shadow.conflicts...) // [] rather than null in JSON
	bc := n.bind.Counters()
	s.Drops["relay/unauthenticated-neighbour"] = bc.RelayUnauthenticated
	s.Drops["relay/short"] = bc.RelayShort
	s.Drops["relay/unknown-source"] = bc.RelayNoPeer
	s.Drops["relay/no-path"] = bc.RelayNoPath
	s.Drops["bind/unknown-source"] = bc.UnknownSource
	s.Drops["bind/device-refused"] = n.bind.dropDevInit.Load() // devicewg.go
	s.Drops["bind/device-limited"] = n.bind.dropDevLimited.Load()
	s.Drops["bind/control-queue-full"] = bc.ControlQueueFull
	s.Drops["bind/control-rate-limited"] = bc.ControlRateLimited
	s.Drops["bind/unknown-kind"] = bc.UnknownKind
	s.Drops["bind/send-no-path"] = bc.SendNoPath
	s.Drops["bind/stream-queue-full"] = bc.StreamFull
	s.Drops["bind/socket-lost"] = bc.SocketLost
	if k, ok := n.tunDev.(*tun.Kernel); ok {
		d := k.Drops()
		s.Drops["tun/unsplittable"] = d.Unsplittable
		s.Drops["tun/write-failed"] = d.WriteFailed
	}
	return s
}

// ErrNoSuchPeer is returned for a target that names no known node (the
// API's sentinel, so that errors.Is holds on both sides of the socket).
var ErrNoSuchPeer = api.ErrNoSuchPeer

// findLocked resolves a name (node, node.user, node.user.glow), a node id
// or an overlay address to a peer. A friend's node goes by the name our
// friend list gives its user, not the one its certificate claims, and a
// name or id that one of our nodes answers to is ours: a friend names its
// nodes as it likes (TestAttackFriendNodeNames). Of friends' nodes only,
// a target must name one.
func (n *Node) findLocked(target string) (*peer, error) {
	target = strings.TrimSuffix(strings.ToLower(target), ".")
	target = strings.TrimSuffix(target, ".glow")
	ip, ipErr := netip.ParseAddr(target)
	var own, friends []*peer
	for _, p := range n.paths.peers {
		c := p.cert
		if ipErr == nil && p.routesTo(ip) ||
			target == c.Name || target == n.fqdnLocked(c) || target == c.Node.String() {
			if n.mem.store.Own(c.User) {
				own = append(own, p)
			} else {
				friends = append(friends, p)
			}
		}
	}
	switch {
	case len(own) == 1:
		return own[0], nil
	case len(own) == 0 && len(friends) == 1:
		return friends[0], nil
	case len(own)+len(friends) > 1:
		var names []string
		for _, p := range append(own, friends...) {
			names = append(names, n.fqdnLocked(p.cert))
		}
		slices.Sort(names)
		return nil, api.Errorf(api.CodeInvalidArgument, "%q names more than one node (%s): give NODE.USER", target, strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("%w %q (see 'glow status')", ErrNoSuchPeer, target)
}

// Addrs returns the overlay addresses of target, or of this node if target is "".
func (n *Node) Addrs(target string) ([]netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if target == "" || target == n.mem.cert.Name || target == n.mem.cert.FQDN() {
		return []netip.Addr{n.mem.cert.IPv4, n.mem.cert.IPv6}, nil
	}
	p, err := n.findLocked(target)
	if err != nil || !n.mem.store.Own(p.cert.User) {
		// Our device before a friend's node of that name.
		if d, ok := n.findDeviceLocked(target); ok { // devices.go
			return []netip.Addr{d.IPv4, d.IPv6}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return slices.Clone(p.routed), nil
}

// Ping sends one overlay-level ping to target over its current path (or, with
// no path yet, to every candidate) and waits for the reply.
func (n *Node) Ping(ctx context.Context, target string) (PingResult, error) {
	reply := make(chan PingResult, 16)
	n.mu.Lock()
	p, err := n.findLocked(target)
	if err != nil {
		n.mu.Unlock()
		return PingResult{}, err
	}
	now := time.Now()
	name := n.fqdnLocked(p.cert)
	switch c := p.path(); {
	case c.kind == pathDirect:
		n.pingLocked(p, c.direct, now, reply)
	case c.kind != pathNone:
		n.pingLocked(p, netip.AddrPort{}, now, reply) // over the relay route or stream link
	case len(p.cands) > 0:
		for a := range p.cands {
			n.pingLocked(p, a, now, reply)
		}
	default:
		n.mu.Unlock()
		return PingResult{Peer: name, Path: "none"}, api.Errorf(api.CodeUnavailable, "no path to %s yet", name)
	}
	n.mu.Unlock()
	select {
	case r := <-reply:
		if r.Err != "" {
			return r, api.Errorf(api.CodeUnavailable, "ping %s: %s", name, r.Err)
		}
		return r, nil
	case <-ctx.Done():
		return PingResult{Peer: name}, api.Errorf(api.CodeUnavailable, "%w", ctx.Err())
	case <-n.done:
		return PingResult{Peer: name}, api.Errorf(api.CodeUnavailable, "node stopped")
	}
}

// ResolveName resolves a node name (nas, nas.alice, nas.alice.glow) or an
// address literal to an overlay address, for the userspace proxy; other
// names through the exit node in use, or the host's resolver (userdial.go).
func (n *Node) ResolveName(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, nil
	}
	addrs, err := n.Addrs(host)
	if errors.Is(err, ErrNoSuchPeer) && !isGlowName(host) {
		return n.resolveOther(ctx, host)
	}
	if err != nil {
		return netip.Addr{}, err
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("%s has no address this node routes (see conflicts in 'glow status')", host)
	}
	return addrs[0], nil
}
