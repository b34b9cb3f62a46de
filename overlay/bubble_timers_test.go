package overlay

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"glow/nat/natlab"
	"glow/overlay/member/membertest"
)

// TestBubblePathDeadIdle: three idle nodes, all direct; the a-b link is
// cut. a's heartbeats to b (every 10 s when idle) go unanswered, and 25 s
// after the first of them the direct path is dead and b is reached through
// c: between 25 and 35 s after the cut (plus a control tick, and the
// 250 ms poll that sees it), never sooner. The real control loops run, on
// the bubble's clock.
func TestBubblePathDeadIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bubbleNet(t, "a", "b", "c")
		a := net.nodes[0]
		bubbleWait(t, time.Minute, "direct paths between all three", net.allDirect)
		time.Sleep(time.Minute) // idle: no traffic since the set-up
		cut := time.Now()
		net.lk.set(net.ips[0], net.ips[1], false)
		lost := bubbleWait(t, time.Minute, "failover of a's path to b", func() bool {
			path, _ := routeOf(a, "b")
			return path != "direct"
		})
		if d := lost.Sub(cut); d < wantDeadIdle || d > wantDeadIdle+wantHeartbeatIdle+tickEvery+250*time.Millisecond {
			t.Fatalf("a's direct path to b lost %v after the cut, want within [25 s, 35.5 s]", d)
		}
		path, via := routeOf(a, "b")
		t.Logf("a -> b lost %v after the cut; now %s via %v", lost.Sub(cut), path, via)
		if path != "relay" || len(via) != 1 || via[0] != "c" {
			t.Fatalf("a -> b: %s via %v after the cut, want relay via c", path, via)
		}
	})
}

// TestBubbleIdleChatter: what an idle network of three nodes sends in ten
// minutes of the bubble's clock, against what its timers allow each node a
// minute: per peer 6 heartbeats and 6 pongs (every 10 s each way) and,
// past a quiet minute (quietAfter), 2 digests (every 30 s), and 2 beacons
// to its bootstrap peer: 28-30 a minute (48-60 before the quiet pace, with
// digests and beacons every 5 s).
func TestBubbleIdleChatter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bubbleNet(t, "a", "b", "c")
		bubbleWait(t, time.Minute, "direct paths between all three", net.allDirect)
		time.Sleep(2 * time.Minute)
		before := net.sent()
		time.Sleep(10 * time.Minute)
		after := net.sent()
		peers := uint64(len(net.nodes) - 1)
		limit := 10*(peers*(6+6+2)+2) + 5 // quiet pace: 2 digests a peer, 2 beacons; a few at the window's edges
		for i, n := range net.nodes {
			sent := after[i] - before[i]
			t.Logf("%s sent %d datagrams in 10 idle minutes (%.1f a minute)", n.Cert().Name, sent, float64(sent)/10)
			if sent > limit {
				t.Errorf("%s sent %d datagrams in 10 idle minutes, more than its timers allow (%d)", n.Cert().Name, sent, limit)
			}
		}
	})
}

// TestBubblePathDeadBusy: the a-b link is cut while the three nodes are
// idle (an idle peer keeps no standby: no second path is proven), then a
// sends b a packet every 100 ms. a's standby pings reach b through c, but
// b's pongs go back over the dead link: no standby is proven, a's
// heartbeats die after deadActive and a fails over to c; b follows on a's
// relayed heartbeat. The path is lost within 3 s of the cut, and b gets
// a's packets, relayed through c.
func TestBubblePathDeadBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bubbleNet(t, "a", "b", "c")
		a := net.nodes[0]
		bubbleWait(t, time.Minute, "direct paths between all three", net.allDirect)
		time.Sleep(time.Minute) // idle: no traffic since the set-up
		cut := time.Now()
		net.lk.set(net.ips[0], net.ips[1], false)
		stop := make(chan struct{})
		defer close(stop)
		arrivals := net.stream(0, 1, 100*time.Millisecond, stop)
		if p, _ := peerStatus(a, "b"); len(p.Standby) != 0 || p.Path != "direct" {
			t.Fatalf("a -> b at the cut: %s, standby %v; want direct, none", p.Path, p.Standby)
		}
		lost := bubbleWait(t, time.Minute, "failover of a's path to b", func() bool {
			path, _ := routeOf(a, "b")
			return path != "direct"
		})
		if d := lost.Sub(cut); d > 3*time.Second {
			t.Fatalf("a's direct path to b lost %v after the cut, want within 3 s", d)
		}
		back := bubbleWait(t, time.Minute, "a's packets at b after the cut", func() bool { return len(arrivals()) > 0 })
		path, via := routeOf(a, "b")
		t.Logf("a -> b lost %v after the cut, packets after %v; now %s via %v", lost.Sub(cut), back.Sub(cut), path, via)
		if path != "relay" || len(via) != 1 || via[0] != "c" {
			t.Fatalf("a -> b: %s via %v after the cut, want relay via c", path, via)
		}
		if d := back.Sub(cut); d > 3*time.Second {
			t.Fatalf("b got a's packets %v after the cut, want within 3 s", d)
		}
	})
}

