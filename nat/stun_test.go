package nat_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/stun"

	"glow/internal/leaktest"
	"glow/nat"
	"glow/nat/natlab"
)

// packetConn is what both natlab.Conn and *net.UDPConn offer.
type packetConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error)
	Close() error
}

// serveSTUN answers STUN on c the way a glow node does, until c is closed.
// The returned func closes c and waits for the goroutine.
func serveSTUN(c packetConn) (stop func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !nat.IsSTUN(buf[:n]) {
				continue
			}
			if resp, ok := nat.Respond(buf[:n], from); ok {
				c.WriteToUDPAddrPort(resp, from)
			}
		}
	})
	return func() { c.Close(); wg.Wait() }
}

// node is the client side: a socket owner that demultiplexes STUN answers
// to a nat.Client, as the overlay's Bind will.
type node struct {
	client *nat.Client
	stop   func()
}

func newNode(t *testing.T, c packetConn, cfg nat.ClientConfig) *node {
	t.Helper()
	if cfg.Send == nil {
		cfg.Send = func(b []byte, to netip.AddrPort) error {
			_, err := c.WriteToUDPAddrPort(b, to)
			return err
		}
	}
	cl, err := nat.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{client: cl}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if nat.IsSTUN(buf[:k]) {
				cl.HandleResponse(buf[:k], from)
			}
		}
	})
	n.stop = func() { c.Close(); wg.Wait() }
	return n
}

var (
	stun1 = netip.MustParseAddrPort("198.51.100.10:3478")
	stun2 = netip.MustParseAddrPort("198.51.100.20:3478")
	natIP = netip.MustParseAddr("203.0.113.1")
	lanIP = netip.MustParseAddr("192.168.1.2")
)

// labProbe builds a lab with two public STUN servers, attaches the client
// with attach, probes, and returns the report and the client's socket.
func labProbe(t *testing.T, attach func(in *natlab.Internet) *natlab.Host) (nat.Report, netip.AddrPort) {
	t.Helper()
	in := natlab.New(natlab.Config{Logf: t.Logf, Latency: 20 * time.Millisecond})
	var stops []func()
	for _, s := range []netip.AddrPort{stun1, stun2} {
		c, err := in.NewHost(s.Addr()).ListenPacket(s.Port())
		if err != nil {
			t.Fatal(err)
		}
		stops = append(stops, serveSTUN(c))
	}
	c, err := attach(in).ListenPacket(41641)
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(t, c, nat.ClientConfig{})
	rep, err := n.client.Probe(t.Context(), []netip.AddrPort{stun1, stun2})
	n.stop()
	for _, s := range stops {
		s()
	}
	if err != nil {
		t.Fatal(err)
	}
	return rep, c.LocalAddrPort()
}

func TestProbeThroughNATs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mapping natlab.Mapping
		varies  bool
	}{
		{"EIM", natlab.EndpointIndependent, false},
		{"ADM", natlab.AddressDependent, true},
		{"APDM", natlab.AddressAndPortDependent, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rep, _ := labProbe(t, func(in *natlab.Internet) *natlab.Host {
					gw := in.NewNAT(natlab.NATConfig{Public: natIP, Mapping: tc.mapping, Filtering: natlab.AddressAndPortRestricted})
					return gw.NewHost(lanIP)
				})
				t.Logf("report: %+v", rep)
				if rep.MappingVaries != tc.varies || rep.EndpointIndependent == tc.varies {
					t.Errorf("MappingVaries=%v EndpointIndependent=%v, want varies=%v", rep.MappingVaries, rep.EndpointIndependent, tc.varies)
				}
				wantN := 1
				if tc.varies {
					wantN = 2
				}
				if len(rep.Reflexive) != wantN {
					t.Errorf("Reflexive = %v, want %d distinct", rep.Reflexive, wantN)
				}
				for i, r := range rep.Servers {
					if r.Err != nil || r.Reflexive.Addr() != natIP {
						t.Errorf("server %d: %+v", i, r)
					}
				}
				for _, s := range []netip.AddrPort{stun1, stun2} {
					if d := rep.ServerLatency[s]; d != 40*time.Millisecond {
						t.Errorf("latency to %v = %v, want 40ms (2 × 20ms one-way)", s, d)
					}
				}
			})
		})
	}
}

func TestProbePublicHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := netip.MustParseAddr("203.0.113.9")
		rep, local := labProbe(t, func(in *natlab.Internet) *natlab.Host { return in.NewHost(pub) })
		if len(rep.Reflexive) != 1 || rep.Reflexive[0] != local {
			t.Fatalf("Reflexive = %v, want exactly the local %v", rep.Reflexive, local)
		}
		if !rep.EndpointIndependent || rep.MappingVaries {
			t.Fatalf("report %+v", rep)
		}
	})
}

