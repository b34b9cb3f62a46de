package relay

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"glow/nat/natlab"
)

// TestTURNRenewal: an allocation and the permissions Permit installed
// outlive their lifetimes on the server (10 and 5 minutes) because the
// client renews them: a peer still reaches the client through the relay
// after an hour. Server, client and peer are hosts of an in-memory
// Internet (nat/natlab) inside a testing/synctest bubble, so the hour
// passes on the bubble's clock, not the wall clock's, and pion's own
// timers run on it too; synctest.Test fails if any goroutine of theirs
// outlives the test.
func TestTURNRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		in := natlab.NewInternet()
		srvHost := in.NewHost(netip.MustParseAddr("198.51.100.1"))
		cliHost := in.NewHost(netip.MustParseAddr("198.51.100.2"))
		peerHost := in.NewHost(netip.MustParseAddr("203.0.113.3"))
		spc, err := srvHost.ListenPacket(3478)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ListenTURN(TURNServerConfig{
			PacketConn:  spc,
			PublicIP:    srvHost.Addr(),
			Realm:       "glow.test",
			Users:       map[string]string{turnUser: turnPass},
			ListenRelay: func(port uint16) (net.PacketConn, error) { return srvHost.ListenPacket(port) },
			PermitPeer:  func(netip.Addr) bool { return true },
			Logf:        t.Logf,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		cpc, err := cliHost.ListenPacket(0)
		if err != nil {
			t.Fatal(err)
		}
		defer cpc.Close()
		c, err := DialTURN(context.Background(), TURNClientConfig{
			Server: s.Addr(), Username: turnUser, Password: turnPass, Conn: cpc, Logf: t.Logf,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Permit(peerHost.Addr()); err != nil {
			t.Fatal(err)
		}
		peer, err := peerHost.ListenPacket(0)
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		relayed := net.UDPAddrFromAddrPort(c.RelayedAddr())
		reach := func(msg string) bool {
			t.Helper()
			if _, err := peer.WriteTo([]byte(msg), relayed); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 1500)
			n, _, err := c.ReadFrom(buf)
			return err == nil && string(buf[:n]) == msg
		}
		start := time.Now()
		if !reach("first") {
			t.Fatal("the peer does not reach the client through the relay at once")
		}
		// Look between the renewals (pion's every 5 min, the permissions'
		// every 2 min, from the start), not at their instants.
		time.Sleep(30 * time.Second)
		for range 6 {
			time.Sleep(10 * time.Minute)
			if !reach("later") {
				t.Fatalf("after %v the peer no longer reaches the client through the relay", time.Since(start))
			}
		}
		// Let whatever exchange is under way end before Close: once this
		// goroutine returns, the bubble's clock stops, and a transaction
		// cut short by Close would wait for its retransmissions forever.
		time.Sleep(time.Second)
	})
}
