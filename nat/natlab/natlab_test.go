package natlab_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"glow/internal/leaktest"
	"glow/nat/natlab"
)

var (
	natIP   = netip.MustParseAddr("203.0.113.1")
	lanIP   = netip.MustParseAddr("192.168.1.2")
	srv1IP  = netip.MustParseAddr("198.51.100.10")
	srv2IP  = netip.MustParseAddr("198.51.100.20")
	lanPort = uint16(41641)
)

func listen(t *testing.T, h *natlab.Host, port uint16) *natlab.Conn {
	t.Helper()
	c, err := h.ListenPacket(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *natlab.Conn, to netip.AddrPort, msg string) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort([]byte(msg), to); err != nil {
		t.Fatal(err)
	}
}

// recv returns the next queued datagram, or ok=false if none is queued.
// Delivery is synchronous, so "queued" is known when the write returned:
// recv asks the queue rather than racing a short read deadline, which a
// loaded machine lets pass before the read looks at the queue.
func recv(t *testing.T, c *natlab.Conn) (msg string, from netip.AddrPort, ok bool) {
	t.Helper()
	if c.Queued() == 0 {
		return "", from, false
	}
	c.SetReadDeadline(time.Time{})
	buf := make([]byte, 1500)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n]), from, true
}

// TestRFC4787 checks every mapping × filtering combination against the
// definitions of RFC 4787 sections 4.1 and 5.
func TestRFC4787(t *testing.T) {
	for _, m := range []natlab.Mapping{natlab.EndpointIndependent, natlab.AddressDependent, natlab.AddressAndPortDependent} {
		for _, f := range []natlab.Filtering{natlab.EndpointIndependentFiltering, natlab.AddressDependentFiltering, natlab.AddressAndPortDependentFiltering} {
			t.Run(m.String()+"-"+f.String(), func(t *testing.T) {
				in := natlab.New(natlab.Config{Logf: t.Logf})
				gw := in.NewNAT(natlab.NATConfig{Public: natIP, Mapping: m, Filtering: f})
				h := listen(t, gw.NewHost(lanIP), lanPort)
				hs1, hs2 := in.NewHost(srv1IP), in.NewHost(srv2IP)
				s1a := listen(t, hs1, 1000)
				s1p2 := listen(t, hs1, 1001)
				s2 := listen(t, hs2, 1000)

				// Filtering: one outbound flow to s1a, then inbound from
				// the same endpoint, same IP other port, other IP.
				send(t, h, s1a.LocalAddrPort(), "hi")
				_, ext, ok := recv(t, s1a)
				if !ok {
					t.Fatal("outbound packet lost")
				}
				if ext.Addr() != natIP {
					t.Fatalf("source %v, want NAT address %v", ext, natIP)
				}
				for _, tc := range []struct {
					from *natlab.Conn
					want bool
				}{
					{s1a, true},
					{s1p2, f != natlab.AddressAndPortDependentFiltering},
					{s2, f == natlab.EndpointIndependentFiltering},
				} {
					send(t, tc.from, ext, "in")
					_, got, ok := recv(t, h)
					if ok != tc.want {
						t.Errorf("inbound from %v passed=%v, want %v", tc.from.LocalAddrPort(), ok, tc.want)
					}
					if ok && got != tc.from.LocalAddrPort() {
						t.Errorf("inbound source %v, want %v (no inbound translation of the remote)", got, tc.from.LocalAddrPort())
					}
				}
				wantDrops := uint64(0)
				if f >= natlab.AddressDependentFiltering {
					wantDrops++
				}
				if f == natlab.AddressAndPortDependentFiltering {
					wantDrops++
				}
				if st := gw.Stats(); st.DroppedFilter != wantDrops {
					t.Errorf("DroppedFilter = %d, want %d", st.DroppedFilter, wantDrops)
				}

				// Mapping: the external port toward other destinations.
				send(t, h, s1p2.LocalAddrPort(), "hi")
				_, extP, _ := recv(t, s1p2)
				send(t, h, s2.LocalAddrPort(), "hi")
				_, extA, _ := recv(t, s2)
				sameIP := extP == ext  // same server IP, other port
				otherIP := extA == ext // other server IP
				wantSameIP := m != natlab.AddressAndPortDependent
				wantOtherIP := m == natlab.EndpointIndependent
				if sameIP != wantSameIP || otherIP != wantOtherIP {
					t.Errorf("external endpoints %v / %v / %v: same for other port=%v (want %v), other IP=%v (want %v)",
						ext, extP, extA, sameIP, wantSameIP, otherIP, wantOtherIP)
				}

				// Unsolicited inbound to a port without a mapping.
				send(t, s2, netip.AddrPortFrom(natIP, 9), "knock")
				if st := gw.Stats(); st.DroppedNoMapping != 1 {
					t.Errorf("DroppedNoMapping = %d, want 1", st.DroppedNoMapping)
				}
			})
		}
	}
}

