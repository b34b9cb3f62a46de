package overlay

import (
	"context"
	"io"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"glow/link"
	"glow/overlay/api"
	"glow/relay"
)

// TestTrafficKinds: a batch is counted under its path's kind, with its
// handshake messages; a receive batch reaches the totals only at flush.
func TestTrafficKinds(t *testing.T) {
	var tc trafficCounters
	init1 := []byte{1, 0, 0, 0, 9, 9}               // a handshake initiation (type 1)
	data := []byte{4, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7} // transport data (type 4)
	tc.sent(&path{}, [][]byte{init1})
	tc.sent(&path{relay: true, stream: &link.Stream{}}, [][]byte{data, data})
	tc.sent(&path{stream: &link.Stream{}}, [][]byte{data})
	tc.sent(&path{turn: &relay.TURNClient{}}, [][]byte{data, data, data})

	var r rxTraffic
	r.add(trafficDirect, len(data), data[0])
	r.add(trafficRelay, 2, 2) // a response, relayed
	by, hsOut, hsIn := tc.snapshot()
	if by[trafficDirect].PacketsIn != 0 || hsIn != 0 {
		t.Fatalf("a batch not flushed is counted: %+v, %d handshakes in", by[trafficDirect], hsIn)
	}
	r.flush(&tc)
	r.flush(&tc) // nothing twice
	by, hsOut, hsIn = tc.snapshot()
	want := []api.PathTraffic{
		{Path: "direct", BytesOut: 6, PacketsOut: 1, BytesIn: 11, PacketsIn: 1},
		{Path: "relay", BytesOut: 22, PacketsOut: 2, BytesIn: 2, PacketsIn: 1},
		{Path: "stream", BytesOut: 11, PacketsOut: 1},
		{Path: "turn", BytesOut: 33, PacketsOut: 3},
	}
	for i := range want {
		if by[i] != want[i] {
			t.Errorf("%s: %+v, want %+v", want[i].Path, by[i], want[i])
		}
	}
	if hsOut != 1 || hsIn != 1 {
		t.Errorf("handshakes sent %d, received %d; want 1 and 1", hsOut, hsIn)
	}
}

