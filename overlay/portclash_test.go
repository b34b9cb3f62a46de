package overlay

import (
	"context"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/nat/natlab"
)

// lanBeacon hands from's current beacon to to as if it came on the LAN
// discovery socket from from's host.
func lanBeacon(from, to *Node, fromHost *natlab.Host) {
	from.mu.Lock()
	b := from.beaconLocked()
	from.mu.Unlock()
	to.mu.Lock()
	to.handleBeaconLocked(inbound{lan: true, kind: wire.KindBeacon, buf: b, from: netip.AddrPortFrom(fromHost.Addr(), 47471)}, time.Now(), map[netip.AddrPort]time.Time{})
	to.mu.Unlock()
}

// TestPortClashMoves (issue 14): two nodes behind one NAT, both on the
// default port. Before the fix both stayed on 47470 (a LAN neighbour's
// beacon on our port changed nothing); now the newer member moves to a
// port the OS picks, saves it, keeps it across a restart, and stays
// reachable; the older one keeps its port, and a pinned node (--port)
// never moves. netcheck says what happened on each.
func TestPortClashMoves(t *testing.T) {
	in := natlab.NewInternet()
	vps := in.NewHost(netip.MustParseAddr("198.51.100.10"))
	gw := in.NewNAT(natlab.NATConfig{Public: netip.MustParseAddr("203.0.113.1"), Mapping: natlab.EndpointIndependent, Filtering: natlab.AddressAndPortDependentFiltering, Timeout: time.Minute})
	hA, hB, hC := gw.NewHost(netip.MustParseAddr("192.168.1.2")), gw.NewHost(netip.MustParseAddr("192.168.1.3")), gw.NewHost(netip.MustParseAddr("192.168.1.4"))
	v := labNode(t, vps, nil, "vps", func(c *Config) { c.UserName = "alice" })
	auto := func(c *Config) { c.Port = 0 } // no --port
	join := func(h *natlab.Host, name string, mods ...func(*Config)) *Node {
		t.Helper()
		code, err := v.Invite(time.Minute, 1)
		if err != nil {
			t.Fatal(err)
		}
		return labNode(t, h, nil, name, func(c *Config) {
			c.JoinCode = code
			for _, m := range mods {
				m(c)
			}
		})
	}
	a := join(hA, "a", auto)
	time.Sleep(10 * time.Millisecond) // b's certificate is newer
	bDir := t.TempDir()
	b := join(hB, "b", auto, func(c *Config) { c.StateDir = bDir })
	c := join(hC, "c") // --port 47470
	if a.Port() != DefaultPort || b.Port() != DefaultPort || c.Port() != DefaultPort {
		t.Fatalf("ports before: a %d b %d c %d, want %d", a.Port(), b.Port(), c.Port(), DefaultPort)
	}

	for _, n := range []*Node{a, b, c} {
		waitFor(t, 20*time.Second, n.cfg.NodeName+" to learn it is behind a NAT", func() bool {
			n.mu.Lock()
			defer n.mu.Unlock()
			return n.behindNATLocked(time.Now())
		})
	}
	lanBeacon(b, a, hB) // a is older: it keeps the port
	lanBeacon(a, b, hA) // b is newer: it moves
	lanBeacon(a, c, hA) // c is pinned
	waitFor(t, 10*time.Second, "b to move", func() bool { return b.Port() != DefaultPort })
	moved := b.Port()
	if a.Port() != DefaultPort || c.Port() != DefaultPort {
		t.Errorf("a on %d, c on %d: want both on %d", a.Port(), c.Port(), DefaultPort)
	}
	t.Logf("b moved from %d to %d", DefaultPort, moved)
	if data, err := os.ReadFile(bDir + "/port"); err != nil || strings.TrimSpace(string(data)) != itoa(moved) {
		t.Errorf("b's state file port: %q, %v; want %d", data, err, moved)
	}
	for _, x := range []struct {
		n    *Node
		want string
	}{{a, "kept UDP port 47470: b.alice moves"}, {b, "moved from UDP port 47470 to " + itoa(moved)}, {c, "kept UDP port 47470: pinned by --port"}} {
		x.n.mu.Lock()
		got := x.n.portClashLocked()
		x.n.mu.Unlock()
		t.Logf("%s netcheck: %s", x.n.mem.cert.Name, got)
		if !strings.Contains(got, x.want) {
			t.Errorf("%s: netcheck port clash %q, want it to say %q", x.n.mem.cert.Name, got, x.want)
		}
	}
	// b is reachable from its new port: the VPS pings it over a direct
	// path (natlab's NAT does not keep port numbers), a over the LAN at
	// b's new port.
	for _, x := range []struct {
		n       *Node
		viaPort string
	}{{v, ""}, {a, ":" + itoa(moved)}} {
		// The VPS had a direct path to b's old mapping: it roams to the
		// new one when that path dies (idle: 25 s after the first
		// unanswered heartbeat), not at b's first ping from the new port.
		waitFor(t, 60*time.Second, x.n.mem.cert.Name+" to reach b after its move", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			r, err := x.n.Ping(ctx, "b")
			return err == nil && r.Path == "direct" && strings.HasSuffix(r.Endpoint, x.viaPort)
		})
	}

	// A restart keeps the port it moved to.
	b.Close()
	b2 := labNode(t, hB, nil, "b", func(c *Config) { c.StateDir, c.Port = bDir, 0 })
	if b2.Port() != moved {
		t.Errorf("b after a restart on %d, want %d", b2.Port(), moved)
	}
}

