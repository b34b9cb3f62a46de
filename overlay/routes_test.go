package overlay

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/nat/natlab"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// links is a set of allowed host pairs; packets between other hosts are
// dropped, so a test draws any topology over the lab's Internet.
type links struct {
	mu      sync.Mutex
	allowed map[[2]netip.Addr]bool
	// lose, if set, drops the datagrams from a to b it returns true for.
	lose func(a, b netip.Addr, pkt []byte) bool
}

func (l *links) loses(a, b netip.Addr, pkt []byte) bool {
	l.mu.Lock()
	f := l.lose
	l.mu.Unlock()
	return f != nil && f(a, b, pkt)
}

func (l *links) set(a, b netip.Addr, up bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.allowed[[2]netip.Addr{a, b}] = up
	l.allowed[[2]netip.Addr{b, a}] = up
}

func (l *links) ok(a, b netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.allowed[[2]netip.Addr{a, b}]
}

// linkConn drops datagrams to and from hosts its links do not allow.
type linkConn struct {
	net.PacketConn
	self  netip.Addr
	links *links
}

func (c *linkConn) WriteTo(b []byte, to net.Addr) (int, error) {
	if ua, ok := to.(*net.UDPAddr); ok && !c.links.ok(c.self, ua.AddrPort().Addr().Unmap()) {
		return len(b), nil
	} else if ok && c.links.loses(c.self, ua.AddrPort().Addr().Unmap(), b) {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, to)
}

func (c *linkConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, from, err
		}
		if ua, ok := from.(*net.UDPAddr); ok && !c.links.ok(ua.AddrPort().Addr().Unmap(), c.self) {
			continue
		}
		return n, from, err
	}
}

// provision writes a node's keys and certificate into a new state
// directory, as an admission would, so a test can start nodes that could
// never reach the admin node directly.
func provision(t testing.TB, u *member.UserKey, name string, used map[netip.Addr]bool, admin bool) string {
	t.Helper()
	return provisionFor(t, u, name, used, admin, time.Hour)
}

// provisionFor is provision with a certificate valid for life from now.
func provisionFor(t testing.TB, u *member.UserKey, name string, used map[netip.Addr]bool, admin bool, life time.Duration) string {
	t.Helper()
	st := member.State{Dir: t.TempDir()}
	k, err := member.NewNodeKeys()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveNodeKeys(k); err != nil {
		t.Fatal(err)
	}
	v4, _ := member.AllocIPv4(k.ID(), used)
	used[v4] = true
	now := time.Now()
	c := &member.Cert{Node: k.ID(), Name: name, WG: k.WGPublic(), Ctl: k.CtlPublic(), IPv4: v4,
		IPv6: member.NodeAddr6(u.Public(), k.ID()), Admin: admin, NotBefore: now, NotAfter: now.Add(life)}
	member.SignCert(u, c)
	if err := st.WriteFile("cert", c.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	if admin {
		if err := st.SaveUserKey(u); err != nil {
			t.Fatal(err)
		}
	}
	return st.Dir
}

func routeOf(n *Node, name string) (string, []string) {
	p, _ := peerStatus(n, name)
	return p.Path, p.Via
}

// lineNet starts nodes on a line of natlab hosts, each linked only to its
// neighbours (the first is the admin). Every node but the first learns the
// others through relays along the line.
func lineNet(t *testing.T, names []string) ([]*Node, *links, []netip.Addr) {
	in := natlab.NewInternet()
	lk := &links{allowed: map[[2]netip.Addr]bool{}}
	u := membertest.NewUser(t, "alice")
	used := map[netip.Addr]bool{}
	var ips []netip.Addr
	var nodes []*Node
	for i := range names {
		ips = append(ips, netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}))
		if i > 0 {
			lk.set(ips[i-1], ips[i], true)
		}
	}
	for i, name := range names {
		h := in.NewHost(ips[i])
		dir := provision(t, u, name, used, i == 0)
		var peers []string
		if i > 0 {
			peers = append(peers, netip.AddrPortFrom(ips[i-1], DefaultPort).String())
		}
		nodes = append(nodes, labNode(t, h, lk, name, func(c *Config) {
			c.StateDir, c.Peers = dir, peers
		}))
	}
	return nodes, lk, ips
}