// TestMetricsTraffic: TCP over the overlay between two nodes moves their
// direct byte and packet counters by at least what was carried, in both
// directions, and nothing else's; the Prometheus handler shows the same.
func TestMetricsTraffic(t *testing.T) {
	nodes := joinedNet(t, 2)
	a, b := nodes[0], nodes[1]
	beforeA, beforeB := a.Metrics(), b.Metrics()

	ip := b.Cert().IPv4
	ln, err := stackNet(b).ListenTCPAddrPort(netip.AddrPortFrom(ip, 7000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := a.Userspace().DialContext(ctx, "tcp", netip.AddrPortFrom(ip, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	const size = 256 << 10
	c.SetDeadline(time.Now().Add(20 * time.Second))
	go c.Write(make([]byte, size))
	if _, err := io.ReadFull(c, make([]byte, size)); err != nil {
		t.Fatalf("echo: %v", err)
	}
	c.Close()

	afterA, afterB := a.Metrics(), b.Metrics()
	for _, x := range []struct {
		name          string
		before, after api.Metrics
	}{{"a", beforeA, afterA}, {"b", beforeB, afterB}} {
		d0, d1 := x.before.Traffic[trafficDirect], x.after.Traffic[trafficDirect]
		t.Logf("%s direct: in %d B / %d pkts, out %d B / %d pkts during the echo", x.name,
			d1.BytesIn-d0.BytesIn, d1.PacketsIn-d0.PacketsIn, d1.BytesOut-d0.BytesOut, d1.PacketsOut-d0.PacketsOut)
		if d1.BytesIn-d0.BytesIn < size || d1.BytesOut-d0.BytesOut < size {
			t.Errorf("%s: direct bytes in +%d, out +%d; want each at least %d", x.name, d1.BytesIn-d0.BytesIn, d1.BytesOut-d0.BytesOut, size)
		}
		if d1.PacketsIn-d0.PacketsIn < size/MTU || d1.PacketsOut-d0.PacketsOut < size/MTU {
			t.Errorf("%s: direct packets in +%d, out +%d; want each at least %d", x.name, d1.PacketsIn-d0.PacketsIn, d1.PacketsOut-d0.PacketsOut, size/MTU)
		}
		for _, k := range []trafficKind{trafficRelay, trafficStream, trafficTURN} {
			if x.after.Traffic[k] != (api.PathTraffic{Path: trafficNames[k]}) {
				t.Errorf("%s: %+v, want nothing over %s", x.name, x.after.Traffic[k], trafficNames[k])
			}
		}
		if x.after.Peers["direct"] != 1 || len(x.after.Peers) != 1 {
			t.Errorf("%s: peers %v, want one direct", x.name, x.after.Peers)
		}
		if x.after.CertSecondsLeft <= 0 {
			t.Errorf("%s: certificate seconds left %v", x.name, x.after.CertSecondsLeft)
		}
		if _, ok := x.after.Drops["bind/unknown-source"]; !ok {
			t.Errorf("%s: drops lack the Bind's: %v", x.name, x.after.Drops)
		}
	}
	if hs := afterA.HandshakesSent + afterB.HandshakesSent; hs < 2 || afterA.HandshakesReceived+afterB.HandshakesReceived < 2 {
		t.Errorf("handshake messages: a sent %d received %d, b sent %d received %d; want an initiation and a response",
			afterA.HandshakesSent, afterA.HandshakesReceived, afterB.HandshakesSent, afterB.HandshakesReceived)
	}

	rec := httptest.NewRecorder()
	a.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	for _, want := range []string{`glow_transmit_bytes_total{path="direct"}`, `glow_peers{state="direct"} 1`,
		`glow_drops_total{reason="bind/unknown-source"}`, `glow_node_info{node="n1.alice"} 1`, "process_resident_memory_bytes"} {
		if !strings.Contains(text, want) {
			t.Errorf("the handler's text lacks %s:\n%s", want, text)
		}
	}
}

// TestMetricsRelayTraffic: a - b - c on a line, a reaches c through b. An
// echo of 20000 bytes from a to c moves a's and c's relay counters by at
// least that much each way, and b's bytes forwarded for others by at least
// twice that (both directions); a counts b direct and c relayed.
func TestMetricsRelayTraffic(t *testing.T) {
	nodes, _, _ := lineNet(t, []string{"a", "b", "c"})
	a, b, c := nodes[0], nodes[1], nodes[2]
	waitFor(t, 30*time.Second, "a to route to c over b", func() bool {
		path, via := routeOf(a, "c")
		return path == "relay" && len(via) == 1
	})
	a0, b0, c0 := a.Metrics(), b.Metrics(), c.Metrics()
	const size = 20000 // tcpEcho's message
	tcpEcho(t, a, c, 7200)
	a1, b1, c1 := a.Metrics(), b.Metrics(), c.Metrics()

	ra, rc := a1.Traffic[trafficRelay], c1.Traffic[trafficRelay]
	t.Logf("a relay: out +%d B, in +%d B; c relay: out +%d B, in +%d B; b forwarded +%d B",
		ra.BytesOut-a0.Traffic[trafficRelay].BytesOut, ra.BytesIn-a0.Traffic[trafficRelay].BytesIn,
		rc.BytesOut-c0.Traffic[trafficRelay].BytesOut, rc.BytesIn-c0.Traffic[trafficRelay].BytesIn,
		b1.RelayForwardedBytes-b0.RelayForwardedBytes)
	for _, x := range []struct {
		name   string
		before api.PathTraffic
		after  api.PathTraffic
	}{{"a", a0.Traffic[trafficRelay], ra}, {"c", c0.Traffic[trafficRelay], rc}} {
		if x.after.BytesOut-x.before.BytesOut < size || x.after.BytesIn-x.before.BytesIn < size {
			t.Errorf("%s: relay bytes out +%d, in +%d; want each at least %d", x.name,
				x.after.BytesOut-x.before.BytesOut, x.after.BytesIn-x.before.BytesIn, size)
		}
	}
	if d := b1.RelayForwardedBytes - b0.RelayForwardedBytes; d < 2*size {
		t.Errorf("b forwarded +%d bytes for others, want at least %d", d, 2*size)
	}
	if a1.Peers["direct"] != 1 || a1.Peers["relay"] != 1 {
		t.Errorf("a's peers %v, want b direct and c relayed", a1.Peers)
	}
}
