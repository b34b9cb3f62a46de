package overlay

// DNS while an exit node is in use, as Tailscale does it: queries for
// names that are not glow's go to the exit node's resolver, through the
// tunnel, and leave from the exit node (to its own upstream resolvers),
// never from the local network.
//
//   - A node that offers itself as exit node (--advertise-exit-node) also
//     serves glow's resolver on its overlay addresses, port 53, for the
//     nodes that use it (the resolver answers overlay and loopback clients
//     only; policy decides which nodes get through, like any other
//     packet). It stops when the offer is taken back.
//   - A node using an exit node forwards such names to that node's
//     resolver (dns.Server.SetExitUpstreams) instead of its own upstreams,
//     from the moment the exit node is chosen. While the exit node is
//     unreachable the queries time out and the client gets SERVFAIL: they
//     are never sent to the local upstreams (fail closed, like the rest of
//     its traffic). A userspace node's proxy asks the exit node's resolver
//     itself (userdial.go).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
)

// exitDNSLocked points the resolver's forwarding at the exit node chosen,
// or back at the system's upstreams.
func (n *Node) exitDNSLocked() {
	srv := n.dnsSrv.Load()
	if srv == nil {
		return
	}
	if n.rt.prefs.ExitNode == "" {
		srv.SetExitUpstreams(false, nil)
		return
	}
	var ups []netip.AddrPort
	if p := n.exitPeerLocked(); p != nil && takesDefault(p) {
		for _, a := range p.routed {
			ups = append(ups, netip.AddrPortFrom(a, 53))
		}
	}
	srv.SetExitUpstreams(true, ups)
}

// exitDNSServer is the resolver served on the overlay addresses while the
// node offers itself as exit node.
type exitDNSServer struct {
	mu   sync.Mutex
	stop context.CancelFunc // nil: not serving
	wg   sync.WaitGroup
}

// serveExitDNS starts (on) or stops serving the resolver on the node's
// overlay addresses. It runs off n.mu (the route applier).
func (n *Node) serveExitDNS(on bool) error {
	s := &n.exitDNS
	s.mu.Lock()
	defer s.mu.Unlock()
	if !on {
		if s.stop != nil {
			s.stop()
			s.wg.Wait()
			s.stop = nil
		}
		return nil
	}
	if s.stop != nil {
		return nil
	}
	srv := n.dnsSrv.Load()
	if srv == nil {
		if n.cfg.Userspace {
			return nil // no resolver to serve (and no exit node to offer)
		}
		return errors.New("exit node DNS: the resolver is not running yet")
	}
	ctx, stop := context.WithCancel(n.ctx)
	var errs []error
	served := 0
	for _, a := range []netip.Addr{n.mem.cert.IPv4, n.mem.cert.IPv6} {
		ap := netip.AddrPortFrom(a, 53).String()
		pc, err := net.ListenPacket("udp", ap)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ln, err := net.Listen("tcp", ap)
		if err != nil {
			pc.Close()
			errs = append(errs, err)
			continue
		}
		served++
		s.wg.Go(func() { srv.ServeUDP(ctx, pc) })
		s.wg.Go(func() { srv.ServeTCP(ctx, ln) })
	}
	if served == 0 {
		stop()
		return fmt.Errorf("exit node DNS: %w", errors.Join(errs...))
	}
	if len(errs) > 0 {
		n.logf("glow: exit node DNS: %v", errors.Join(errs...))
	}
	n.logf("glow: exit node: serving DNS on the overlay addresses for the nodes that use it")
	s.stop = stop
	return nil
}

// takesDefault reports whether a default route is routed to p (it is the
// exit node chosen and offers one).
func takesDefault(p *peer) bool {
	return slices.ContainsFunc(p.subnets, func(r netip.Prefix) bool { return r.Bits() == 0 })
}
