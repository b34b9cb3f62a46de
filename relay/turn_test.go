package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"glow/internal/leaktest"
)

// All of these run on loopback: the server and its relay sockets on
// 127.0.0.1, plain peers on 127.0.0.2 and up (Linux routes 127/8 to lo),
// so that TURN's per-IP permissions are exercised for real.

const turnUser, turnPass = "alice", "correct horse"

func listenUDP(t *testing.T, ip string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func startTURNServer(t *testing.T, mod func(*TURNServerConfig)) *TURNServer {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := TURNServerConfig{
		PacketConn: pc,
		PublicIP:   netip.MustParseAddr("127.0.0.1"),
		Realm:      "glow.test",
		Users:      map[string]string{turnUser: turnPass, "bob": "hunter2"},
		Logf:       t.Logf,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := ListenTURN(cfg)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// hangBound is how long a test waits for something that should happen at
// once (a blocked call to return after Close or its deadline, a datagram
// on loopback to be counted) before it fails: a bound on a failing test,
// not a timed assertion, so generous for a loaded machine.
const hangBound = 30 * time.Second

func dialTURN(t *testing.T, s *TURNServer, user, pass string, conn net.PacketConn) (*TURNClient, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialTURN(ctx, TURNClientConfig{
		Server:   s.Addr(),
		Username: user,
		Password: pass,
		Conn:     conn,
		Logf:     t.Logf,
	})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func mustDialTURN(t *testing.T, s *TURNServer, conn net.PacketConn) *TURNClient {
	t.Helper()
	c, err := dialTURN(t, s, turnUser, turnPass, conn)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func payload(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed)
	}
	return b
}

func readTURN(t *testing.T, c *TURNClient) ([]byte, netip.AddrPort) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(hangBound))
	buf := make([]byte, 64<<10)
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("TURN read on %v: %v", c.RelayedAddr(), err)
	}
	return buf[:n], from
}

func readUDP(t *testing.T, pc net.PacketConn) ([]byte, netip.AddrPort) {
	t.Helper()
	pc.SetReadDeadline(time.Now().Add(hangBound))
	buf := make([]byte, 64<<10)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("UDP read on %v: %v", pc.LocalAddr(), err)
	}
	return buf[:n], addrPortOf(from)
}

var turnSizes = []int{1, 28, 100, 576, 1200, 1420, 1500}

// TestTURNClientToClient: two TURN clients on one server exchange
// datagrams of every size between their relayed addresses, both ways,
// many times (the first ones as Send indications, later ones on the
// channels pion binds meanwhile).
func TestTURNClientToClient(t *testing.T) {
	leaktest.Check(t)
	s := startTURNServer(t, nil)
	a := mustDialTURN(t, s, nil) // a socket of its own
	b := mustDialTURN(t, s, listenUDP(t, "127.0.0.1"))
	if n := s.AllocationCount(); n != 2 {
		t.Fatalf("server has %d allocations, want 2", n)
	}
	for _, c := range []*TURNClient{a, b} {
		if r := c.RelayedAddr(); r.Addr() != netip.MustParseAddr("127.0.0.1") || r.Port() == 0 || r == s.Addr() {
			t.Fatalf("relayed address %v: want 127.0.0.1 and a port of its own", r)
		}
	}
	// b speaks second; it lets a's relayed IP in before a speaks first.
	if err := b.Permit(a.RelayedAddr().Addr()); err != nil {
		t.Fatal(err)
	}
	for round := range 20 {
		for _, size := range turnSizes {
			msg := payload(size, round)
			if err := a.WriteTo(msg, b.RelayedAddr()); err != nil {
				t.Fatal(err)
			}
			got, from := readTURN(t, b)
			if !bytes.Equal(got, msg) || from != a.RelayedAddr() {
				t.Fatalf("round %d: b got %d bytes from %v, want %d from %v", round, len(got), from, size, a.RelayedAddr())
			}
			reply := payload(size, round+1)
			if err := b.WriteTo(reply, a.RelayedAddr()); err != nil {
				t.Fatal(err)
			}
			got, from = readTURN(t, a)
			if !bytes.Equal(got, reply) || from != b.RelayedAddr() {
				t.Fatalf("round %d: a got %d bytes from %v, want %d from %v", round, len(got), from, size, b.RelayedAddr())
			}
		}
		if round == 0 {
			time.Sleep(50 * time.Millisecond) // let the channel binds land
		}
	}
	if a.Strays() != 0 || b.Strays() != 0 {
		t.Errorf("strays: a %d, b %d", a.Strays(), b.Strays())
	}
}

