package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"glow/internal/leaktest"
	"glow/overlay/api"
)

func snapshot(direct, relayed uint64) api.Metrics {
	return api.Metrics{
		Node: "nas.alice",
		Traffic: []api.PathTraffic{
			{Path: "direct", BytesIn: direct, BytesOut: 2 * direct, PacketsIn: direct / 100, PacketsOut: direct / 50},
			{Path: "relay", BytesIn: relayed},
			{Path: "stream"},
			{Path: "turn"},
		},
		Drops:               map[string]uint64{"bind/unknown-source": 3, "relay/no-path": 0},
		Peers:               map[string]int{"direct": 2, "relay": 1},
		HandshakesSent:      4,
		HandshakesReceived:  5,
		RelayForwardedBytes: 700,
		CertSecondsLeft:     3600,
		DNS:                 map[string]uint64{"local": 9, "forwarded": 1},
	}
}

// TestNamesAndLabels: the exposition has glow's names, every label value
// of the fixed sets (zero included), and the snapshot's values.
func TestNamesAndLabels(t *testing.T) {
	m := snapshot(1000, 10)
	reg := NewRegistry(func() api.Metrics { return m })
	want := `
# HELP glow_certificate_remaining_seconds Seconds until this node's certificate expires (negative once it has).
# TYPE glow_certificate_remaining_seconds gauge
glow_certificate_remaining_seconds 3600
# HELP glow_dns_queries_total The overlay resolver's queries, by result.
# TYPE glow_dns_queries_total counter
glow_dns_queries_total{result="formerr"} 0
glow_dns_queries_total{result="forwarded"} 1
glow_dns_queries_total{result="local"} 9
glow_dns_queries_total{result="notimp"} 0
glow_dns_queries_total{result="refused"} 0
glow_dns_queries_total{result="servfail"} 0
# HELP glow_drops_total Datagrams, records and queries dropped, by reason.
# TYPE glow_drops_total counter
glow_drops_total{reason="bind/unknown-source"} 3
glow_drops_total{reason="relay/no-path"} 0
# HELP glow_handshakes_total WireGuard handshake messages (initiations and responses).
# TYPE glow_handshakes_total counter
glow_handshakes_total{direction="received"} 5
glow_handshakes_total{direction="sent"} 4
# HELP glow_node_info This node (always 1).
# TYPE glow_node_info gauge
glow_node_info{node="nas.alice"} 1
# HELP glow_peers Known peers by their path now.
# TYPE glow_peers gauge
glow_peers{state="direct"} 2
glow_peers{state="offline"} 0
glow_peers{state="relay"} 1
glow_peers{state="stream"} 0
# HELP glow_receive_bytes_total WireGuard bytes received, by the path they came.
# TYPE glow_receive_bytes_total counter
glow_receive_bytes_total{path="direct"} 1000
glow_receive_bytes_total{path="relay"} 10
glow_receive_bytes_total{path="stream"} 0
glow_receive_bytes_total{path="turn"} 0
# HELP glow_relay_forwarded_bytes_total Bytes of relay frames passed on for other nodes.
# TYPE glow_relay_forwarded_bytes_total counter
glow_relay_forwarded_bytes_total 700
# HELP glow_transmit_packets_total WireGuard datagrams sent, by the path they took.
# TYPE glow_transmit_packets_total counter
glow_transmit_packets_total{path="direct"} 20
glow_transmit_packets_total{path="relay"} 0
glow_transmit_packets_total{path="stream"} 0
glow_transmit_packets_total{path="turn"} 0
`
	names := []string{"glow_certificate_remaining_seconds", "glow_dns_queries_total", "glow_drops_total",
		"glow_handshakes_total", "glow_node_info", "glow_peers", "glow_receive_bytes_total",
		"glow_relay_forwarded_bytes_total", "glow_transmit_packets_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// The names follow Prometheus' conventions (promlint: _total on
	// counters, base units, no colons).
	problems, err := testutil.GatherAndLint(reg, names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(&collector{src: func() api.Metrics { return m }}); n != 4*4+2+4+2+1+1+6+1 {
		t.Errorf("%d series, want %d", n, 4*4+2+4+2+1+1+6+1)
	}
}

// TestValuesMove: each scrape reads the source anew; no DNS series when
// the resolver is off.
func TestValuesMove(t *testing.T) {
	m := snapshot(1000, 0)
	reg := NewRegistry(func() api.Metrics { return m })
	expect := func(v string) {
		t.Helper()
		want := `
# HELP glow_transmit_bytes_total WireGuard bytes sent, by the path they took.
# TYPE glow_transmit_bytes_total counter
glow_transmit_bytes_total{path="direct"} ` + v + `
glow_transmit_bytes_total{path="relay"} 0
glow_transmit_bytes_total{path="stream"} 0
glow_transmit_bytes_total{path="turn"} 0
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "glow_transmit_bytes_total"); err != nil {
			t.Fatal(err)
		}
	}
	expect("2000")
	m = snapshot(5000, 0)
	expect("10000")
	if n, err := testutil.GatherAndCount(reg, "glow_dns_queries_total"); err != nil || n != 6 {
		t.Fatalf("%d DNS series (%v), want 6", n, err)
	}
	m.DNS = nil
	if n, err := testutil.GatherAndCount(reg, "glow_dns_queries_total"); err != nil || n != 0 {
		t.Errorf("%d DNS series with the resolver off (%v), want none", n, err)
	}
}

// TestListenAddr: loopback unless an IP address says otherwise.
func TestListenAddr(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{in: "9100", want: "127.0.0.1:9100"},
		{in: ":9100", want: "127.0.0.1:9100"},
		{in: "127.0.0.1:9100", want: "127.0.0.1:9100"},
		{in: "[::1]:9100", want: "[::1]:9100"},
		{in: "0.0.0.0:9100", want: "0.0.0.0:9100"}, // explicit: taken as given
		{in: "localhost:9100", want: "localhost:9100"},
		{in: ":0", err: "want 1 to 65535"},
		{in: "70000", err: "want PORT"},
		{in: "host", err: "want PORT"},
		{in: "no-such-host.invalid:9100", err: "no-such-host.invalid"},
	} {
		got, err := ListenAddr(context.Background(), c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %q, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

// TestServe: /metrics answers the text format, anything else 404.
func TestServe(t *testing.T) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := snapshot(1, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, Handler(NewRegistry(func() api.Metrics { return m }))) }()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `glow_receive_bytes_total{path="relay"} 2`) {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if code, _ := get("/"); code != 404 {
		t.Errorf("/: %d, want 404", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// countingListener counts the connections accepted, those open now and
// the most open at once.
type countingListener struct {
	net.Listener
	n, open, maxOpen atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	l.n.Add(1)
	open := l.open.Add(1)
	for m := l.maxOpen.Load(); open > m && !l.maxOpen.CompareAndSwap(m, open); m = l.maxOpen.Load() {
	}
	return &countedConn{Conn: c, l: l}, nil
}

// countedConn takes itself off its listener's open count when closed.
type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// parkedOnLimit reports whether a goroutine is blocked in netutil's
// LimitListener, waiting for a connection to end before it accepts
// another (one only passing through is not).
func parkedOnLimit() bool {
	buf := make([]byte, 1<<20)
	for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		head, _, _ := strings.Cut(g, "\n")
		if strings.Contains(head, "[select") && strings.Contains(g, "netutil.(*limitListener).acquire") {
			return true
		}
	}
	return false
}

// TestAttackMetricsConnections: a local program opening 64 idle
// connections to the metrics port gets at most MaxConns of them served at
// once (each ends after the header timeout), so it cannot hold the
// daemon's file descriptors; once they are gone a scrape is served.
func TestAttackMetricsConnections(t *testing.T) {
	leaktest.Check(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &countingListener{Listener: inner}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := snapshot(1, 2)
	go Serve(ctx, ln, Handler(NewRegistry(func() api.Metrics { return m })))
	var idle []net.Conn
	for range 64 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	// Counted once the server has taken what it will: its accept loop is
	// parked on the limit (netutil's semaphore), not on the kernel's
	// backlog, which holds 64-MaxConns more. A pause instead would pass
	// vacuously when the server had not got round to accepting yet.
	for deadline := time.Now().Add(10 * time.Second); !parkedOnLimit(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server's accept loop is not parked on its connection limit (%d accepted)", ln.n.Load())
		}
	}
	// The most held at once, not all accepted: on a slow machine the header
	// timeout may end some before the loop above sees the limit, and the
	// server then rightly accepts more.
	got := ln.maxOpen.Load()
	t.Logf("64 idle connections: %d accepted, at most %d held at once by the server (limit %d)", ln.n.Load(), got, MaxConns)
	if got > MaxConns {
		t.Errorf("%d connections held at once, want at most %d", got, MaxConns)
	}
	for _, c := range idle {
		c.Close()
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + inner.Addr().String() + "/metrics")
	if err != nil {
		t.Fatalf("a scrape after the idle connections: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("scrape: %s", resp.Status)
	}
}