// natType is one kind of network attachment in the hole-punching matrix.
type natType struct {
	name      string
	public    bool // directly on the Internet
	firewall  bool // public address behind a stateful firewall
	mapping   natlab.Mapping
	filtering natlab.Filtering
}

// hard reports an endpoint-dependent mapping: the port a peer sees is not
// the port the rendezvous server saw.
func (n natType) hard() bool {
	return !n.public && !n.firewall && n.mapping != natlab.EndpointIndependent
}

// strict reports filtering that admits only the exact endpoint sent to.
func (n natType) strict() bool {
	return !n.public && n.filtering == natlab.AddressAndPortDependentFiltering
}

// punchable is the theory the lab must agree with. Both sides send to the
// endpoint the rendezvous server saw for the other, and answer whatever
// source a punch arrives from. A hard side's packets come from a port the
// other side never sent to, so they pass only address (or endpoint)
// independent filtering; and a hard side's own filter admits only the
// rendezvous server on the mapping the peer aims at, so when both are hard
// (and neither filters endpoint-independently, true of every type here)
// neither first packet gets in.
func punchable(a, b natType) bool {
	if a.hard() && (b.hard() || b.strict()) {
		return false
	}
	if b.hard() && (a.hard() || a.strict()) {
		return false
	}
	return true
}

var matrixTypes = []natType{
	{name: "public", public: true},
	{name: "firewall", firewall: true, filtering: natlab.AddressAndPortDependentFiltering},
	{name: "EIM-EIF", mapping: natlab.EndpointIndependent, filtering: natlab.EndpointIndependentFiltering},
	{name: "EIM-ADF", mapping: natlab.EndpointIndependent, filtering: natlab.AddressDependentFiltering},
	{name: "EIM-APDF", mapping: natlab.EndpointIndependent, filtering: natlab.AddressAndPortDependentFiltering},
	{name: "ADM-ADF", mapping: natlab.AddressDependent, filtering: natlab.AddressDependentFiltering},
	{name: "APDM-APDF", mapping: natlab.AddressAndPortDependent, filtering: natlab.AddressAndPortDependentFiltering},
}

// attach puts a host of type n on the Internet with public address pub.
func attach(in *natlab.Internet, n natType, pub netip.Addr) *natlab.Host {
	switch {
	case n.public:
		return in.NewHost(pub)
	case n.firewall:
		return in.NewFirewall(natlab.FirewallConfig{Filtering: n.filtering}).NewHost(pub)
	}
	gw := in.NewNAT(natlab.NATConfig{Public: pub, Mapping: n.mapping, Filtering: n.filtering, PortPreservation: true})
	return gw.NewHost(lanIP) // the same LAN address on both sides, on purpose
}

// punch is a minimal simultaneous open: each side learns its reflexive
// endpoint from a rendezvous server, the endpoints are swapped out of band,
// then both send punches and reply to the source of any punch they get.
// It reports whether each side heard the other.
func punch(t *testing.T, a, b natType) bool {
	in := natlab.New(natlab.Config{})
	rv := listen(t, in.NewHost(netip.MustParseAddr("198.51.100.1")), 3478)
	ca := listen(t, attach(in, a, netip.MustParseAddr("203.0.113.1")), lanPort)
	cb := listen(t, attach(in, b, netip.MustParseAddr("203.0.113.2")), lanPort)

	send(t, ca, rv.LocalAddrPort(), "where am I")
	_, ea, okA := recv(t, rv)
	send(t, cb, rv.LocalAddrPort(), "where am I")
	_, eb, okB := recv(t, rv)
	if !okA || !okB {
		t.Fatal("rendezvous unreachable")
	}

	heard := map[*natlab.Conn]bool{}
	drain := func(c *natlab.Conn) {
		for {
			msg, from, ok := recv(t, c)
			if !ok {
				return
			}
			heard[c] = true
			if msg == "punch" {
				send(t, c, from, "ack")
			}
		}
	}
	for range 4 {
		send(t, ca, eb, "punch")
		send(t, cb, ea, "punch")
		drain(ca)
		drain(cb)
	}
	return heard[ca] && heard[cb]
}

