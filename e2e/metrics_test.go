package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"glow/e2e/lab"
)

// scrape GETs http://addr/metrics from inside h (the connection is made in
// h's namespace) and parses the Prometheus text format.
func scrape(h *lab.Host, addr string) (map[string]*dto.MetricFamily, error) {
	var c net.Conn
	if err := h.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}); err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// value is the value of family name's series with label path=label (or
// the first series for label "").
func value(mfs map[string]*dto.MetricFamily, name, label string) (float64, error) {
	mf := mfs[name]
	if mf == nil {
		return 0, fmt.Errorf("no %s", name)
	}
	for _, m := range mf.GetMetric() {
		if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
			continue
		}
		if c := m.GetCounter(); c != nil {
			return c.GetValue(), nil
		}
		return m.GetGauge().GetValue(), nil
	}
	return 0, fmt.Errorf("no %s{%s}", name, label)
}

// TestMetricsScrape: a daemon started with --metrics 9101 serves
// Prometheus text on loopback (and not on its LAN address); a ping flood
// over the overlay moves the direct byte and packet counters by at least
// what it carried; `glow metrics` prints the same through the local API.
func TestMetricsScrape(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	lan := l.Bridge("lan")
	h1, h2 := l.Host("m1"), l.Host("m2")
	lan.Attach(h1)
	lan.Attach(h2)
	n1, n2 := newNode(t, h1, "m1"), newNode(t, h2, "m2")
	n1.up("--user", "alice", "--name", "m1", "--metrics", "9101")
	n2.up("--name", "m2", "--join", n1.invite())
	v4n2, _ := n1.ips("m2")
	if _, err := waitPing(h1, v4n2, reachTimeout); err != nil {
		t.Fatalf("m1 cannot ping m2 (%s): %v", v4n2, err)
	}

	before, err := scrape(h1, "127.0.0.1:9101")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	for _, name := range []string{"glow_receive_bytes_total", "glow_transmit_bytes_total", "glow_drops_total",
		"glow_peers", "glow_handshakes_total", "glow_relay_forwarded_bytes_total", "glow_certificate_remaining_seconds"} {
		if before[name] == nil {
			t.Errorf("no %s in the scrape", name)
		}
	}
	if v, _ := value(before, "glow_peers", "direct"); v != 1 {
		t.Errorf("glow_peers{state=direct} = %v, want 1", v)
	}

	const count, size = 2000, 1000
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := h1.Run(ctx, "ping", "-n", "-q", "-f", "-c", fmt.Sprint(count), "-s", fmt.Sprint(size), "-w", "40", v4n2.String())
	if err != nil {
		t.Fatalf("ping flood: %v", err)
	}
	t.Logf("ping flood: %s", strings.TrimSpace(res.Stdout))

	after, err := scrape(h1, "127.0.0.1:9101")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	for _, c := range []struct {
		name string
		min  float64
	}{
		{"glow_transmit_bytes_total", count * size},
		{"glow_receive_bytes_total", count * size * 0.9}, // replies; a flood may lose a few
		{"glow_transmit_packets_total", count},
		{"glow_receive_packets_total", count * 0.9},
	} {
		b, err1 := value(before, c.name, "direct")
		a, err2 := value(after, c.name, "direct")
		if err1 != nil || err2 != nil {
			t.Errorf("%s: %v %v", c.name, err1, err2)
			continue
		}
		metric(t, "metrics."+c.name+".direct.delta", fmt.Sprint(a-b))
		if a-b < c.min {
			t.Errorf("%s{path=direct} grew by %v during the flood (%v -> %v), want at least %v", c.name, a-b, b, a, c.min)
		}
		if r, _ := value(after, c.name, "relay"); r != 0 {
			t.Errorf("%s{path=relay} = %v on a LAN, want 0", c.name, r)
		}
	}

	// Loopback only: the LAN address does not serve it.
	if err := h2.Do(func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:9101", h1.IP()), 2*time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("m2 reached m1's metrics at %s:9101", h1.IP())
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// glow metrics: the same families through the local API, and JSON.
	text := n1.mustGlow(10*time.Second, "metrics")
	mfs, err := parseMetrics(strings.NewReader(text.Stdout))
	if err != nil || mfs["glow_transmit_bytes_total"] == nil {
		t.Errorf("glow metrics: %v\n%s", err, text.Stdout)
	}
	js := n1.mustGlow(10*time.Second, "metrics", "--json")
	var snap struct {
		Traffic []struct {
			Path     string `json:"path"`
			BytesOut uint64 `json:"bytes_out"`
		} `json:"traffic"`
	}
	if err := json.Unmarshal([]byte(js.Stdout), &snap); err != nil || len(snap.Traffic) != 4 || snap.Traffic[0].BytesOut < count*size {
		t.Errorf("glow metrics --json: %v: %+v\n%s", err, snap, js.Stdout)
	}
}
