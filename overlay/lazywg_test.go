package overlay

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// wgPeerCount is how many peers n's wireguard-go device has.
func wgPeerCount(t *testing.T, n *Node) int {
	s, err := n.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(s, "public_key=")
}

func session(n, m *Node) bool {
	for _, p := range n.Status().Peers {
		if p.ID == m.ID().String() {
			return p.Session
		}
	}
	return false
}

// echoOnce dials srv's overlay address from cli and checks one echo.
func echoOnce(t *testing.T, cli, srv *Node, ip netip.Addr, port uint16) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cli.Userspace().DialContext(ctx, "tcp", netip.AddrPortFrom(ip, port).String())
	if err != nil {
		t.Fatalf("%s -> %s: %v", cli.Cert().Name, srv.Cert().Name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "ping")
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
}

// TestLazyWireGuardPeers: nodes that know each other but exchange no
// traffic have no WireGuard peers; the first packet either way configures
// the pair (outbound on the sender, by the handshake on the receiver) and
// gets through; a third node stays unconfigured; a pair idle past lazyIdle
// is removed again and the next connection brings it back.
func TestLazyWireGuardPeers(t *testing.T) {
	nodes := joinedNet(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		if got := wgPeerCount(t, n); got != 0 {
			t.Fatalf("%s has %d WireGuard peers before any traffic, want 0", n.Cert().Name, got)
		}
	}
	serveEcho(t, b, 7100)
	echoOnce(t, a, b, b.Cert().IPv4, 7100)
	if !session(a, b) || !session(b, a) {
		t.Fatalf("after a connection: a has b %v, b has a %v; want both configured", session(a, b), session(b, a))
	}
	if session(a, c) || session(c, a) || session(b, c) || wgPeerCount(t, c) != 0 {
		t.Fatalf("c carried no traffic but has a WireGuard peer (a-c %v, c-a %v, b-c %v, c: %d)",
			session(a, c), session(c, a), session(b, c), wgPeerCount(t, c))
	}

	// Not idle yet: nothing is trimmed.
	a.bind.trimWG(time.Now())
	if !session(a, b) {
		t.Fatal("trim removed a peer that just carried traffic")
	}
	// Idle past lazyIdle (both ends, as their session keys would have
	// expired by then): removed. The connection's last FIN and ACK may
	// still be on their way and configure the pair again: trim until both
	// ends have none (a bounded wait, not a 500 ms sleep before looking).
	later := time.Now().Add(lazyIdle + time.Minute)
	waitFor(t, 30*time.Second, "trims to leave a and b without WireGuard peers", func() bool {
		left := a.bind.trimWG(later)
		b.bind.trimWG(later)
		return left == 0 && !session(a, b) && wgPeerCount(t, a) == 0 && wgPeerCount(t, b) == 0
	})
	// The other way round this time: b's first packet configures both.
	serveEcho(t, a, 7101)
	echoOnce(t, b, a, a.Cert().IPv4, 7101)
	if !session(a, b) || !session(b, a) {
		t.Fatalf("after trim and a new connection: a has b %v, b has a %v", session(a, b), session(b, a))
	}
	if w := a.bind.Counters().WireGuardWakes; w < 2 {
		t.Fatalf("a configured peers %d times on demand, want >= 2", w)
	}
}