// TestTURNClientToPlainPeer: a TURN client and a peer with an ordinary
// socket (on another IP) talk; the client's first datagram to the new
// peer IP arrives, because WriteTo waits for the permission.
func TestTURNClientToPlainPeer(t *testing.T) {
	leaktest.Check(t)
	s := startTURNServer(t, nil)
	c := mustDialTURN(t, s, listenUDP(t, "127.0.0.1"))
	peer := listenUDP(t, "127.0.0.2")
	peerAddr := addrPortOf(peer.LocalAddr())
	for i, size := range turnSizes {
		msg := payload(size, i)
		if err := c.WriteTo(msg, peerAddr); err != nil {
			t.Fatal(err)
		}
		got, from := readUDP(t, peer)
		if !bytes.Equal(got, msg) || from != c.RelayedAddr() {
			t.Fatalf("peer got %d bytes from %v, want %d from %v", len(got), from, size, c.RelayedAddr())
		}
		reply := payload(size, i+1)
		if _, err := peer.WriteTo(reply, net.UDPAddrFromAddrPort(c.RelayedAddr())); err != nil {
			t.Fatal(err)
		}
		got, from = readTURN(t, c)
		if !bytes.Equal(got, reply) || from != peerAddr {
			t.Fatalf("client got %d bytes from %v, want %d from %v", len(got), from, size, peerAddr)
		}
	}
}

// TestTURNPermit: a peer that speaks first is dropped by the server until
// the client permits its IP; a peer the server's filter refuses gets a
// clear error.
func TestTURNPermit(t *testing.T) {
	leaktest.Check(t)
	s := startTURNServer(t, func(cfg *TURNServerConfig) {
		def := DefaultTURNPermitPeer(cfg.PublicIP)
		cfg.PermitPeer = func(p netip.Addr) bool { return p != netip.MustParseAddr("127.0.0.9") && def(p) }
	})
	c := mustDialTURN(t, s, listenUDP(t, "127.0.0.1"))
	peer := listenUDP(t, "127.0.0.3")
	to := net.UDPAddrFromAddrPort(c.RelayedAddr())

	if _, err := peer.WriteTo([]byte("too early"), to); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, from, err := c.ReadFrom(make([]byte, 1500)); err == nil {
		t.Fatalf("got %d bytes from %v without a permission", n, from)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("read without a permission: %v, want a timeout", err)
	}

	if err := c.Permit(netip.MustParseAddr("127.0.0.3")); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.WriteTo([]byte("now"), to); err != nil {
		t.Fatal(err)
	}
	got, from := readTURN(t, c)
	if string(got) != "now" || from != addrPortOf(peer.LocalAddr()) {
		t.Fatalf("got %q from %v", got, from)
	}

	refused := netip.MustParseAddrPort("127.0.0.9:9")
	if err := c.WriteTo([]byte("x"), refused); err == nil {
		t.Fatal("WriteTo a refused peer succeeded")
	} else if !strings.Contains(err.Error(), "CreatePermission error") {
		t.Logf("refused peer: %v", err)
	}
	if err := c.Permit(refused.Addr()); err == nil || !strings.Contains(err.Error(), "refused a permission") {
		t.Fatalf("Permit of a refused peer: %v", err)
	}
	if err := c.WriteTo([]byte("x"), netip.MustParseAddrPort("[2001:db8::1]:9")); err == nil || !strings.Contains(err.Error(), "IPv4") {
		t.Fatalf("WriteTo an IPv6 peer: %v", err)
	}
}