// TestHolePunchMatrix punches between every pair of NAT types and checks
// the outcome against theory (punchable). Run with -v to see the matrix.
func TestHolePunchMatrix(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var tab strings.Builder
		fmt.Fprintf(&tab, "%-10s", "A \\ B")
		for _, b := range matrixTypes {
			fmt.Fprintf(&tab, " %-10s", b.name)
		}
		tab.WriteString("\n")
		for _, a := range matrixTypes {
			fmt.Fprintf(&tab, "%-10s", a.name)
			for _, b := range matrixTypes {
				got := punch(t, a, b)
				cell := "ok"
				if !got {
					cell = "--"
				}
				if want := punchable(a, b); got != want {
					t.Errorf("%s <-> %s: connected=%v, theory says %v", a.name, b.name, got, want)
					cell += "!"
				}
				fmt.Fprintf(&tab, " %-10s", cell)
			}
			tab.WriteString("\n")
		}
		t.Logf("hole punching (ok = both sides heard each other):\n%s", tab.String())
	})
}

func TestMappingTimeout(t *testing.T) {
	clock := natlab.NewClock(time.Unix(1_700_000_000, 0))
	in := natlab.New(natlab.Config{Now: clock.Now})
	gw := in.NewNAT(natlab.NATConfig{Public: natIP, Timeout: 30 * time.Second})
	h := listen(t, gw.NewHost(lanIP), lanPort)
	s := listen(t, in.NewHost(srv1IP), 3478)

	send(t, h, s.LocalAddrPort(), "out")
	_, ext, _ := recv(t, s)

	clock.Advance(29 * time.Second)
	send(t, s, ext, "in") // inbound does not refresh the mapping
	if _, _, ok := recv(t, h); !ok {
		t.Fatal("reply before the timeout was dropped")
	}
	clock.Advance(time.Second)
	send(t, s, ext, "late")
	if _, _, ok := recv(t, h); ok {
		t.Fatal("reply after the timeout passed")
	}
	st := gw.Stats()
	if st.MappingsExpired != 1 || st.DroppedNoMapping != 1 || st.Mappings != 0 {
		t.Fatalf("stats after expiry: %+v", st)
	}

	// Outbound traffic refreshes: keep it alive past one timeout.
	send(t, h, s.LocalAddrPort(), "out")
	_, ext, _ = recv(t, s)
	for range 3 {
		clock.Advance(20 * time.Second)
		send(t, h, s.LocalAddrPort(), "keepalive")
		recv(t, s)
	}
	send(t, s, ext, "in")
	if _, _, ok := recv(t, h); !ok {
		t.Fatal("refreshed mapping expired")
	}
}

// TestMappingTimeoutSynctest expires a mapping on the runtime clock, under
// synctest's fake time.
func TestMappingTimeoutSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		in := natlab.NewInternet()
		gw := in.NewNAT(natlab.NATConfig{Public: natIP, Timeout: 5 * time.Second})
		h := listen(t, gw.NewHost(lanIP), lanPort)
		s := listen(t, in.NewHost(srv1IP), 3478)
		send(t, h, s.LocalAddrPort(), "out")
		_, ext, _ := recv(t, s)
		time.Sleep(5 * time.Second)
		send(t, s, ext, "late")
		if _, _, ok := recv(t, h); ok {
			t.Fatal("reply after the timeout passed")
		}
	})
}