// TestProbeLoopback runs the client and two responders on real sockets.
func TestProbeLoopback(t *testing.T) {
	leaktest.Check(t)
	lc := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		if err != nil {
			t.Skipf("no loopback UDP: %v", err)
		}
		return c
	}
	s1, s2, cc := lc(), lc(), lc()
	stop1, stop2 := serveSTUN(s1), serveSTUN(s2)
	defer stop1()
	defer stop2()
	n := newNode(t, cc, nat.ClientConfig{})
	defer n.stop()
	servers := []netip.AddrPort{
		s1.LocalAddr().(*net.UDPAddr).AddrPort(),
		s2.LocalAddr().(*net.UDPAddr).AddrPort(),
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	rep, err := n.client.Probe(ctx, servers)
	if err != nil {
		t.Fatal(err)
	}
	local := cc.LocalAddr().(*net.UDPAddr).AddrPort()
	if len(rep.Reflexive) != 1 || rep.Reflexive[0] != local {
		t.Fatalf("Reflexive = %v, want %v", rep.Reflexive, local)
	}
	// Both servers share 127.0.0.1: not enough to call the mapping
	// endpoint-independent, but enough to see it does not vary by port.
	if rep.MappingVaries || rep.EndpointIndependent {
		t.Fatalf("report %+v", rep)
	}
	for _, s := range servers {
		if d, ok := rep.ServerLatency[s]; !ok || d <= 0 {
			t.Fatalf("latency for %v: %v %v", s, d, ok)
		}
	}
}

// TestProbeRetries drops requests in Send and checks backoff, the bound on
// attempts, and the errors, in fake time.
func TestProbeRetries(t *testing.T) {
	leaktest.Check(t)
	synctest.Test(t, func(t *testing.T) {
		in := natlab.NewInternet()
		srv, _ := in.NewHost(stun1.Addr()).ListenPacket(stun1.Port())
		stopSrv := serveSTUN(srv)
		defer stopSrv()
		c, _ := in.NewHost(netip.MustParseAddr("203.0.113.9")).ListenPacket(41641)

		var mu sync.Mutex
		sends, drop := 0, 2
		n := newNode(t, c, nat.ClientConfig{
			Timeout: 10 * time.Second,
			Send: func(b []byte, to netip.AddrPort) error {
				mu.Lock()
				sends++
				d := sends <= drop
				mu.Unlock()
				if d {
					return nil // lost on the way
				}
				_, err := c.WriteToUDPAddrPort(b, to)
				return err
			},
		})
		defer n.stop()

		start := time.Now()
		rep, err := n.client.Probe(t.Context(), []netip.AddrPort{stun1})
		if err != nil {
			t.Fatal(err)
		}
		// Two lost: answered on the third attempt, after 200+400 ms,
		// and the latency is that of the third attempt alone.
		if d := time.Since(start); d != 600*time.Millisecond {
			t.Errorf("answer after %v, want 600ms", d)
		}
		if rep.ServerLatency[stun1] != 0 {
			t.Errorf("latency %v, want 0 on an instant network", rep.ServerLatency[stun1])
		}

		mu.Lock()
		sends, drop = 0, 100
		mu.Unlock()
		start = time.Now()
		rep, err = n.client.Probe(t.Context(), []netip.AddrPort{stun1})
		if !errors.Is(err, nat.ErrNoResponse) {
			t.Fatalf("err = %v, want ErrNoResponse", err)
		}
		if d := time.Since(start); d != 3*time.Second { // 200+400+800+1600ms
			t.Errorf("gave up after %v, want 3s", d)
		}
		if sends != nat.DefaultAttempts {
			t.Errorf("%d requests sent, want %d", sends, nat.DefaultAttempts)
		}
		if len(rep.Servers) != 1 || !errors.Is(rep.Servers[0].Err, nat.ErrNoResponse) {
			t.Errorf("servers: %+v", rep.Servers)
		}

		// Cancellation ends the probe at once.
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(100*time.Millisecond, cancel)
		start = time.Now()
		if _, err := n.client.Probe(ctx, []netip.AddrPort{stun1}); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Errorf("cancelled probe took %v", d)
		}
	})
}

