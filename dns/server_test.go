package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"glow/dns/dnstest"
	"glow/internal/leaktest"
)

var (
	nasV4    = netip.MustParseAddr("100.64.0.1")
	nasV6    = netip.MustParseAddr("fd00:676c:6f77::1")
	laptopV4 = netip.MustParseAddr("100.64.0.2")
	piV4     = netip.MustParseAddr("100.64.1.1")
	piV6     = netip.MustParseAddr("fd12:3456:789a::5")
)

func testTable() *Table {
	return NewTable(
		Host{User: "alice", Node: "nas", V4: nasV4, V6: nasV6},
		Host{User: "alice", Node: "laptop", V4: laptopV4},
		Host{User: "Bob", Node: "PI", V4: piV4, V6: piV6},
	)
}

// testServer is a Server serving UDP and TCP on one 127.0.0.1 port.
type testServer struct {
	*Server
	addr string
}

// startServer starts a server for cfg (Names defaults to testTable, SelfUser
// to alice) and stops it, checking that both Serve calls return, when t ends.
func startServer(tb testing.TB, cfg Config) *testServer {
	tb.Helper()
	if cfg.Names == nil {
		cfg.Names = testTable()
	}
	if cfg.SelfUser == "" {
		cfg.SelfUser = "alice"
	}
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	// UDP and TCP on one port: the UDP port is free, the same TCP port may
	// not be (other tests on this machine): try another, a bounded number
	// of times.
	var pc net.PacketConn
	var ln net.Listener
	var addr string
	for try := 0; ; try++ {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		addr = pc.LocalAddr().String()
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		pc.Close()
		if try == 20 {
			tb.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() { errs <- s.ServeUDP(ctx, pc) })
	wg.Go(func() { errs <- s.ServeTCP(ctx, ln) })
	tb.Cleanup(func() {
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second): // bounds a failing test
			tb.Error("ServeUDP/ServeTCP did not return 30 s after cancel")
		}
		close(errs)
		for err := range errs {
			if err != nil {
				tb.Errorf("serve: %v", err)
			}
		}
	})
	return &testServer{Server: s, addr: addr}
}

func (ts *testServer) query(tb testing.TB, network, name string, qtype uint16) *dns.Msg {
	tb.Helper()
	m := new(dns.Msg).SetQuestion(name, qtype)
	return ts.exchange(tb, network, m)
}

func (ts *testServer) exchange(tb testing.TB, network string, m *dns.Msg) *dns.Msg {
	tb.Helper()
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, ts.addr)
	if err != nil {
		tb.Fatalf("%s %s %s: %v", network, m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], err)
	}
	if r.Id != m.Id {
		tb.Fatalf("reply id %d, query id %d", r.Id, m.Id)
	}
	return r
}

// summary renders the parts of a reply the tests compare.
func summary(m *dns.Msg) string {
	var b strings.Builder
	b.WriteString(dns.RcodeToString[m.Rcode])
	for _, rr := range m.Answer {
		h := rr.Header()
		fmt.Fprintf(&b, " %s/%s/%d", h.Name, dns.TypeToString[h.Rrtype], h.Ttl)
		switch rr := rr.(type) {
		case *dns.A:
			fmt.Fprintf(&b, "=%s", rr.A)
		case *dns.AAAA:
			fmt.Fprintf(&b, "=%s", rr.AAAA)
		case *dns.PTR:
			fmt.Fprintf(&b, "=%s", rr.Ptr)
		}
	}
	for _, rr := range m.Ns {
		fmt.Fprintf(&b, " ns:%s/%s", rr.Header().Name, dns.TypeToString[rr.Header().Rrtype])
	}
	return b.String()
}

