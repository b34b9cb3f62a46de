package dns

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"glow/internal/leaktest"
)

// fakePacketConn is a net.PacketConn whose datagrams come from a test, with
// any source address the test likes, and whose replies are counted by
// destination.
type fakePacketConn struct {
	in     chan fakeDatagram
	closed chan struct{}
	once   sync.Once

	mu      sync.Mutex
	replies map[netip.Addr]int
}

type fakeDatagram struct {
	b    []byte
	from netip.AddrPort
}

func newFakePacketConn() *fakePacketConn {
	return &fakePacketConn{in: make(chan fakeDatagram, 64), closed: make(chan struct{}), replies: map[netip.Addr]int{}}
}

func (c *fakePacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-c.in:
		return copy(b, d.b), net.UDPAddrFromAddrPort(d.from), nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *fakePacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	c.replies[addr.(*net.UDPAddr).AddrPort().Addr()]++
	c.mu.Unlock()
	return len(b), nil
}

func (c *fakePacketConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakePacketConn) LocalAddr() net.Addr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ServiceV4, 53))
}
func (c *fakePacketConn) SetDeadline(time.Time) error      { return nil }
func (c *fakePacketConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakePacketConn) SetWriteDeadline(time.Time) error { return nil }

func (c *fakePacketConn) repliesTo(a netip.Addr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.replies[a]
}

// TestAttackResolverAnswersUnderlay (issue 12, item 6): a LAN host whose
// queries reach the resolver (glow's firewall off, or a route around it)
// asks for a glow name. The resolver must answer the overlay and the
// machine's own programs, and drop (and count) everyone else.
func TestAttackResolverAnswersUnderlay(t *testing.T) {
	leaktest.Check(t)
	s, err := New(Config{SelfUser: "alice", Names: testTable(),
		Prefixes: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd12:3456:789a::/48")}})
	if err != nil {
		t.Fatal(err)
	}
	pc := newFakePacketConn()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeUDP(ctx, pc) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeUDP: %v", err)
		}
	}()

	const n = 50
	clients := []struct {
		addr  string
		serve bool
	}{
		{"10.77.1.11", false},        // a LAN neighbour
		{"fd77:0:0:1::b", false},     // the same, IPv6 (a ULA, but not the overlay's)
		{"192.0.2.7", false},         // anyone routed here
		{"::ffff:10.77.1.11", false}, // mapped IPv4 is IPv4
		{"127.0.0.1", true},          // this machine's programs
		{"::1", true},
		{"100.100.100.53", true},     // the service address itself as source (local)
		{"fd00:676c:6f77::53", true}, // the same, IPv6
		{"100.64.0.2", true},         // an overlay node
		{"fd12:3456:789a::5", true},  // a node of a known user
	}
	q := new(dns.Msg)
	q.SetQuestion("nas.alice.glow.", dns.TypeA)
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		for _, c := range clients {
			pc.in <- fakeDatagram{b: b, from: netip.AddrPortFrom(netip.MustParseAddr(c.addr), uint16(1000+i))}
		}
	}
	// Every datagram has been handled once Queries counts them all (local
	// answers are written in the read loop, before the next read).
	deadline := time.Now().Add(30 * time.Second) // bounds a failing test
	for s.Stats().Queries < uint64(n*len(clients)) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// One more datagram, from loopback, to be sure the last one was handled.
	pc.in <- fakeDatagram{b: b, from: netip.MustParseAddrPort("127.0.0.1:9")}
	for pc.repliesTo(netip.MustParseAddr("127.0.0.1")) < n+1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}

	refused := 0
	for _, c := range clients {
		got := pc.repliesTo(netip.MustParseAddr(c.addr))
		if c.addr == "127.0.0.1" {
			got-- // the marker
		}
		switch {
		case c.serve && got != n:
			t.Errorf("client %s: %d of %d queries answered, want all", c.addr, got, n)
		case !c.serve:
			t.Logf("client %s: %d of %d queries answered", c.addr, got, n)
			if got != 0 {
				t.Errorf("client %s (underlay): %d of %d queries answered, want 0", c.addr, got, n)
			}
			refused += n
		}
	}
	if got := s.Stats().DropClient; got != uint64(refused) {
		t.Errorf("Stats.DropClient = %d, want %d", got, refused)
	}
}

// TestClientAllowed: the decision, and its count for socket addresses (the
// TCP accept loop's check; a test without root has only loopback clients).
func TestClientAllowed(t *testing.T) {
	s, err := New(Config{Names: testTable()})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"127.0.0.53": true, "::1": true, "100.64.0.9": true, "100.127.255.254": true,
		"100.100.100.53": true, "fd00:676c:6f77::1": true, "::ffff:100.64.0.9": true,
		"100.128.0.1": false, "10.0.0.1": false, "fe80::1": false, "fd77::1": false,
		"0.0.0.0": false, "::": false, "2001:db8::1": false,
	} {
		if got := s.ClientAllowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("ClientAllowed(%s) = %v, want %v", addr, got, want)
		}
	}
	if s.clientAllowed(&net.TCPAddr{IP: net.ParseIP("10.77.1.11"), Port: 4000}) {
		t.Error("a TCP client at 10.77.1.11 was allowed")
	}
	if !s.clientAllowed(&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 4000}) {
		t.Error("a TCP client at 127.0.0.1 was refused")
	}
	if got := s.Stats().DropClient; got != 1 {
		t.Errorf("Stats.DropClient = %d, want 1", got)
	}
}
