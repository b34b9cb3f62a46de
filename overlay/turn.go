package overlay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"glow/link"
	"glow/relay"
)

// TURN. Where no direct path and no glow relay will do, a node can take an
// allocation on a TURN server someone already runs (--turn
// turn://user:pass@host:3478): its relayed address becomes one more of the
// node's published endpoints, so peers probe it like any other, and a path
// through it counts as direct (one hop through the TURN server). Datagrams
// that reach the allocation enter the receive path like UDP from the peer's
// own address, and the answers to that address go back through the
// allocation (Bind.DeliverTURN, path.turn). A TURN server only forwards from
// addresses it was told to permit, so the node permits the addresses of
// every peer it knows, again when records change.
//
// A glow node with a public address can run a TURN server for others
// (--turn-server ADDR with --turn-user USER:PASS).

type turnAlloc struct {
	c        *relay.TURNClient
	permited map[netip.Addr]bool
}

func (n *Node) startTURN() error {
	for _, u := range n.cfg.TURN {
		cfg, err := relay.ParseTURNURL(u)
		if err != nil {
			return err
		}
		n.wg.Add(1)
		go n.keepTURN(cfg)
	}
	if n.cfg.TURNServer == "" {
		return nil
	}
	pc, err := net.ListenPacket("udp4", n.cfg.TURNServer)
	if err != nil {
		return fmt.Errorf("TURN server on %s: %w", n.cfg.TURNServer, err)
	}
	n.atClose(func() { pc.Close() })
	pub := n.cfg.TURNPublicIP
	if !pub.IsValid() {
		for _, a := range n.cfg.HostAddrs() {
			if a.Is4() && (isPublic(a) || !pub.IsValid()) {
				pub = a
			}
		}
	}
	if !pub.IsValid() {
		return fmt.Errorf("TURN server: no IPv4 address to hand out; give --turn-public-ip")
	}
	srv, err := relay.ListenTURN(relay.TURNServerConfig{PacketConn: pc, PublicIP: pub, Users: n.cfg.TURNUsers, Logf: n.logf})
	if err != nil {
		return err
	}
	n.turnServer = srv
	n.atClose(func() { srv.Close() })
	n.logf("glow: TURN server on %v, relaying from %v", srv.Addr(), pub)
	return nil
}

// keepTURN holds an allocation on one TURN server, redialling with backoff.
func (n *Node) keepTURN(cfg relay.TURNClientConfig) {
	defer n.wg.Done()
	cfg.Logf = n.logf
	bo := link.Backoff{}
	for n.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(n.ctx, 15*time.Second)
		c, err := relay.DialTURN(ctx, cfg)
		cancel()
		if err != nil {
			n.logf("glow: TURN %s: %v", cfg.Server, err)
		} else {
			bo.Reset()
			n.runTURN(c)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(bo.Next()):
		}
	}
}

// runTURN publishes c's relayed address and reads from it until it fails.
func (n *Node) runTURN(c *relay.TURNClient) {
	a := &turnAlloc{c: c, permited: map[netip.Addr]bool{}}
	n.mu.Lock()
	n.lnk.turns = append(n.lnk.turns, a)
	n.mem.infoDirty = true
	n.dueLocked(time.Now())
	n.permitTURNLocked()
	n.mu.Unlock()
	n.logf("glow: TURN allocation %v on %v", c.RelayedAddr(), c.Server())
	stop := context.AfterFunc(n.ctx, func() { c.Close() })
	buf := make([]byte, 2048)
	for {
		sz, from, err := c.ReadFrom(buf)
		if err != nil {
			break
		}
		n.bind.DeliverTURN(append([]byte(nil), buf[:sz]...), from, c)
	}
	stop()
	c.Close()
	n.mu.Lock()
	n.lnk.turns = slices.DeleteFunc(n.lnk.turns, func(t *turnAlloc) bool { return t == a })
	n.mem.infoDirty = true
	n.dueLocked(time.Now())
	n.mu.Unlock()
}

// permitTURNLocked lets every known peer's addresses send to our
// allocations (in the background: a permission takes a round trip).
func (n *Node) permitTURNLocked() {
	if len(n.lnk.turns) == 0 {
		return
	}
	var ips []netip.Addr
	for _, p := range n.paths.peers {
		for ap := range p.cands {
			if ap.Addr().Is4() {
				ips = append(ips, ap.Addr())
			}
		}
		if info := n.mem.store.Info(p.cert.Node); info != nil {
			for _, ep := range info.Endpoints {
				if ep.Addr().Is4() {
					ips = append(ips, ep.Addr())
				}
			}
		}
	}
	for _, t := range n.lnk.turns {
		var fresh []netip.Addr
		for _, ip := range ips {
			if !t.permited[ip] {
				t.permited[ip] = true
				fresh = append(fresh, ip)
			}
		}
		if len(fresh) == 0 {
			continue
		}
		c := t.c
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := c.Permit(fresh...); err != nil {
				n.logf("glow: TURN permissions: %v", err)
			}
		}()
	}
}

// turnEndpointsLocked lists this node's TURN relayed addresses.
func (n *Node) turnEndpointsLocked() []netip.AddrPort {
	var out []netip.AddrPort
	for _, t := range n.lnk.turns {
		out = append(out, t.c.RelayedAddr())
	}
	return out
}