// TestPortClashNoNAT: two nodes on one LAN with no NAT between them and
// their peers keep their ports (a move gains nothing there and costs
// re-punching: the bench's two-relay line carried its first ping after
// 27 s instead of 6 while every node moved).
func TestPortClashNoNAT(t *testing.T) {
	in := natlab.NewInternet()
	vps := in.NewHost(netip.MustParseAddr("198.51.100.10"))
	h1, h2 := in.NewHost(netip.MustParseAddr("198.51.100.21")), in.NewHost(netip.MustParseAddr("198.51.100.22"))
	v := labNode(t, vps, nil, "vps", func(c *Config) { c.UserName = "alice" })
	var nodes []*Node
	for i, h := range []*natlab.Host{h1, h2} {
		code, err := v.Invite(time.Minute, 1)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, labNode(t, h, nil, "n"+itoa(uint16(i+1)), func(c *Config) { c.JoinCode, c.Port = code, 0 }))
	}
	n1, n2 := nodes[0], nodes[1]
	waitFor(t, 20*time.Second, "n2 to be seen by the VPS", func() bool {
		n2.mu.Lock()
		defer n2.mu.Unlock()
		for _, p := range n2.paths.peers {
			if p.seenUs.IsValid() {
				return true
			}
		}
		return false
	})
	lanBeacon(n1, n2, h1) // n2 is newer: behind a NAT it would move
	n2.mu.Lock()
	moving, clash, behind := n2.ports.portMoving, n2.ports.clash, n2.behindNATLocked(time.Now())
	n2.mu.Unlock()
	if moving || clash != nil || behind || n2.Port() != DefaultPort {
		t.Fatalf("n2 with no NAT: moving %v, clash %+v, behind a NAT %v, port %d; want it to keep %d", moving, clash, behind, n2.Port(), DefaultPort)
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// FuzzPortFile: the state file "port" gives a port in 1-65535 or an
// error, never a panic.
func FuzzPortFile(f *testing.F) {
	for _, s := range []string{"47470\n", "0", "65536", " 1 ", "", "x", "-1", "123456789012345678"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parsePortFile(data)
		if err == nil && p == 0 {
			t.Fatalf("%q: port 0 without an error", data)
		}
	})
}