func reverse(tb testing.TB, a string) string {
	r, err := dns.ReverseAddr(a)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func TestLocalNames(t *testing.T) {
	leaktest.Check(t)
	ts := startServer(t, Config{})
	tests := []struct {
		name  string
		qtype uint16
		want  string
	}{
		{"nas.alice.glow.", dns.TypeA, "NOERROR nas.alice.glow./A/30=100.64.0.1"},
		{"nas.alice.glow.", dns.TypeAAAA, "NOERROR nas.alice.glow./AAAA/30=fd00:676c:6f77::1"},
		{"NaS.ALICE.Glow.", dns.TypeA, "NOERROR NaS.ALICE.Glow./A/30=100.64.0.1"},
		{"pi.bob.glow.", dns.TypeANY, "NOERROR pi.bob.glow./A/30=100.64.1.1 pi.bob.glow./AAAA/30=fd12:3456:789a::5"},
		{"laptop.alice.glow.", dns.TypeAAAA, "NOERROR ns:glow./SOA"}, // NODATA, not NXDOMAIN
		{"nas.alice.glow.", dns.TypeMX, "NOERROR ns:glow./SOA"},      // NODATA
		{"ghost.alice.glow.", dns.TypeA, "NXDOMAIN ns:glow./SOA"},    // unknown node
		{"nas.carol.glow.", dns.TypeA, "NXDOMAIN ns:glow./SOA"},      // unknown user
		{"x.nas.alice.glow.", dns.TypeA, "NXDOMAIN ns:glow./SOA"},    // too deep
		{"alice.glow.", dns.TypeA, "NOERROR ns:glow./SOA"},           // USER.SUFFIX: NODATA
		{"glow.", dns.TypeA, "NOERROR ns:glow./SOA"},                 // SUFFIX: NODATA
		{"glow.", dns.TypeSOA, "NOERROR glow./SOA/30"},               // the apex SOA
		{"nas.", dns.TypeA, "NOERROR nas./A/30=100.64.0.1"},          // short name
		{"LAPTOP.", dns.TypeA, "NOERROR LAPTOP./A/30=100.64.0.2"},    // short name, case
		{"laptop.", dns.TypeAAAA, "NOERROR"},                         // short name NODATA
		{"pi.", dns.TypeA, "REFUSED"},                                // bob's node is no short name; no upstreams
		{"example.com.", dns.TypeA, "REFUSED"},                       // no upstreams
		{reverse(t, "100.64.0.1"), dns.TypePTR, "NOERROR 1.0.64.100.in-addr.arpa./PTR/30=nas.alice.glow."},
		{reverse(t, "fd12:3456:789a::5"), dns.TypePTR, "NOERROR " + reverse(t, "fd12:3456:789a::5") + "/PTR/30=pi.bob.glow."},
		{reverse(t, "100.64.9.9"), dns.TypePTR, "NXDOMAIN ns:in-addr.arpa./SOA"},     // unknown, overlay range
		{reverse(t, "fd00:676c:6f77::99"), dns.TypePTR, "NXDOMAIN ns:ip6.arpa./SOA"}, // unknown, overlay ULA
		{reverse(t, "192.0.2.7"), dns.TypePTR, "REFUSED"},                            // outside: forwarded (none)
		{reverse(t, "100.64.0.1"), dns.TypeA, "NOERROR ns:in-addr.arpa./SOA"},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(network+"/"+tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
				r := ts.query(t, network, tt.name, tt.qtype)
				if got := summary(r); got != tt.want {
					t.Errorf("got  %s\nwant %s", got, tt.want)
				}
				if r.Rcode != dns.RcodeRefused && !r.Authoritative {
					t.Errorf("local answer without AA")
				}
				if !strings.EqualFold(r.Question[0].Name, tt.name) || r.Question[0].Name != tt.name {
					t.Errorf("question %q, want %q echoed", r.Question[0].Name, tt.name)
				}
			})
		}
	}
}