func TestTURNWrongCredentials(t *testing.T) {
	leaktest.Check(t)
	s := startTURNServer(t, nil)
	for _, tc := range []struct{ user, pass string }{
		{turnUser, "not-the-password"},
		{"mallory", turnPass},
		{"bob", turnPass}, // another user's password
	} {
		_, err := dialTURN(t, s, tc.user, tc.pass, nil)
		if !errors.Is(err, ErrTURNAuth) {
			t.Fatalf("user %q: err %v, want ErrTURNAuth", tc.user, err)
		}
		if !strings.Contains(err.Error(), tc.user) || strings.Contains(err.Error(), tc.pass) {
			t.Errorf("error should name the user and not the password: %v", err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("refused only when the context ran out, not on the server's answer: %v", err)
		}
		t.Logf("user %q: %v", tc.user, err)
	}
	if n := s.AllocationCount(); n != 0 {
		t.Fatalf("server has %d allocations after refusals", n)
	}
}

// TestTURNCloseReleases: Close frees the allocation on the server (the
// count drops before Close returns) and later I/O fails with ErrClosed.
func TestTURNCloseReleases(t *testing.T) {
	leaktest.Check(t)
	s := startTURNServer(t, nil)
	shared := listenUDP(t, "127.0.0.1")
	a := mustDialTURN(t, s, shared)
	b := mustDialTURN(t, s, nil)
	if err := b.Permit(a.RelayedAddr().Addr()); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteTo([]byte("hi"), b.RelayedAddr()); err != nil {
		t.Fatal(err)
	}
	readTURN(t, b)
	if n := s.AllocationCount(); n != 2 {
		t.Fatalf("%d allocations, want 2", n)
	}

	readErr := make(chan error, 1)
	go func() {
		a.SetReadDeadline(time.Time{})
		_, _, err := a.ReadFrom(make([]byte, 1500))
		readErr <- err
	}()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if n := s.AllocationCount(); n != 1 {
		t.Fatalf("%d allocations after Close, want 1", n)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked ReadFrom returned %v, want net.ErrClosed", err)
		}
	case <-time.After(hangBound):
		t.Fatalf("ReadFrom still blocked %v after Close", hangBound)
	}
	if err := a.WriteTo([]byte("hi"), b.RelayedAddr()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close: %v, want net.ErrClosed", err)
	}
	if err := a.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	// A Conn passed in stays open and usable.
	if _, err := shared.WriteTo([]byte("still open"), net.UDPAddrFromAddrPort(s.Addr())); err != nil {
		t.Fatalf("shared socket after Close: %v", err)
	}
	// The relay socket is gone: its port can be bound again.
	pc, err := net.ListenPacket("udp4", a.RelayedAddr().String())
	if err != nil {
		t.Fatalf("relay socket %v still bound: %v", a.RelayedAddr(), err)
	}
	pc.Close()
}

// TestTURNCapacity: an Allocate beyond MaxAllocations is refused with
// ErrTURNCapacity, and a released slot can be taken again.
func TestTURNCapacity(t *testing.T) {
	leaktest.Check(t)
	s := startTURNServer(t, func(cfg *TURNServerConfig) { cfg.MaxAllocations = 2 })
	mustDialTURN(t, s, nil)
	b := mustDialTURN(t, s, nil)
	_, err := dialTURN(t, s, turnUser, turnPass, nil)
	if !errors.Is(err, ErrTURNCapacity) {
		t.Fatalf("third allocation: %v, want ErrTURNCapacity", err)
	}
	t.Log(err)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	mustDialTURN(t, s, nil)
}

// TestTURNDialContext: a server that never answers makes DialTURN return
// with the context, promptly, leaving nothing running.
func TestTURNDialContext(t *testing.T) {
	leaktest.Check(t)
	silent := listenUDP(t, "127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := DialTURN(ctx, TURNClientConfig{Server: addrPortOf(silent.LocalAddr()), Username: "u", Password: "p"})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want DeadlineExceeded", err)
		}
	case <-time.After(hangBound):
		t.Fatalf("DialTURN still running %v after a 300ms deadline", hangBound)
	}
}

