package dns

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"glow/dns/dnstest"
)

// BenchmarkLocalName is the cost of answering a glow name, without sockets.
func BenchmarkLocalName(b *testing.B) {
	s, err := New(Config{SelfUser: "alice", Names: testTable()})
	if err != nil {
		b.Fatal(err)
	}
	req := new(dns.Msg).SetQuestion("nas.alice.glow.", dns.TypeA)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if r := s.Handle(ctx, req, "udp"); len(r.Answer) != 1 {
			b.Fatal(r)
		}
	}
}

// benchUDP sends name from parallel clients, each with its own connected
// UDP socket and one query in flight, and reports queries per second.
func benchUDP(b *testing.B, ts *testServer, name string) {
	q, err := new(dns.Msg).SetQuestion(name, dns.TypeA).Pack()
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("udp", ts.addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 1500)
		for pb.Next() {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write(q); err != nil {
				b.Error(err)
				return
			}
			n, err := c.Read(buf)
			if err != nil || n < 12 || buf[3]&0x0f != 0 {
				b.Errorf("reply %x: %v", buf[:n], err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "qps")
}

// BenchmarkServeUDP is glow names over loopback UDP.
func BenchmarkServeUDP(b *testing.B) {
	benchUDP(b, startServer(b, Config{}), "nas.alice.glow.")
}

// BenchmarkForwardUDP is the same for a forwarded name, to a local
// upstream (miekg/dns) on loopback: the price of a forward.
func BenchmarkForwardUDP(b *testing.B) {
	up := dnstest.NewUpstream(b, dnstest.Options{})
	benchUDP(b, startServer(b, Config{Upstreams: []netip.AddrPort{up.Addr}}), "example.com.")
}

// benchLatency sends name from one client, one query at a time, and
// reports the median and 99th percentile round trip.
func benchLatency(b *testing.B, ts *testServer, name string) {
	q, err := new(dns.Msg).SetQuestion(name, dns.TypeA).Pack()
	if err != nil {
		b.Fatal(err)
	}
	c, err := net.Dial("udp", ts.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1500)
	var rtts []time.Duration
	for b.Loop() {
		t0 := time.Now()
		c.SetDeadline(t0.Add(2 * time.Second))
		if _, err := c.Write(q); err != nil {
			b.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil || n < 12 || buf[3]&0x0f != 0 {
			b.Fatalf("reply %x: %v", buf[:n], err)
		}
		rtts = append(rtts, time.Since(t0))
	}
	slices.Sort(rtts)
	at := func(f float64) float64 { return float64(rtts[int(f*float64(len(rtts)-1))].Nanoseconds()) / 1000 }
	b.ReportMetric(at(0.5), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// BenchmarkLatencyLocal is the round trip of one glow name query.
func BenchmarkLatencyLocal(b *testing.B) {
	benchLatency(b, startServer(b, Config{}), "nas.alice.glow.")
}

// BenchmarkLatencyForward is the round trip of one forwarded query (local
// upstream on loopback), for comparison.
func BenchmarkLatencyForward(b *testing.B) {
	up := dnstest.NewUpstream(b, dnstest.Options{})
	benchLatency(b, startServer(b, Config{Upstreams: []netip.AddrPort{up.Addr}}), "example.com.")
}