func TestSuffixAndNoTrailingDot(t *testing.T) {
	s, err := New(Config{Suffix: "Mesh.Example.", Names: testTable()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range []string{"nas.alice.mesh.example", "nas.alice.mesh.example."} {
		req := &dns.Msg{Question: []dns.Question{{Name: name, Qtype: dns.TypeA, Qclass: dns.ClassINET}}}
		req.Id = 7
		r := s.Handle(ctx, req, "udp")
		if got, want := summary(r), "NOERROR nas.alice.mesh.example./A/30=100.64.0.1"; got != want {
			t.Errorf("%s: got %s, want %s", name, got, want)
		}
		if _, err := r.Pack(); err != nil {
			t.Errorf("%s: reply does not pack: %v", name, err)
		}
		if r.Id != 7 {
			t.Errorf("id %d", r.Id)
		}
	}
	r := s.Handle(ctx, new(dns.Msg).SetQuestion("ghost.alice.mesh.example.", dns.TypeA), "udp")
	if got, want := summary(r), "NXDOMAIN ns:mesh.example./SOA"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	r = s.Handle(ctx, new(dns.Msg).SetQuestion("nas.", dns.TypeA), "udp")
	if got, want := summary(r), "REFUSED"; got != want {
		t.Errorf("short name without SelfUser: got %s, want %s", got, want)
	}
}

func TestNamesUpdateLive(t *testing.T) {
	leaktest.Check(t)
	tab := testTable()
	ts := startServer(t, Config{Names: tab})
	check := func(name string, qtype uint16, want string) {
		t.Helper()
		if got := summary(ts.query(t, "udp", name, qtype)); got != want {
			t.Errorf("%s: got %s, want %s", name, got, want)
		}
	}
	check("new.alice.glow.", dns.TypeA, "NXDOMAIN ns:glow./SOA")
	tab.Set(Host{User: "alice", Node: "new", V4: netip.MustParseAddr("100.64.0.9")})
	check("new.alice.glow.", dns.TypeA, "NOERROR new.alice.glow./A/30=100.64.0.9")
	check(reverse(t, "100.64.0.9"), dns.TypePTR, "NOERROR 9.0.64.100.in-addr.arpa./PTR/30=new.alice.glow.")
	tab.Set(Host{User: "alice", Node: "new", V4: netip.MustParseAddr("100.64.0.10")})
	check("new.alice.glow.", dns.TypeA, "NOERROR new.alice.glow./A/30=100.64.0.10")
	check(reverse(t, "100.64.0.9"), dns.TypePTR, "NXDOMAIN ns:in-addr.arpa./SOA")
	tab.Remove("alice", "NEW")
	check("new.alice.glow.", dns.TypeA, "NXDOMAIN ns:glow./SOA")
	tab.Replace([]Host{{User: "carol", Node: "tv", V4: netip.MustParseAddr("100.64.5.5")}})
	check("nas.alice.glow.", dns.TypeA, "NXDOMAIN ns:glow./SOA")
	check("tv.carol.glow.", dns.TypeA, "NOERROR tv.carol.glow./A/30=100.64.5.5")
}

func TestMalformed(t *testing.T) {
	leaktest.Check(t)
	ts := startServer(t, Config{})
	c, err := net.Dial("udp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good, _ := new(dns.Msg).SetQuestion("nas.alice.glow.", dns.TypeA).Pack()

	// Header claiming 5 questions, then nothing: FORMERR with the same id.
	claims := []byte{0xbe, 0xef, 0x01, 0x00, 0, 5, 0, 0, 0, 0, 0, 0}
	// Oversized: a good query padded past MaxQuerySize.
	oversized := append(append([]byte(nil), good...), make([]byte, MaxQuerySize)...)
	oversized[0], oversized[1] = 0xbe, 0xef
	// Two questions: FORMERR.
	two := new(dns.Msg).SetQuestion("nas.alice.glow.", dns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	two.Id = 0xbeef
	twoWire, err := two.Pack()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		pkt   []byte
		reply bool
	}{
		{"short", []byte{1, 2, 3}, false},
		{"empty", []byte{}, false},
		{"response", append([]byte{0xbe, 0xef, 0x81, 0x80}, make([]byte, 8)...), false},
		{"claims", claims, true},
		{"oversized", oversized, true},
		{"two questions", twoWire, true},
		{"garbage", []byte("\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff garbage"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Write(tc.pkt); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			buf := make([]byte, 1500)
			n, err := c.Read(buf)
			if !tc.reply {
				if err == nil {
					t.Fatalf("got a reply to a message that must be dropped: %x", buf[:n])
				}
				return
			}
			if err != nil {
				t.Fatalf("no FORMERR: %v", err)
			}
			r := new(dns.Msg)
			if err := r.Unpack(buf[:n]); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if r.Id != 0xbeef || !r.Response || r.Rcode != dns.RcodeFormatError {
				t.Fatalf("reply %v, want FORMERR with id 0xbeef", r)
			}
		})
		// The server still answers.
		if got := summary(ts.query(t, "udp", "nas.alice.glow.", dns.TypeA)); !strings.HasPrefix(got, "NOERROR") {
			t.Fatalf("after %s: %s", tc.name, got)
		}
	}
	st := ts.Stats()
	if st.DropShort != 2 || st.DropResponse != 1 || st.FormErr != 4 {
		t.Errorf("stats %+v, want DropShort 2, DropResponse 1, FormErr 4", st)
	}

	// TCP: garbage in a frame gets FORMERR; a short frame hangs up; the
	// server goes on.
	tc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.Write(append([]byte{0, byte(len(claims))}, claims...))
	tc.SetReadDeadline(time.Now().Add(2 * time.Second))
	co := &dns.Conn{Conn: tc}
	r, err := co.ReadMsg()
	if err != nil || r.Rcode != dns.RcodeFormatError || r.Id != 0xbeef {
		t.Fatalf("tcp FORMERR: %v %v", r, err)
	}
	tc.Write([]byte{0, 3, 1, 2, 3})
	if _, err := co.ReadMsg(); err == nil {
		t.Fatal("tcp: reply to a 3-byte message")
	}
	if got := summary(ts.query(t, "tcp", "nas.alice.glow.", dns.TypeA)); !strings.HasPrefix(got, "NOERROR") {
		t.Fatalf("tcp after garbage: %s", got)
	}
}

func TestEDNS(t *testing.T) {
	leaktest.Check(t)
	ts := startServer(t, Config{})
	m := new(dns.Msg).SetQuestion("nas.alice.glow.", dns.TypeA)
	m.SetEdns0(4096, false)
	r := ts.exchange(t, "udp", m)
	if o := r.IsEdns0(); o == nil || o.UDPSize() != ednsSize {
		t.Errorf("reply OPT %v, want one with size %d", o, ednsSize)
	}
	m = new(dns.Msg).SetQuestion("nas.alice.glow.", dns.TypeA)
	m.SetEdns0(4096, false)
	m.IsEdns0().SetVersion(1)
	if r := ts.exchange(t, "udp", m); r.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: rcode %s, want BADVERS", dns.RcodeToString[r.Rcode])
	}
	m = new(dns.Msg).SetQuestion("nas.alice.glow.", dns.TypeA)
	m.Opcode = dns.OpcodeNotify
	if r := ts.exchange(t, "udp", m); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: rcode %s, want NOTIMP", dns.RcodeToString[r.Rcode])
	}
}

// manyA answers every query with n A records (about 16 bytes each).
func manyA(n int) func(q dns.Question) []dns.RR {
	return func(q dns.Question) []dns.RR {
		var rrs []dns.RR
		for i := range n {
			rrs = append(rrs, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}).AsSlice(),
			})
		}
		return rrs
	}
}

