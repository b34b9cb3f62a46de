// Package dnstest is the in-memory side of glow's DNS boundary: a fake
// upstream resolver on loopback with counters, so tests of the glow resolver
// (and of the overlay that runs it) can check what was forwarded, and over
// which transport, without touching the machine's real resolvers.
//
// Use: up := dnstest.NewUpstream(t, dnstest.Options{}); pass up.Addr as an
// upstream; query; assert on up.UDP.Load() and up.TCP.Load(). It is shaped
// like CoreDNS's plugin/pkg/dnstest and wireguard-go's conn/bindtest: real
// sockets on 127.0.0.1 are cheap and exercise the same code as production,
// so only the far end is fake.
package dnstest

import (
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// DefaultA is the address the upstream answers A queries with by default.
var DefaultA = netip.MustParseAddr("192.0.2.1")

// Options shape an Upstream's answers.
type Options struct {
	// Answer returns the answer records for q. Nil: one A record with
	// DefaultA for A queries, nothing for other types.
	Answer func(q dns.Question) []dns.RR
	// TruncateUDP makes every UDP reply empty with TC set, so clients
	// must retry over TCP.
	TruncateUDP bool
	// Rcode is the response code of every reply (default NOERROR); replies
	// with another code carry no answer.
	Rcode int
}

// Upstream is a fake resolver serving UDP and TCP on one loopback port.
type Upstream struct {
	Addr netip.AddrPort // UDP and TCP
	UDP  atomic.Int64   // queries received over UDP
	TCP  atomic.Int64   // queries received over TCP
	opts Options
}

// NewUpstream starts an upstream on 127.0.0.1; it stops when tb ends.
func NewUpstream(tb testing.TB, opts Options) *Upstream {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", itoa(port)))
	if err != nil {
		pc.Close()
		tb.Fatal(err)
	}
	u := &Upstream{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), opts: opts}
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { u.serve(w, r, false) })},
		{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { u.serve(w, r, true) })},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ActivateAndServe()
		}()
		<-started
		tb.Cleanup(func() {
			srv.Shutdown()
			<-done
		})
	}
	return u
}

func itoa(n int) string { return strconv.Itoa(n) }

func (u *Upstream) serve(w dns.ResponseWriter, r *dns.Msg, tcp bool) {
	if tcp {
		u.TCP.Add(1)
	} else {
		u.UDP.Add(1)
	}
	m := new(dns.Msg)
	m.SetRcode(r, u.opts.Rcode)
	m.RecursionAvailable = true
	if !tcp && u.opts.TruncateUDP {
		m.Truncated = true
		w.WriteMsg(m)
		return
	}
	if len(r.Question) == 1 && u.opts.Rcode == dns.RcodeSuccess {
		q := r.Question[0]
		if u.opts.Answer != nil {
			m.Answer = u.opts.Answer(q)
		} else if q.Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   DefaultA.AsSlice(),
			}}
		}
	}
	if !tcp {
		// Like a real server: fit the client's limit.
		size := dns.MinMsgSize
		if o := r.IsEdns0(); o != nil {
			size = max(size, int(o.UDPSize()))
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// DeadAddr returns a loopback address where nothing listens: UDP queries to
// it fail at once with "connection refused", TCP connects are refused.
func DeadAddr(tb testing.TB) netip.AddrPort {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	a := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	return a
}

// SilentAddr returns a loopback UDP address that receives queries and never
// answers, to exercise timeouts. It closes when tb ends.
func SilentAddr(tb testing.TB) netip.AddrPort {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}