func TestFlushAndForward(t *testing.T) {
	in := natlab.New(natlab.Config{Logf: t.Logf})
	gw := in.NewNAT(natlab.NATConfig{Public: natIP, Filtering: natlab.AddressAndPortRestricted})
	hh := gw.NewHost(lanIP)
	h := listen(t, hh, lanPort)
	h2 := listen(t, hh, 5000)
	s := listen(t, in.NewHost(srv1IP), 3478)
	if err := gw.Forward(6000, h2.LocalAddrPort()); err != nil {
		t.Fatal(err)
	}
	if err := gw.Forward(6000, h.LocalAddrPort()); err == nil {
		t.Fatal("second forward of one port succeeded")
	}

	send(t, h, s.LocalAddrPort(), "out")
	_, ext, _ := recv(t, s)
	gw.Flush()
	send(t, s, ext, "in")
	if _, _, ok := recv(t, h); ok {
		t.Fatal("reply passed after Flush")
	}
	if st := gw.Stats(); st.DroppedNoMapping != 1 {
		t.Fatalf("DroppedNoMapping = %d, want 1", st.DroppedNoMapping)
	}

	// The forward survives Flush, admits anyone, and is used outbound.
	fwd := netip.AddrPortFrom(natIP, 6000)
	send(t, s, fwd, "unsolicited")
	if _, _, ok := recv(t, h2); !ok {
		t.Fatal("port forward did not pass an unsolicited packet")
	}
	send(t, h2, s.LocalAddrPort(), "out")
	if _, from, _ := recv(t, s); from != fwd {
		t.Fatalf("outbound from forwarded socket left as %v, want %v", from, fwd)
	}
}

func TestHairpinning(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprint("hairpin=", on), func(t *testing.T) {
			in := natlab.NewInternet()
			gw := in.NewNAT(natlab.NATConfig{Public: natIP, Hairpinning: on})
			a := listen(t, gw.NewHost(lanIP), lanPort)
			b := listen(t, gw.NewHost(netip.MustParseAddr("192.168.1.3")), lanPort)
			s := listen(t, in.NewHost(srv1IP), 3478)
			send(t, a, s.LocalAddrPort(), "out")
			_, extA, _ := recv(t, s)
			send(t, b, s.LocalAddrPort(), "out")
			_, extB, _ := recv(t, s)
			if extA == extB {
				t.Fatalf("two hosts share external endpoint %v", extA)
			}
			send(t, b, extA, "hairpin")
			_, from, ok := recv(t, a)
			if ok != on {
				t.Fatalf("hairpinned packet delivered=%v", ok)
			}
			if on && from != extB {
				t.Fatalf("hairpinned packet from %v, want B's external %v", from, extB)
			}
			if !on && gw.Stats().DroppedHairpin != 1 {
				t.Fatalf("stats: %+v", gw.Stats())
			}
			// On the LAN the hosts reach each other directly.
			send(t, b, a.LocalAddrPort(), "lan")
			if _, from, ok := recv(t, a); !ok || from != b.LocalAddrPort() {
				t.Fatalf("LAN packet: ok=%v from %v", ok, from)
			}
		})
	}
}

func TestPortPreservation(t *testing.T) {
	in := natlab.NewInternet()
	gw := in.NewNAT(natlab.NATConfig{Public: natIP, PortPreservation: true})
	a := listen(t, gw.NewHost(lanIP), lanPort)
	b := listen(t, gw.NewHost(netip.MustParseAddr("192.168.1.3")), lanPort)
	s := listen(t, in.NewHost(srv1IP), 3478)
	send(t, a, s.LocalAddrPort(), "a")
	_, extA, _ := recv(t, s)
	send(t, b, s.LocalAddrPort(), "b")
	_, extB, _ := recv(t, s)
	if extA.Port() != lanPort {
		t.Errorf("first host's port %d not preserved", extA.Port())
	}
	if extB.Port() == lanPort {
		t.Errorf("second host got the taken port %d", extB.Port())
	}
}

