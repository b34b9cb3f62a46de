package overlay

import (
	"context"
	"errors"
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
// every peer it knows, again when records change, and no others: at most
// relay.MaxPermits, our own user's first (permitTURNLocked).
//
// A glow node with a public address can run a TURN server for others
// (--turn-server ADDR with --turn-user USER:PASS).

type turnAlloc struct {
	c *relay.TURNClient
	// last is the set of peer IPs last handed to applyTURNPermits (sorted;
	// under Node.mu); want holds the newest set it has not taken yet.
	last []netip.Addr
	want chan []netip.Addr
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
	a := &turnAlloc{c: c, want: make(chan []netip.Addr, 1)}
	done := make(chan struct{})
	defer close(done)
	n.wg.Add(1)
	go n.applyTURNPermits(a, done)
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

// permitTURNLocked has our allocations permit the IPv4 addresses of every
// known peer (its candidates and published endpoints), and only those: a
// peer's addresses that went are left to lapse at the server. Our own
// user's peers come first, so when more than relay.MaxPermits are known
// (a friend's nodes may publish any endpoints) the bound cuts friends'
// addresses, never ours. The TURN client does the round trips in
// applyTURNPermits.
func (n *Node) permitTURNLocked() {
	if len(n.lnk.turns) == 0 {
		return
	}
	var own, friends []netip.Addr
	for _, p := range n.paths.peers {
		dst := &friends
		if n.mem.store.Own(p.cert.User) {
			dst = &own
		}
		for ap := range p.cands {
			if ap.Addr().Is4() {
				*dst = append(*dst, ap.Addr())
			}
		}
		if info := n.mem.store.Info(p.cert.Node); info != nil {
			for _, ep := range info.Endpoints {
				if ep.Addr().Is4() {
					*dst = append(*dst, ep.Addr())
				}
			}
		}
	}
	seen := map[netip.Addr]bool{}
	var set []netip.Addr
	for _, ip := range append(own, friends...) {
		if !seen[ip] && len(set) < relay.MaxPermits {
			seen[ip] = true
			set = append(set, ip)
		}
	}
	sorted := slices.Clone(set)
	slices.SortFunc(sorted, netip.Addr.Compare)
	for _, t := range n.lnk.turns {
		if slices.Equal(t.last, sorted) {
			continue
		}
		t.last = sorted
		select { // only the newest set matters; this is its only sender
		case <-t.want:
		default:
		}
		t.want <- set
	}
}

// applyTURNPermits hands a's TURN client the sets permitTURNLocked wants,
// off Node.mu (a permission takes a round trip), until done.
func (n *Node) applyTURNPermits(a *turnAlloc, done <-chan struct{}) {
	defer n.wg.Done()
	for {
		select {
		case <-done:
			return
		case set := <-a.want:
			if err := a.c.SetPermits(set); err != nil && !errors.Is(err, net.ErrClosed) {
				n.logf("glow: TURN permissions: %v", err)
			}
		}
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