// TestTURNStrays: datagrams from anyone but the server, even well-formed
// TURN messages, never reach ReadFrom.
func TestTURNStrays(t *testing.T) {
	leaktest.Check(t)
	s := startTURNServer(t, nil)
	conn := listenUDP(t, "127.0.0.1")
	c := mustDialTURN(t, s, conn)
	forger := listenUDP(t, "127.0.0.4")
	// A ChannelData frame for channel 0x4000, as the server would send.
	if _, err := forger.WriteTo([]byte{0x40, 0, 0, 4, 'e', 'v', 'i', 'l'}, conn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(hangBound)
	for c.Strays() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c.Strays() != 1 {
		t.Fatalf("strays %d, want 1", c.Strays())
	}
}

func TestTURNConfigErrors(t *testing.T) {
	leaktest.Check(t)
	pc := listenUDP(t, "127.0.0.1")
	users := map[string]string{"u": "p"}
	for _, tc := range []struct {
		cfg  TURNServerConfig
		want string
	}{
		{TURNServerConfig{PublicIP: netip.MustParseAddr("127.0.0.1"), Users: users}, "PacketConn"},
		{TURNServerConfig{PacketConn: pc, Users: users}, "PublicIP"},
		{TURNServerConfig{PacketConn: pc, PublicIP: netip.MustParseAddr("::1"), Users: users}, "IPv4"},
		{TURNServerConfig{PacketConn: pc, PublicIP: netip.MustParseAddr("127.0.0.1")}, "Users"},
		{TURNServerConfig{PacketConn: pc, PublicIP: netip.MustParseAddr("127.0.0.1"), Users: map[string]string{"u": ""}}, "empty"},
	} {
		if _, err := ListenTURN(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ListenTURN(%+v): %v, want an error about %s", tc.cfg, err, tc.want)
		}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		cfg  TURNClientConfig
		want string
	}{
		{TURNClientConfig{Server: netip.MustParseAddrPort("127.0.0.1:3478"), Password: "p"}, "Username"},
		{TURNClientConfig{Server: netip.MustParseAddrPort("127.0.0.1:3478"), Username: "u"}, "Password"},
		{TURNClientConfig{Username: "u", Password: "p"}, "Server"},
		{TURNClientConfig{Server: netip.MustParseAddrPort("[::1]:3478"), Username: "u", Password: "p"}, "IPv4"},
	} {
		if _, err := DialTURN(ctx, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DialTURN(%+v): %v, want an error about %s", tc.cfg, err, tc.want)
		}
	}
}

func TestDefaultTURNPermitPeer(t *testing.T) {
	public := DefaultTURNPermitPeer(netip.MustParseAddr("198.51.100.7"))
	lab := DefaultTURNPermitPeer(netip.MustParseAddr("127.0.0.1"))
	for _, tc := range []struct {
		peer        string
		public, lab bool
	}{
		{"203.0.113.5", true, true},
		{"198.51.100.7", true, true}, // another allocation on this server
		{"10.1.2.3", true, true},
		{"127.0.0.1", false, true},
		{"::ffff:127.0.0.1", false, true},
		{"0.0.0.0", false, false},
		{"169.254.169.254", false, false},
		{"224.0.0.1", false, false},
		{"255.255.255.255", false, false},
	} {
		p := netip.MustParseAddr(tc.peer)
		if got := public(p); got != tc.public {
			t.Errorf("public server, peer %s: %v", p, got)
		}
		if got := lab(p); got != tc.lab {
			t.Errorf("loopback server, peer %s: %v", p, got)
		}
	}
}

func TestTURNErrorCode(t *testing.T) {
	for in, want := range map[string]int{
		"Allocate error response (error 400: Bad Request)":           400,
		"Allocate error response (error 508: Insufficient Capacity)": 508,
		"all retransmissions failed":                                 0,
	} {
		if got := turnErrorCode(errors.New(in)); got != want {
			t.Errorf("%q: %d, want %d", in, got, want)
		}
	}
	if turnErrorCode(fmt.Errorf("wrapped: %w", errors.New("(error 486: Allocation Quota Reached)"))) != 486 {
		t.Error("wrapped code not found")
	}
}

// TestTURNSetPermits: SetPermits replaces the set the client keeps (and
// renews), so addresses a caller no longer names are not kept for good;
// the set is bounded at MaxPermits, and a large one is granted in batches.
func TestTURNSetPermits(t *testing.T) {
	leaktest.Check(t)
	s := startTURNServer(t, nil)
	c := mustDialTURN(t, s, listenUDP(t, "127.0.0.1"))
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)}) }
	if err := c.SetPermits([]netip.Addr{addr(1), addr(2), addr(1)}); err != nil {
		t.Fatal(err)
	}
	if n := c.Permits(); n != 2 {
		t.Fatalf("%d permits after setting 2, want 2", n)
	}
	if err := c.Permit(addr(3)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPermits([]netip.Addr{addr(3)}); err != nil {
		t.Fatal(err)
	}
	if n := c.Permits(); n != 1 {
		t.Fatalf("%d permits after setting 1, want 1: the others are kept", n)
	}
	var many []netip.Addr
	for i := range MaxPermits + 200 {
		many = append(many, addr(10+i))
	}
	if err := c.SetPermits(many); err != nil {
		t.Fatalf("setting %d permits: %v", len(many), err)
	}
	if n := c.Permits(); n != MaxPermits {
		t.Fatalf("%d permits after setting %d, want the bound %d", n, len(many), MaxPermits)
	}
	// The last one within the bound was granted: a peer there reaches us.
	peer := listenUDP(t, addr(10+MaxPermits-1).String())
	if _, err := peer.WriteTo([]byte("granted"), net.UDPAddrFromAddrPort(c.RelayedAddr())); err != nil {
		t.Fatal(err)
	}
	if got, _ := readTURN(t, c); string(got) != "granted" {
		t.Fatalf("got %q", got)
	}
	if err := c.SetPermits([]netip.Addr{netip.MustParseAddr("2001:db8::1")}); err == nil {
		t.Fatal("an IPv6 permit was taken")
	}
}
