package overlay

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/link"
	"glow/nat/natlab"
	"glow/overlay/member/membertest"
)

// TestChoosePath: direct > stream > relay > none, whatever else is set.
func TestChoosePath(t *testing.T) {
	addr := netip.MustParseAddrPort("192.0.2.7:47470")
	s := &link.Stream{}
	q := make(chan []byte)
	hop, peer := wire.NodeID{1}, wire.NodeID{2}
	route := []wire.NodeID{hop, peer}
	for _, tc := range []struct {
		name string
		in   pathInputs
		want pathChoice
	}{
		{"nothing", pathInputs{}, pathChoice{kind: pathNone}},
		{"direct", pathInputs{direct: addr}, pathChoice{kind: pathDirect, direct: addr}},
		{"stream", pathInputs{stream: s, streamQ: q}, pathChoice{kind: pathStream, stream: s, streamQ: q}},
		{"relay", pathInputs{route: route}, pathChoice{kind: pathRelay, via: hop}},
		{"relay, three hops", pathInputs{route: []wire.NodeID{hop, {3}, peer}}, pathChoice{kind: pathRelay, via: hop}},
		{"route of the peer alone", pathInputs{route: []wire.NodeID{peer}}, pathChoice{kind: pathNone}},
		{"empty route", pathInputs{route: []wire.NodeID{}}, pathChoice{kind: pathNone}},
		{"direct over stream", pathInputs{direct: addr, stream: s, streamQ: q}, pathChoice{kind: pathDirect, direct: addr}},
		{"direct over relay", pathInputs{direct: addr, route: route}, pathChoice{kind: pathDirect, direct: addr}},
		{"stream over relay", pathInputs{stream: s, streamQ: q, route: route}, pathChoice{kind: pathStream, stream: s, streamQ: q}},
		{"direct over all", pathInputs{direct: addr, stream: s, streamQ: q, route: route}, pathChoice{kind: pathDirect, direct: addr}},
		{"dead direct (cleared), stream", pathInputs{direct: netip.AddrPort{}, stream: s, streamQ: q}, pathChoice{kind: pathStream, stream: s, streamQ: q}},
		{"dead direct (cleared), relay", pathInputs{direct: netip.AddrPort{}, route: route}, pathChoice{kind: pathRelay, via: hop}},
	} {
		got := choosePath(tc.in)
		if got != tc.want {
			t.Errorf("%s: choosePath = %+v, want %+v", tc.name, got, tc.want)
		}
		if n := got.neighbour(); n != (tc.want.kind == pathDirect || tc.want.kind == pathStream) {
			t.Errorf("%s: neighbour = %v", tc.name, n)
		}
	}
	for k, want := range map[pathKind]string{pathNone: "none", pathRelay: "relay", pathStream: "direct", pathDirect: "direct"} {
		if k.String() != want {
			t.Errorf("pathKind(%d) = %q, want %q", k, k.String(), want)
		}
	}
}

// TestRelayFollowsHopPath: a reaches b over UDP and over a TCP link, and c
// only through b. When a's UDP path to b dies, b stays a's neighbour (over
// the link), c's route through b is unchanged, and c's relay path must move
// onto the link with b's: a relay path copies its next hop's path.
func TestRelayFollowsHopPath(t *testing.T) {
	in := natlab.NewInternet()
	lk := &links{allowed: map[[2]netip.Addr]bool{}}
	u := membertest.NewUser(t, "alice")
	used := map[netip.Addr]bool{}
	ips := []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.3")}
	lk.set(ips[0], ips[1], true)
	lk.set(ips[1], ips[2], true)
	var nodes []*Node
	for i, name := range []string{"a", "b", "c"} {
		h := in.NewHost(ips[i])
		dir := provision(t, u, name, used, i == 0)
		var peers []string
		if i > 0 {
			peers = []string{netip.AddrPortFrom(ips[1], DefaultPort).String()}
			if i == 1 {
				peers = []string{netip.AddrPortFrom(ips[0], DefaultPort).String()}
			}
		}
		nodes = append(nodes, labNode(t, h, lk, name, func(c *Config) {
			c.StateDir, c.Peers = dir, peers
			if name == "b" {
				c.LinkListen = "127.0.0.1:0"
			}
		}))
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	url := "tcp://" + b.LinkAddr()
	if err := a.AddLink(url); err != nil {
		t.Fatal(err)
	}
	udpB := netip.AddrPortFrom(ips[1], DefaultPort).String()
	waitFor(t, 30*time.Second, "a to reach b over UDP with the link up, and c through b", func() bool {
		pb, _ := peerStatus(a, "b")
		pc, _ := peerStatus(a, "c")
		ls := a.Links()
		return pb.Path == "direct" && pb.Endpoint == udpB && len(ls) == 1 && ls[0].Up &&
			pc.Path == "relay" && len(pc.Via) == 1 && pc.Via[0] == "b"
	})
	waitFor(t, 30*time.Second, "b to hold a's link", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		p := b.paths.peers[a.id]
		return p != nil && p.stream != nil && p.active.IsValid()
	})
	if _, err := a.Ping(t.Context(), "c"); err != nil {
		t.Fatalf("ping c through b over UDP: %v", err)
	}

	// Cut a-b's UDP; both ends lose their direct paths (as their
	// heartbeats would find) and carry on over the link.
	lk.set(ips[0], ips[1], false)
	for _, x := range [][2]*Node{{a, b}, {b, a}} {
		n, peer := x[0], x[1]
		n.mu.Lock()
		n.lostPathLocked(n.paths.peers[peer.id], time.Now())
		n.mu.Unlock()
	}
	pb, _ := peerStatus(a, "b")
	pc, _ := peerStatus(a, "c")
	if pb.Path != "direct" || pb.Endpoint != url || pc.Path != "relay" || len(pc.Via) != 1 || pc.Via[0] != "b" {
		t.Fatalf("after the cut: b %s %s, c %s via %v; want b over %s and c through b", pb.Path, pb.Endpoint, pc.Path, pc.Via, url)
	}
	hop := a.bind.Peer(b.id).path.Load()
	relayed := a.bind.Peer(c.id).path.Load()
	answered := 0
	const pings = 3
	for range pings {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		if _, err := a.Ping(ctx, "c"); err == nil {
			answered++
		}
		cancel()
	}
	t.Logf("pings to c through b after the cut: %d/%d answered; c's path over the link: %v", answered, pings, relayed != nil && relayed.stream != nil)
	if relayed == nil || !relayed.relay || relayed.stream != hop.stream || relayed.addr != hop.addr {
		t.Errorf("c's path does not follow b's (over the link: %v): %s", hop.stream != nil, describePath(relayed))
	}
	if answered != pings {
		t.Errorf("%d/%d pings to c answered", answered, pings)
	}
}

func describePath(p *path) string {
	switch {
	case p == nil:
		return "none"
	case p.relay && p.stream != nil:
		return "relay over a stream link"
	case p.relay:
		return "relay to " + p.addr.String()
	case p.stream != nil:
		return "stream link"
	}
	return "direct to " + p.addr.String()
}
