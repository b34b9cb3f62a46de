package overlay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"glow/overlay/member/membertest"
	"glow/relay"
)

// TestTURN: a and b cannot exchange UDP; both reach c. b takes an
// allocation on a TURN server; a finds b's relayed address in b's record and
// reaches b directly through it (path direct to the relayed address), not
// through c.
func TestTURN(t *testing.T) {
	srv := testTURNServer(t)

	lk := &links{allowed: map[[2]netip.Addr]bool{}}
	ips := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.4")}
	lk.set(ips[0], ips[2], true)
	lk.set(ips[1], ips[2], true)
	lk.set(ips[0], netip.MustParseAddr("127.0.0.1"), true) // a may reach the TURN server's relayed addresses
	u := membertest.NewUser(t, "alice")
	used := map[netip.Addr]bool{}
	var nodes []*Node
	for i, name := range []string{"a", "b", "c"} {
		dir := provision(t, u, name, used, i == 2)
		self := ips[i]
		var peers []string
		if name != "c" {
			peers = []string{netip.AddrPortFrom(ips[2], DefaultPort).String()}
		}
		nodes = append(nodes, testNode(t, name, func(c *Config) {
			c.StateDir, c.Peers, c.Random, c.Port = dir, peers, false, DefaultPort
			c.HostAddrs = func() []netip.Addr { return []netip.Addr{self} }
			if name == "b" {
				c.TURN = []string{"turn://glow:secret@" + srv.Addr().String()}
			}
			c.ListenPacket = func(port uint16) (net.PacketConn, error) {
				pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(self, port)))
				if err != nil {
					return nil, err
				}
				return &linkConn{PacketConn: pc, self: self, links: lk}, nil
			}
		}))
	}
	a, b := nodes[0], nodes[1]
	var relayed string
	waitFor(t, 20*time.Second, "b's TURN allocation", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.lnk.turns) == 0 {
			return false
		}
		relayed = b.lnk.turns[0].c.RelayedAddr().String()
		return true
	})
	waitFor(t, 30*time.Second, "a to reach b through TURN", func() bool {
		p, ok := peerStatus(a, "b")
		return ok && p.Path == "direct" && p.Endpoint == relayed
	})
	tcpEcho(t, a, b, 7300)
	tcpEcho(t, b, a, 7301)
	if srv.AllocationCount() != 1 {
		t.Fatalf("server holds %d allocations", srv.AllocationCount())
	}
}

// testTURNServer is a TURN server on loopback for user glow, password
// secret, closed when the test ends.
func testTURNServer(t *testing.T) *relay.TURNServer {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := relay.ListenTURN(relay.TURNServerConfig{PacketConn: pc, PublicIP: netip.MustParseAddr("127.0.0.1"),
		Users: map[string]string{"glow": "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}