func TestForward(t *testing.T) {
	leaktest.Check(t)
	up := dnstest.NewUpstream(t, dnstest.Options{})
	ts := startServer(t, Config{Upstreams: []netip.AddrPort{up.Addr}})
	want := "NOERROR example.com./A/60=192.0.2.1"
	if got := summary(ts.query(t, "udp", "example.com.", dns.TypeA)); got != want {
		t.Errorf("udp: got %s, want %s", got, want)
	}
	if u, tc := up.UDP.Load(), up.TCP.Load(); u != 1 || tc != 0 {
		t.Errorf("upstream saw udp %d tcp %d, want 1 0", u, tc)
	}
	if got := summary(ts.query(t, "tcp", "example.com.", dns.TypeA)); got != want {
		t.Errorf("tcp: got %s, want %s", got, want)
	}
	if u, tc := up.UDP.Load(), up.TCP.Load(); u != 1 || tc != 1 {
		t.Errorf("upstream saw udp %d tcp %d, want 1 1", u, tc)
	}
	// Reverse names outside the overlay and unknown short names go up too.
	ts.query(t, "udp", reverse(t, "192.0.2.7"), dns.TypePTR)
	ts.query(t, "udp", "com.", dns.TypeNS)
	if u := up.UDP.Load(); u != 3 {
		t.Errorf("upstream saw %d udp queries, want 3", u)
	}
	// Glow names never do.
	ts.query(t, "udp", "ghost.alice.glow.", dns.TypeA)
	ts.query(t, "udp", reverse(t, "100.64.9.9"), dns.TypePTR)
	if u := up.UDP.Load(); u != 3 {
		t.Errorf("glow names leaked upstream: %d udp queries, want 3", u)
	}
	if st := ts.Stats(); st.Forwarded != 4 {
		t.Errorf("Forwarded = %d, want 4", st.Forwarded)
	}
}