// TestBubbleFailoverProven: a sends b a packet every 100 ms over their
// direct path, and keeps a standby route to b through c, proven by its
// pings (a's status shows it). The a-b link is cut: a's sends into the
// silence make it probe the direct path at once, and with the standby
// proven the path is dead after deadFast rather than deadActive: lost
// within 1 s of the cut (not before deadFastMin), and b gets a's packets
// again, relayed through c.
func TestBubbleFailoverProven(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bubbleNet(t, "a", "b", "c")
		a := net.nodes[0]
		bubbleWait(t, time.Minute, "direct paths between all three", net.allDirect)
		stop := make(chan struct{})
		defer close(stop)
		arrivals := net.stream(0, 1, 100*time.Millisecond, stop)
		bubbleWait(t, time.Minute, "a's standby route to b proven", func() bool {
			p, _ := peerStatus(a, "b")
			return p.Path == "direct" && slices.Equal(p.Standby, []string{"c"})
		})
		bubbleWait(t, time.Minute, "a's packets at b", func() bool { return len(arrivals()) >= 10 })
		cut := time.Now()
		net.lk.set(net.ips[0], net.ips[1], false)
		lost := bubbleWait(t, time.Minute, "failover of a's path to b", func() bool {
			path, _ := routeOf(a, "b")
			return path != "direct"
		})
		if d := lost.Sub(cut); d < deadFastMin || d >= wantDeadActive {
			t.Fatalf("a's direct path to b lost %v after the cut, want within [200 ms, 1 s)", d)
		}
		back := bubbleWait(t, time.Minute, "a's packets at b after the cut", func() bool {
			got := arrivals()
			return got[len(got)-1].After(cut)
		})
		path, via := routeOf(a, "b")
		t.Logf("a -> b lost %v after the cut, packets again after %v; now %s via %v", lost.Sub(cut), back.Sub(cut), path, via)
		if path != "relay" || len(via) != 1 || via[0] != "c" {
			t.Fatalf("a -> b: %s via %v after the cut, want relay via c", path, via)
		}
		// More packets arrive, relayed: traffic continues, not one stray.
		n := len(arrivals())
		bubbleWait(t, time.Minute, "more of a's packets at b, relayed", func() bool { return len(arrivals()) >= n+10 })
		if path, _ := routeOf(a, "b"); path != "relay" {
			t.Fatalf("a -> b: %s while the link is cut, want relay", path)
		}
	})
}

// TestBubbleProbingStops: a and b are behind NATs no hole punch crosses
// (address-and-port-dependent mapping and filtering) and reach each other
// through c. a probes b's addresses while b is new, and then stops: in ten
// idle minutes after the first two, a sends none of b's addresses a
// single datagram (probing every peer all the time costs N² packets).
func TestBubbleProbingStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		in := natlab.NewInternet()
		u := membertest.NewUser(t, "alice")
		used := map[netip.Addr]bool{}
		pubC := netip.MustParseAddr("198.51.100.3")
		natIP := [2]netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2")}
		lanIP := [2]netip.Addr{netip.MustParseAddr("192.168.1.2"), netip.MustParseAddr("192.168.2.2")}
		lk := &links{allowed: map[[2]netip.Addr]bool{}}
		all := []netip.Addr{pubC, natIP[0], natIP[1], lanIP[0], lanIP[1]}
		for _, x := range all {
			for _, y := range all {
				lk.set(x, y, true)
			}
		}
		var mu sync.Mutex
		toB := map[time.Duration]int{} // datagrams a sent to b's addresses, by minute since start
		start := time.Now()
		lk.lose = func(from, to netip.Addr, _ []byte) bool {
			if from == lanIP[0] && (to == natIP[1] || to == lanIP[1]) {
				mu.Lock()
				toB[time.Since(start).Truncate(time.Minute)]++
				mu.Unlock()
			}
			return false
		}
		mem := func(c *Config) { c.Userspace, c.NoDNS, c.tunDevice = false, true, tuntest.NewChannelTUN().TUN() }
		cDir := provision(t, u, "c", used, true)
		labNode(t, in.NewHost(pubC), lk, "c", func(cfg *Config) { cfg.StateDir = cDir; mem(cfg) })
		var nodes []*Node
		defer keepWGPeers(t, &nodes)
		for i, name := range []string{"a", "b"} {
			gw := in.NewNAT(natlab.NATConfig{Public: natIP[i], Mapping: natlab.AddressAndPortDependent,
				Filtering: natlab.AddressAndPortDependentFiltering, Timeout: time.Minute})
			dir := provision(t, u, name, used, false)
			nodes = append(nodes, labNode(t, gw.NewHost(lanIP[i]), lk, name, func(cfg *Config) {
				cfg.StateDir, cfg.Peers = dir, []string{netip.AddrPortFrom(pubC, DefaultPort).String()}
				mem(cfg)
			}))
		}
		a := nodes[0]
		bubbleWait(t, time.Minute, "a to reach b through c", func() bool {
			path, via := routeOf(a, "b")
			return path == "relay" && slices.Equal(via, []string{"c"})
		})
		time.Sleep(12 * time.Minute)
		mu.Lock()
		defer mu.Unlock()
		t.Logf("datagrams from a to b's addresses, by minute: %v", toB)
		if toB[0] == 0 {
			t.Fatal("a never probed b: the test sees no probes")
		}
		for m := 2 * time.Minute; m < 12*time.Minute; m += time.Minute {
			if toB[m] != 0 {
				t.Errorf("a sent b's addresses %d datagrams in minute %v, while both are idle", toB[m], m)
			}
		}
		if path, via := routeOf(a, "b"); path != "relay" {
			t.Errorf("a -> b: %s via %v after 12 idle minutes, want relay", path, via)
		}
	})
}