func TestFirewall(t *testing.T) {
	in := natlab.NewInternet()
	fw := in.NewFirewall(natlab.FirewallConfig{Filtering: natlab.AddressAndPortRestricted})
	pub := netip.MustParseAddr("203.0.113.7")
	h := listen(t, fw.NewHost(pub), lanPort)
	s := listen(t, in.NewHost(srv1IP), 3478)
	send(t, s, h.LocalAddrPort(), "unsolicited")
	if _, _, ok := recv(t, h); ok {
		t.Fatal("firewall passed unsolicited inbound")
	}
	send(t, h, s.LocalAddrPort(), "out")
	if _, from, _ := recv(t, s); from != h.LocalAddrPort() {
		t.Fatalf("firewall translated the source to %v", from)
	}
	send(t, s, h.LocalAddrPort(), "reply")
	if _, _, ok := recv(t, h); !ok {
		t.Fatal("firewall dropped a reply")
	}
	if st := fw.Stats(); st.DroppedNoMapping != 1 || st.InForwarded != 1 || st.OutForwarded != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestDoubleNAT: a home NAT behind a carrier-grade NAT; the outside world
// sees the CGNAT's address.
func TestDoubleNAT(t *testing.T) {
	in := natlab.NewInternet()
	cg := in.NewNAT(natlab.NATConfig{Public: natIP})
	home := cg.NewNAT(natlab.NATConfig{Public: netip.MustParseAddr("100.64.0.2")})
	h := listen(t, home.NewHost(lanIP), lanPort)
	s := listen(t, in.NewHost(srv1IP), 3478)
	send(t, h, s.LocalAddrPort(), "out")
	_, ext, ok := recv(t, s)
	if !ok || ext.Addr() != natIP {
		t.Fatalf("ok=%v ext=%v, want the CGNAT address", ok, ext)
	}
	send(t, s, ext, "back")
	if _, from, ok := recv(t, h); !ok || from != s.LocalAddrPort() {
		t.Fatalf("reply through two NATs: ok=%v from %v", ok, from)
	}
}

func TestConn(t *testing.T) {
	leaktest.Check(t)
	in := natlab.New(natlab.Config{QueueLen: 2})
	h := in.NewHost(srv1IP)
	c1, err := h.ListenPacket(0)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if c1.LocalAddrPort().Port() == 0 {
		t.Fatal("no ephemeral port")
	}
	if _, err := h.ListenPacket(c1.LocalAddrPort().Port()); err == nil {
		t.Fatal("listened twice on one port")
	}
	pc, err := in.NewHost(srv2IP).Listen(t.Context(), "udp4", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	// net.PacketConn behaviour: *net.UDPAddr, truncation, queue bound.
	for _, m := range []string{"one", "two", "three"} {
		if _, err := c1.WriteTo([]byte(m), pc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2)
	n, from, err := pc.ReadFrom(buf)
	if err != nil || n != 2 || string(buf) != "on" {
		t.Fatalf("ReadFrom = %d %q %v", n, buf[:n], err)
	}
	if ua, ok := from.(*net.UDPAddr); !ok || ua.AddrPort() != c1.LocalAddrPort() {
		t.Fatalf("from = %#v", from)
	}
	if st := in.Stats(); st.Delivered != 2 {
		t.Fatalf("internet stats %+v, want 2 delivered, 1 dropped by the queue", st)
	}

	// Deadlines and Close.
	pc.SetReadDeadline(time.Now().Add(-time.Second))
	if _, _, err := pc.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	pc.SetReadDeadline(time.Time{})
	done := make(chan error)
	go func() {
		buf := make([]byte, 10)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				done <- err
				return
			}
		}
	}()
	pc.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	if _, err := pc.WriteTo([]byte("x"), c1.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if pc.Close() == nil {
		t.Fatal("second Close returned nil")
	}
	// The port is free again; packets to a closed port are counted.
	c1.WriteTo([]byte("x"), pc.LocalAddr())
	c2, err := h.ListenPacket(c1.LocalAddrPort().Port() + 1000)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
}

func TestLossAndLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		in := natlab.New(natlab.Config{Latency: 40 * time.Millisecond})
		a := listen(t, in.NewHost(srv1IP), 1)
		b := listen(t, in.NewHost(srv2IP), 1)
		start := time.Now()
		send(t, a, b.LocalAddrPort(), "x")
		buf := make([]byte, 10)
		if _, _, err := b.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 40*time.Millisecond {
			t.Fatalf("one-way delay %v, want 40ms", d)
		}
	})

	in := natlab.New(natlab.Config{Loss: 0.5, Seed: 1})
	a := listen(t, in.NewHost(srv1IP), 1)
	b := listen(t, in.NewHost(srv2IP), 1)
	for range 200 {
		send(t, a, b.LocalAddrPort(), "x")
	}
	st := in.Stats()
	if st.Lost < 60 || st.Lost > 140 || st.Lost+st.Delivered != 200 {
		t.Fatalf("lost %d of 200 at 50%% loss", st.Lost)
	}
}