func TestForwardTruncatedRetriesTCP(t *testing.T) {
	leaktest.Check(t)
	up := dnstest.NewUpstream(t, dnstest.Options{TruncateUDP: true})
	ts := startServer(t, Config{Upstreams: []netip.AddrPort{up.Addr}})
	r := ts.query(t, "udp", "example.com.", dns.TypeA)
	if got, want := summary(r), "NOERROR example.com./A/60=192.0.2.1"; got != want || r.Truncated {
		t.Errorf("got %s tc=%v, want %s", got, r.Truncated, want)
	}
	if u, tc := up.UDP.Load(), up.TCP.Load(); u != 1 || tc != 1 {
		t.Errorf("upstream saw udp %d tcp %d, want 1 1", u, tc)
	}
}

func TestOversizedReplyTruncatedOverUDP(t *testing.T) {
	leaktest.Check(t)
	up := dnstest.NewUpstream(t, dnstest.Options{Answer: manyA(100)})
	ts := startServer(t, Config{Upstreams: []netip.AddrPort{up.Addr}})

	r := ts.query(t, "udp", "big.example.", dns.TypeA)
	if !r.Truncated || len(r.Answer) >= 100 {
		t.Errorf("udp: tc=%v with %d answers, want TC and fewer than 100", r.Truncated, len(r.Answer))
	}
	r.Compress = true
	if n, _ := r.Pack(); len(n) > dns.MinMsgSize {
		t.Errorf("udp reply is %d bytes, over 512", len(n))
	}
	r = ts.query(t, "tcp", "big.example.", dns.TypeA)
	if r.Truncated || len(r.Answer) != 100 {
		t.Errorf("tcp: tc=%v with %d answers, want all 100", r.Truncated, len(r.Answer))
	}
	// A client with a large EDNS buffer gets it all over UDP.
	m := new(dns.Msg).SetQuestion("big.example.", dns.TypeA)
	m.SetEdns0(4096, false)
	r = ts.exchange(t, "udp", m)
	if r.Truncated || len(r.Answer) != 100 {
		t.Errorf("udp edns 4096: tc=%v with %d answers, want all 100", r.Truncated, len(r.Answer))
	}
	if st := ts.Stats(); st.Truncated != 1 {
		t.Errorf("Truncated = %d, want 1", st.Truncated)
	}
}