// TestHandleResponse checks matching by transaction ID and source, and
// error responses.
func TestHandleResponse(t *testing.T) {
	leaktest.Check(t)
	synctest.Test(t, func(t *testing.T) {
		type sent struct {
			b  []byte
			to netip.AddrPort
		}
		reqs := make(chan sent, 10)
		cl, err := nat.NewClient(nat.ClientConfig{Send: func(b []byte, to netip.AddrPort) error {
			reqs <- sent{b, to}
			return nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		var rep nat.Report
		var perr error
		go func() {
			defer close(done)
			rep, perr = cl.Probe(t.Context(), []netip.AddrPort{stun1, stun2})
		}()
		me := netip.MustParseAddrPort("203.0.113.5:999")
		for range 2 {
			r := <-reqs
			var m stun.Message
			if err := stun.Decode(r.b, &m); err != nil {
				t.Fatal(err)
			}
			if r.to == stun1 {
				resp, ok := nat.Respond(r.b, me)
				if !ok {
					t.Fatal("Respond refused the client's request")
				}
				if cl.HandleResponse(resp, stun2) {
					t.Error("accepted an answer from the wrong server")
				}
				if !cl.HandleResponse(resp, netip.AddrPortFrom(netip.AddrFrom16(stun1.Addr().As16()), stun1.Port())) {
					t.Error("refused the answer (v4-mapped source)")
				}
				if cl.HandleResponse(resp, stun1) {
					t.Error("accepted a duplicate answer")
				}
				continue
			}
			er := stun.MustBuild(stun.NewTransactionIDSetter(m.TransactionID), stun.BindingError,
				stun.CodeBadRequest, stun.Fingerprint)
			if !cl.HandleResponse(er.Raw, stun2) {
				t.Error("refused an error response")
			}
		}
		<-done
		if perr != nil {
			t.Fatal(perr)
		}
		if rep.Servers[0].Reflexive != me {
			t.Errorf("server 1: %+v", rep.Servers[0])
		}
		var se *nat.ServerError
		if !errors.As(rep.Servers[1].Err, &se) || se.Code != 400 {
			t.Errorf("server 2: %+v", rep.Servers[1])
		}
		if rep.EndpointIndependent || rep.MappingVaries {
			t.Errorf("one answer cannot tell the mapping: %+v", rep)
		}
	})
}

func TestIsSTUN(t *testing.T) {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	wg := make([]byte, 148)
	wg[0] = 1
	copy(wg[4:], req[4:8]) // sender index equal to the cookie
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"binding request", req, true},
		{"wireguard initiation with cookie-like index", wg, false},
		{"glow control", append([]byte("GLC\x01"), req[4:]...), false},
		{"short", req[:19], false},
		{"trailing byte", append(append([]byte(nil), req...), 0), false},
		{"empty", nil, false},
	} {
		if got := nat.IsSTUN(tc.b); got != tc.want {
			t.Errorf("%s: IsSTUN = %v, want %v", tc.name, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { nat.IsSTUN(req) }); n != 0 {
		t.Errorf("IsSTUN allocates %v times", n)
	}
}

func TestRespond(t *testing.T) {
	// Padded, as glow's client pads (a reply is never larger than its request).
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("glow (reply <= request)"), stun.Fingerprint)
	for _, from := range []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.5:41641"),
		netip.MustParseAddrPort("[2001:db8::5]:41641"),
		netip.MustParseAddrPort("[::ffff:203.0.113.5]:41641"),
	} {
		resp, ok := nat.Respond(req.Raw, from)
		if !ok {
			t.Fatalf("%v: no response", from)
		}
		if len(resp) > len(req.Raw) {
			t.Errorf("%v: %d-byte answer to a %d-byte request", from, len(resp), len(req.Raw))
		}
		var m stun.Message
		var xa stun.XORMappedAddress
		if err := stun.Decode(resp, &m); err != nil {
			t.Fatal(err)
		}
		if err := m.Parse(&xa); err != nil {
			t.Fatal(err)
		}
		if err := stun.Fingerprint.Check(&m); err != nil {
			t.Errorf("fingerprint: %v", err)
		}
		got, _ := netip.AddrFromSlice(xa.IP)
		want := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if netip.AddrPortFrom(got.Unmap(), uint16(xa.Port)) != want || m.TransactionID != req.TransactionID || m.Type != stun.BindingSuccess {
			t.Errorf("%v: got %v %v", from, xa, m.Type)
		}
	}

	from := netip.MustParseAddrPort("203.0.113.5:1")
	badFP := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	badFP[len(badFP)-1] ^= 1
	for name, b := range map[string][]byte{
		"success, not request": stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw,
		"bad fingerprint":      badFP,
		"not stun":             []byte("GLC\x01hello, this is glow"),
		"smaller than answer":  stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw,
	} {
		if _, ok := nat.Respond(b, from); ok {
			t.Errorf("%s: answered", name)
		}
	}
	if _, ok := nat.Respond(req.Raw, netip.AddrPort{}); ok {
		t.Error("answered to an invalid address")
	}
}

func TestNewClientConfig(t *testing.T) {
	send := func([]byte, netip.AddrPort) error { return nil }
	for _, cfg := range []nat.ClientConfig{
		{},
		{Send: send, Attempts: 11},
		{Send: send, InitialRTO: -1},
		{Send: send, Timeout: -1},
	} {
		if _, err := nat.NewClient(cfg); err == nil {
			t.Errorf("NewClient(%+v) succeeded", cfg)
		}
	}
	cl, _ := nat.NewClient(nat.ClientConfig{Send: send})
	if _, err := cl.Probe(t.Context(), nil); err == nil {
		t.Error("Probe with no servers succeeded")
	}
	if _, err := cl.Probe(t.Context(), []netip.AddrPort{{}}); err == nil {
		t.Error("Probe with an invalid server succeeded")
	}
}