// TestLineMultihop: A-B-C-D-E, each linked only to its neighbours. A
// reaches E over four hops; with a shortcut B-D the route takes it; when the
// shortcut is cut, traffic moves back to the long way within seconds.
func TestLineMultihop(t *testing.T) {
	nodes, lk, ips := lineNet(t, []string{"a", "b", "c", "d", "e"})
	a, e := nodes[0], nodes[4]
	waitFor(t, 30*time.Second, "a to route to e over b,c,d", func() bool {
		path, via := routeOf(a, "e")
		return path == "relay" && len(via) == 3
	})
	path, via := routeOf(a, "e")
	t.Logf("a -> e: %s via %v", path, via)
	if via[0] != "b" || via[1] != "c" || via[2] != "d" {
		t.Fatalf("route %v, want [b c d]", via)
	}
	tcpEcho(t, a, e, 7100)
	tcpEcho(t, e, a, 7101)

	// A shortcut B-D: the route gets shorter.
	lk.set(ips[1], ips[3], true)
	nodes[1].mu.Lock()
	if p := nodes[1].paths.peers[nodes[3].id]; p != nil {
		p.lastDirectProbe = time.Time{}
	}
	nodes[1].mu.Unlock()
	waitFor(t, 30*time.Second, "a to route to e over b,d", func() bool {
		_, via := routeOf(a, "e")
		return len(via) == 2 && via[0] == "b" && via[1] == "d"
	})
	tcpEcho(t, a, e, 7102)

	// Cut the shortcut while traffic flows: back to b,c,d within seconds.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // keep the route busy, so its links are watched closely
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				a.Ping(t.Context(), "e")
			}
		}
	}()
	cut := time.Now()
	lk.set(ips[1], ips[3], false)
	waitFor(t, 20*time.Second, "a to route around the cut", func() bool {
		_, via := routeOf(a, "e")
		return len(via) == 3
	})
	rerouted := time.Since(cut)
	close(stop)
	wg.Wait()
	t.Logf("METRIC reroute_after_cut %v", rerouted.Round(10*time.Millisecond))
	tcpEcho(t, a, e, 7103)
}

// A link's cost does not flip while its RTT hovers around a step.
func TestStickyCost(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	cases := []struct {
		prev uint16
		rtt  time.Duration
		want uint16
	}{
		{0, ms(1.9), 10},    // first publication: the plain step
		{10, ms(2.5), 10},   // just over 2 ms: stays
		{10, ms(3.5), 20},   // clearly over: moves up
		{20, ms(1.8), 20},   // just under 2 ms: stays
		{20, ms(1.0), 10},   // clearly under: moves down
		{50, ms(12), 50},    // within 1.5x of the 10 ms step
		{50, ms(400), 300},  // far away: follows the RTT
		{300, ms(150), 300}, // 150 ms * 1.5 is past 200 ms
		{300, ms(100), 100},
	}
	for _, c := range cases {
		if got := stickyCost(c.prev, c.rtt); got != c.want {
			t.Errorf("stickyCost(%d, %v) = %d, want %d", c.prev, c.rtt, got, c.want)
		}
	}
}

// One heartbeat delayed by a busy host does not make a link dearer; a rise
// that lasts len(rtts) samples does, and a fall shows at once.
func TestCostRTT(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	p := &peer{}
	for _, r := range []time.Duration{ms(0.4), ms(0.5), ms(0.4)} {
		p.noteRTT(r)
	}
	p.noteRTT(ms(6)) // one late pong
	if c := linkCost(p.costRTT()); c != 10 {
		t.Errorf("after one 6 ms sample among 0.4-0.5 ms ones: cost %d, want 10", c)
	}
	p.noteRTT(ms(7))
	p.noteRTT(ms(6))
	if c := linkCost(p.costRTT()); c != 20 {
		t.Errorf("after three samples of 6-7 ms: cost %d, want 20", c)
	}
	p.noteRTT(ms(0.5))
	if c := linkCost(p.costRTT()); c != 10 {
		t.Errorf("after a 0.5 ms sample: cost %d, want 10 (a fall shows at once)", c)
	}
}

// Of two routes of equal cost, the one of fewer relay hops; which of the
// nodes has the lower id must not matter.
func TestShortestFewerHops(t *testing.T) {
	for _, ids := range [][4]byte{{1, 2, 3, 4}, {4, 3, 2, 1}, {1, 4, 2, 3}, {3, 1, 4, 2}} {
		var src, mid, hub, dst wire.NodeID
		src[0], mid[0], hub[0], dst[0] = ids[0], ids[1], ids[2], ids[3]
		g := routeGraph{}
		link := func(a, b wire.NodeID, c uint16) {
			for _, e := range [][2]wire.NodeID{{a, b}, {b, a}} {
				if g[e[0]] == nil {
					g[e[0]] = map[wire.NodeID]uint16{}
				}
				g[e[0]][e[1]] = c
			}
		}
		// src-hub costs 20 (a slower link); src-mid-hub costs 10+10.
		link(src, hub, 20)
		link(src, mid, 10)
		link(mid, hub, 10)
		link(hub, dst, 10)
		prev := g.shortest(src, wire.NodeID{})
		if r := routeTo(prev, src, dst); len(r) != 2 || r[0] != hub {
			t.Errorf("ids %v: route to dst %v, want through hub alone (2 hops, not 3)", ids, r)
		}
	}
}