func TestUpstreamFailure(t *testing.T) {
	leaktest.Check(t)
	good := dnstest.NewUpstream(t, dnstest.Options{})
	dead := dnstest.DeadAddr(t)
	silent := dnstest.SilentAddr(t)
	failing := dnstest.NewUpstream(t, dnstest.Options{Rcode: dns.RcodeServerFailure})

	for _, tc := range []struct {
		name string
		ups  []netip.AddrPort
		want string
	}{
		{"dead", []netip.AddrPort{dead}, "SERVFAIL"},
		{"silent", []netip.AddrPort{silent}, "SERVFAIL"},
		{"dead then good", []netip.AddrPort{dead, good.Addr}, "NOERROR example.com./A/60=192.0.2.1"},
		{"silent then good", []netip.AddrPort{silent, good.Addr}, "NOERROR example.com./A/60=192.0.2.1"},
		{"servfail then good", []netip.AddrPort{failing.Addr, good.Addr}, "NOERROR example.com./A/60=192.0.2.1"},
		{"servfail only", []netip.AddrPort{failing.Addr}, "SERVFAIL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, Config{Upstreams: tc.ups, UpstreamTimeout: 200 * time.Millisecond})
			for _, network := range []string{"udp", "tcp"} {
				if got := summary(ts.query(t, network, "example.com.", dns.TypeA)); got != tc.want {
					t.Errorf("%s: got %s, want %s", network, got, tc.want)
				}
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Names: testTable(), Suffix: "bad suffix"},
		{Names: testTable(), SelfUser: "a.b"},
		{Names: testTable(), Upstreams: []netip.AddrPort{{}}},
		{Names: testTable(), Upstreams: []netip.AddrPort{netip.AddrPortFrom(ServiceV4, 53)}},
		{Names: testTable(), Prefixes: []netip.Prefix{{}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestListenAndServe(t *testing.T) {
	leaktest.Check(t)
	s, err := New(Config{Names: testTable()})
	if err != nil {
		t.Fatal(err)
	}
	// Find a free port, then serve UDP and TCP on it.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ctx, []netip.AddrPort{addr}) }()
	ts := &testServer{Server: s, addr: addr.String()}
	deadline := time.Now().Add(30 * time.Second) // bounds a failing test
	for _, network := range []string{"udp", "tcp"} {
		for {
			c := &dns.Client{Net: network, Timeout: 200 * time.Millisecond}
			r, _, err := c.Exchange(new(dns.Msg).SetQuestion("nas.alice.glow.", dns.TypeA), ts.addr)
			if err == nil {
				if len(r.Answer) != 1 {
					t.Errorf("%s: %v", network, r)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", network, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("ListenAndServe: %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second): // bounds a failing test
		t.Fatal("ListenAndServe did not return 30 s after cancel")
	}
}

func TestParseReverse(t *testing.T) {
	for _, a := range []string{"100.64.0.1", "0.0.0.0", "255.255.255.255", "fd00:676c:6f77::53", "::1", "2001:db8::ff"} {
		want := netip.MustParseAddr(a)
		got, ok := parseReverse(reverse(t, a))
		if !ok || got != want {
			t.Errorf("parseReverse(%s) = %v %v, want %v", reverse(t, a), got, ok, want)
		}
	}
	for _, name := range []string{
		"64.100.in-addr.arpa.", "1.0.64.100.100.in-addr.arpa.", "256.0.64.100.in-addr.arpa.",
		"01.0.64.100.in-addr.arpa.", "a.0.64.100.in-addr.arpa.", ".0.64.100.in-addr.arpa.",
		"1.0.ip6.arpa.", "example.com.",
		strings.Repeat("g.", 32) + "ip6.arpa.",
	} {
		if got, ok := parseReverse(name); ok {
			t.Errorf("parseReverse(%q) = %v, want failure", name, got)
		}
	}
}
