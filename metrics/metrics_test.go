package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

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

// A strict reader of the Prometheus text format 0.0.4, for what this
// package writes: every line is HELP, TYPE or a sample; a family's lines
// are contiguous, its HELP and TYPE come once each and before its samples;
// names, label names, escapes (\\ \" \n in label values, \\ \n in HELP),
// UTF-8 and numbers are checked; no series twice, no timestamps, no empty
// lines, a newline at the end.

// sample is one sample line.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// mfamily is a metric family: its HELP, TYPE and samples.
type mfamily struct {
	name, help, typ string
	helped          bool
	samples         []sample
}

// exposition is a parsed scrape, families in the order they came.
type exposition struct {
	families []*mfamily
	byName   map[string]*mfamily
}

var (
	nameRe   = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	labelRe  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*`)
	numberRe = regexp.MustCompile(`^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$`)
)

func parseText(text string) (*exposition, error) {
	e := &exposition{byName: map[string]*mfamily{}}
	if !strings.HasSuffix(text, "\n") {
		return nil, errors.New("no newline at the end")
	}
	seen := map[string]bool{}
	var cur *mfamily
	enter := func(name string) (*mfamily, error) {
		f := e.byName[name]
		if f == nil {
			f = &mfamily{name: name}
			e.byName[name] = f
			e.families = append(e.families, f)
		} else if f != cur {
			return nil, fmt.Errorf("family %s again after another", name)
		}
		cur = f
		return f, nil
	}
	line := func(l string) error {
		switch {
		case l == "":
			return errors.New("empty line")
		case strings.HasPrefix(l, "# HELP "):
			rest := l[len("# HELP "):]
			name := nameRe.FindString(rest)
			if name == "" {
				return errors.New("no name")
			}
			var doc string
			if rest = rest[len(name):]; rest != "" {
				if rest[0] != ' ' {
					return errors.New("no space after the name")
				}
				var err error
				if doc, err = unescape(rest[1:], false); err != nil {
					return err
				}
			}
			f, err := enter(name)
			if err != nil {
				return err
			}
			if f.helped || len(f.samples) > 0 {
				return errors.New("HELP twice or after samples")
			}
			f.help, f.helped = doc, true
		case strings.HasPrefix(l, "# TYPE "):
			name, typ, ok := strings.Cut(l[len("# TYPE "):], " ")
			if !ok || name == "" || nameRe.FindString(name) != name {
				return errors.New("bad name")
			}
			if !slices.Contains([]string{"counter", "gauge", "histogram", "summary", "untyped"}, typ) {
				return fmt.Errorf("type %q", typ)
			}
			f, err := enter(name)
			if err != nil {
				return err
			}
			if f.typ != "" || len(f.samples) > 0 {
				return errors.New("TYPE twice or after samples")
			}
			f.typ = typ
		case strings.HasPrefix(l, "#"):
			return errors.New("a comment neither HELP nor TYPE")
		default:
			s, err := parseSample(l)
			if err != nil {
				return err
			}
			f, err := enter(e.familyOf(s.name))
			if err != nil {
				return err
			}
			suffix := strings.TrimPrefix(s.name, f.name)
			switch f.typ {
			case "histogram":
				if _, ok := s.labels["le"]; suffix != "_sum" && suffix != "_count" && (suffix != "_bucket" || !ok) {
					return errors.New("not a histogram's sample")
				}
			case "summary":
				if _, ok := s.labels["quantile"]; suffix != "_sum" && suffix != "_count" && (suffix != "" || !ok) {
					return errors.New("not a summary's sample")
				}
			case "counter":
				if !(s.value >= 0) {
					return errors.New("a counter below zero")
				}
			}
			key := s.name
			for _, k := range slices.Sorted(maps.Keys(s.labels)) {
				key += fmt.Sprintf(",%s=%q", k, s.labels[k])
			}
			if seen[key] {
				return errors.New("the series again")
			}
			seen[key] = true
			f.samples = append(f.samples, s)
		}
		return nil
	}
	for i, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if err := line(l); err != nil {
			return nil, fmt.Errorf("line %d %q: %v", i+1, l, err)
		}
	}
	return e, nil
}

// familyOf is the family a sample name belongs to: a histogram's or a
// summary's for their suffixes, else its own.
func (e *exposition) familyOf(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if f := e.byName[strings.TrimSuffix(name, suffix)]; f != nil && strings.HasSuffix(name, suffix) &&
			(f.typ == "histogram" || f.typ == "summary" && suffix != "_bucket") {
			return f.name
		}
	}
	return name
}

func parseSample(l string) (sample, error) {
	s := sample{name: nameRe.FindString(l), labels: map[string]string{}}
	if s.name == "" {
		return s, errors.New("no name")
	}
	rest := l[len(s.name):]
	if strings.HasPrefix(rest, "{") {
		rest = rest[1:]
		for !strings.HasPrefix(rest, "}") {
			k := labelRe.FindString(rest)
			if k == "" || strings.HasPrefix(k, "__") {
				return s, errors.New("bad label name")
			}
			rest = rest[len(k):]
			if !strings.HasPrefix(rest, `="`) {
				return s, fmt.Errorf("no =\" after %s", k)
			}
			end := 2
			for ; end < len(rest) && rest[end] != '"'; end++ {
				if rest[end] == '\\' {
					end++
				}
			}
			if end >= len(rest) {
				return s, errors.New("unterminated label value")
			}
			v, err := unescape(rest[2:end], true)
			if err != nil {
				return s, err
			}
			if _, dup := s.labels[k]; dup {
				return s, fmt.Errorf("label %s twice", k)
			}
			s.labels[k] = v
			rest = rest[end+1:]
			if strings.HasPrefix(rest, ",") {
				rest = strings.TrimLeft(rest[1:], " ")
			} else if !strings.HasPrefix(rest, "}") {
				return s, errors.New("want , or } after a label")
			}
		}
		rest = rest[1:]
	}
	v, ok := strings.CutPrefix(rest, " ")
	if !ok {
		return s, errors.New("no space before the value")
	}
	switch {
	case v == "+Inf":
		s.value = math.Inf(1)
	case v == "-Inf":
		s.value = math.Inf(-1)
	case v == "NaN":
		s.value = math.NaN()
	case numberRe.MatchString(v):
		s.value, _ = strconv.ParseFloat(v, 64)
	default:
		return s, fmt.Errorf("value %q", v)
	}
	return s, nil
}

// unescape reads a label value (\\, \" and \n) or a HELP text (\\ and
// \n); it must be UTF-8 and, as a label value, hold no bare ".
func unescape(s string, label bool) (string, error) {
	if !utf8.ValidString(s) {
		return "", errors.New("not UTF-8")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' && label {
			return "", errors.New("a bare \"")
		}
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i++; i == len(s) {
			return "", errors.New("a \\ at the end")
		}
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case '"':
			if !label {
				return "", errors.New(`\" in HELP`)
			}
			b.WriteByte('"')
		default:
			return "", fmt.Errorf("escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

// value is the value of name's series with exactly the given labels (name,
// value pairs).
func (e *exposition) value(name string, labels ...string) (float64, bool) {
	f := e.byName[e.familyOf(name)]
	if f == nil {
		return 0, false
	}
	for _, s := range f.samples {
		if s.name != name || len(s.labels) != len(labels)/2 {
			continue
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if v, ok := s.labels[labels[i]]; !ok || v != labels[i+1] {
				match = false
			}
		}
		if match {
			return s.value, true
		}
	}
	return 0, false
}

// scrape GETs /metrics from h and parses it strictly.
func scrape(t testing.TB, h http.Handler) (*exposition, string) {
	t.Helper()
	e, text, err := get(h)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	return e, text
}

// get GETs /metrics from h, checks the status and the Content-Type and
// parses the text strictly.
func get(h http.Handler) (*exposition, string, error) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	if rec.Code != 200 {
		return nil, text, fmt.Errorf("status %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		return nil, text, fmt.Errorf("Content-Type %q", ct)
	}
	e, err := parseText(text)
	return e, text, err
}

// glowLines are the lines of text about glow_ families.
func glowLines(text string) string {
	var b strings.Builder
	for l := range strings.Lines(text) {
		if strings.HasPrefix(strings.TrimPrefix(strings.TrimPrefix(l, "# HELP "), "# TYPE "), "glow_") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// glowFamilies are the names glow writes.
var glowFamilies = []string{"glow_certificate_remaining_seconds", "glow_dns_queries_total", "glow_drops_total",
	"glow_handshakes_total", "glow_node_info", "glow_peers", "glow_receive_bytes_total", "glow_receive_packets_total",
	"glow_relay_forwarded_bytes_total", "glow_transmit_bytes_total", "glow_transmit_packets_total"}

// TestParserRejects: the reader above fails on what Prometheus would
// refuse or misread, so the tests below can fail.
func TestParserRejects(t *testing.T) {
	good := "# HELP a_total A \\\\ help\\n.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\",y=\"\"} 1\na_total 2\n" +
		"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_sum 1.5e-3\nh_count 3\n# TYPE b gauge\nb{x=\"1\", y=\"2\",} -Inf\n"
	e, err := parseText(good)
	if err != nil {
		t.Fatalf("good text: %v", err)
	}
	if f := e.byName["a_total"]; f == nil || f.help != "A \\ help\n." || f.samples[0].labels["x"] != "q\"\\\n" || len(e.families) != 3 {
		t.Errorf("good text misread: %+v", e.byName["a_total"])
	}
	if v, ok := e.value("h_count"); !ok || v != 3 {
		t.Errorf("h_count = %v, %v", v, ok)
	}
	for _, bad := range []string{
		"a 1",                                   // no newline at the end
		"a 1\n\nb 2\n",                          // empty line
		"# comment\na 1\n",                      // neither HELP nor TYPE
		"a{x=\"q\"\"} 1\n",                      // a bare quote
		"a{x=\"q\\t\"} 1\n",                     // an unknown escape
		"a{x=\"q\\\"} 1\n",                      // unterminated
		"a{x=\"\xff\"} 1\n",                     // not UTF-8
		"a{x=\"1\",x=\"2\"} 1\n",                // a label twice
		"a{__x=\"1\"} 1\n",                      // a reserved label
		"a{1x=\"1\"} 1\n",                       // a bad label name
		"a{x=\"1\" y=\"2\"} 1\n",                // no comma
		"a 1\nb 1\na 2\n",                       // a family again after another
		"a{x=\"1\"} 1\na{x=\"1\"} 2\n",          // a series twice
		"# TYPE a gauge\n# TYPE a gauge\na 1\n", // TYPE twice
		"a 1\n# TYPE a gauge\n",                 // TYPE after samples
		"# HELP a x\n# HELP a y\n",              // HELP twice
		"# HELP a x\\q\na 1\n",                  // an unknown escape in HELP
		"# TYPE a info\na 1\n",                  // an unknown type
		"# TYPE a counter\na -1\n",              // a counter below zero
		"# TYPE h histogram\nh 1\n",             // a histogram's bare sample
		"a 1 1700000000\n",                      // a timestamp
		"a 0x10\n",                              // not a decimal
		"a Inf\n",                               // not +Inf
		"a{x=\"1\"}1\n",                         // no space
		"1a 1\n",                                // a bad name
	} {
		if _, err := parseText(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestExposition: glow's families with HELP and TYPE, every label value
// of the fixed sets (zero included), the snapshot's values, names by
// Prometheus' conventions; then the Go runtime's and the process's.
func TestExposition(t *testing.T) {
	m := snapshot(1000, 10)
	e, text := scrape(t, Handler(func() api.Metrics { return m }))
	want := `# HELP glow_certificate_remaining_seconds Seconds until this node's certificate expires (negative once it has).
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
# HELP glow_receive_packets_total WireGuard datagrams received, by the path they came.
# TYPE glow_receive_packets_total counter
glow_receive_packets_total{path="direct"} 10
glow_receive_packets_total{path="relay"} 0
glow_receive_packets_total{path="stream"} 0
glow_receive_packets_total{path="turn"} 0
# HELP glow_relay_forwarded_bytes_total Bytes of relay frames passed on for other nodes.
# TYPE glow_relay_forwarded_bytes_total counter
glow_relay_forwarded_bytes_total 700
# HELP glow_transmit_bytes_total WireGuard bytes sent, by the path they took.
# TYPE glow_transmit_bytes_total counter
glow_transmit_bytes_total{path="direct"} 2000
glow_transmit_bytes_total{path="relay"} 0
glow_transmit_bytes_total{path="stream"} 0
glow_transmit_bytes_total{path="turn"} 0
# HELP glow_transmit_packets_total WireGuard datagrams sent, by the path they took.
# TYPE glow_transmit_packets_total counter
glow_transmit_packets_total{path="direct"} 20
glow_transmit_packets_total{path="relay"} 0
glow_transmit_packets_total{path="stream"} 0
glow_transmit_packets_total{path="turn"} 0
`
	if !strings.HasPrefix(text, want) {
		t.Errorf("glow's families:\n%s\nwant:\n%s", glowLines(text), want)
	}
	// Prometheus' conventions for glow's (promlint's): glow_ prefix, no
	// colons, counters and only counters end in _total, a HELP each.
	series := 0
	for _, f := range e.families {
		if !strings.HasPrefix(f.name, "glow_") {
			continue
		}
		series += len(f.samples)
		if !regexp.MustCompile(`^glow_[a-z][a-z_]*[a-z]$`).MatchString(f.name) {
			t.Errorf("%s: not a glow_ snake-case name", f.name)
		}
		if (f.typ == "counter") != strings.HasSuffix(f.name, "_total") || (f.typ != "counter" && f.typ != "gauge") {
			t.Errorf("%s: type %q", f.name, f.typ)
		}
		if !f.helped || f.help == "" {
			t.Errorf("%s: no HELP", f.name)
		}
	}
	if series != 4*4+2+4+2+1+1+6+1 {
		t.Errorf("%d glow series, want %d", series, 4*4+2+4+2+1+1+6+1)
	}
	// The runtime's and the process's, typed, with values that can be.
	for _, c := range []struct {
		name, typ string
		min       float64
	}{
		{"go_goroutines", "gauge", 1},
		{"go_threads", "gauge", 1},
		{"go_gomaxprocs", "gauge", 1},
		{"go_memstats_alloc_bytes", "gauge", 1},
		{"go_memstats_heap_inuse_bytes", "gauge", 1},
		{"go_memstats_sys_bytes", "gauge", 1},
		{"go_memstats_mallocs_total", "counter", 1},
		{"go_gc_duration_seconds_count", "summary", 0},
		{"process_resident_memory_bytes", "gauge", 1 << 20},
		{"process_virtual_memory_bytes", "gauge", 1 << 20},
		{"process_cpu_seconds_total", "counter", 0},
		{"process_open_fds", "gauge", 3},
		{"process_max_fds", "gauge", 3},
		{"process_num_threads", "gauge", 1},
		{"process_start_time_seconds", "gauge", float64(time.Now().Add(-time.Hour).Unix())},
	} {
		v, ok := e.value(c.name)
		if f := e.byName[e.familyOf(c.name)]; !ok || f.typ != c.typ || v < c.min {
			t.Errorf("%s = %v (%v), want a %s of at least %v", c.name, v, ok, c.typ, c.min)
		}
	}
	if v, ok := e.value("go_info", "version", runtime.Version()); !ok || v != 1 {
		t.Errorf("go_info{version=%q} = %v, %v", runtime.Version(), v, ok)
	}
	if v, _ := e.value("process_start_time_seconds"); v > float64(time.Now().Unix()) {
		t.Errorf("process_start_time_seconds %v is in the future", v)
	}
	for _, f := range e.families {
		if !strings.HasPrefix(f.name, "glow_") && !strings.HasPrefix(f.name, "go_") && !strings.HasPrefix(f.name, "process_") {
			t.Errorf("unexpected family %s", f.name)
		}
		if f.typ == "" {
			t.Errorf("%s has no TYPE", f.name)
		}
	}
	t.Logf("%d families, %d bytes; the first 30 lines:\n%s", len(e.families), len(text),
		strings.Join(strings.SplitN(text, "\n", 31)[:30], "\n"))
}

// TestValuesMove: each scrape reads the source once and anew; a family
// with no series (the resolver off, no drops) is not written at all;
// counters are exact beyond 2^53, gauges read as the text format has them.
func TestValuesMove(t *testing.T) {
	m := snapshot(1000, 0)
	var calls atomic.Int32
	h := Handler(func() api.Metrics { calls.Add(1); return m })
	expect := func(want float64) {
		t.Helper()
		e, _ := scrape(t, h)
		for _, p := range []string{"direct", "relay", "stream", "turn"} {
			w := 0.0
			if p == "direct" {
				w = want
			}
			if v, ok := e.value("glow_transmit_bytes_total", "path", p); !ok || v != w {
				t.Errorf("glow_transmit_bytes_total{path=%q} = %v, %v; want %v", p, v, ok, w)
			}
		}
	}
	expect(2000)
	m = snapshot(5000, 0)
	expect(10000)
	if n := calls.Load(); n != 2 {
		t.Errorf("the source was read %d times for 2 scrapes", n)
	}
	e, _ := scrape(t, h)
	if f := e.byName["glow_dns_queries_total"]; f == nil || len(f.samples) != 6 {
		t.Fatalf("DNS family %+v, want 6 series", f)
	}
	m.DNS, m.Drops = nil, map[string]uint64{}
	m.CertSecondsLeft = math.Inf(-1)
	m.RelayForwardedBytes = 1<<63 + 1
	_, text := scrape(t, h)
	if strings.Contains(text, "glow_dns") || strings.Contains(text, "glow_drops") {
		t.Errorf("DNS or drops with the resolver off and no drops:\n%s", glowLines(text))
	}
	for _, want := range []string{"\nglow_certificate_remaining_seconds -Inf\n", "\nglow_relay_forwarded_bytes_total 9223372036854775809\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in\n%s", want, glowLines(text))
		}
	}
	m.CertSecondsLeft = -12.25
	if e, _ := scrape(t, h); func() float64 { v, _ := e.value("glow_certificate_remaining_seconds"); return v }() != -12.25 {
		t.Errorf("certificate seconds: want -12.25")
	}
}

// TestOneSnapshotPerScrape: scrapes at once while the counters move each
// see one snapshot (in it the direct bytes out are twice the bytes in).
func TestOneSnapshotPerScrape(t *testing.T) {
	var n, calls atomic.Uint64
	h := Handler(func() api.Metrics { calls.Add(1); return snapshot(1000*n.Add(1), 0) })
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				e, text, err := get(h)
				if err != nil {
					t.Errorf("%v\n%s", err, text)
					return
				}
				in, _ := e.value("glow_receive_bytes_total", "path", "direct")
				out, _ := e.value("glow_transmit_bytes_total", "path", "direct")
				if in == 0 || out != 2*in {
					t.Errorf("bytes in %v, out %v: not one snapshot", in, out)
				}
			}
		})
	}
	wg.Wait()
	if calls.Load() != 80 {
		t.Errorf("%d reads of the source for 80 scrapes", calls.Load())
	}
}

// hostile are node names and drop reasons that would break an exposition
// written without escaping.
var hostile = []string{
	`a"b`, `a\b`, "a\nb", `\`, `\"`, `"`, "\n", "", `a\nb`,
	"evil\"} 1\nglow_peers{state=\"direct\"} 99\n# TYPE glow_peers counter\nx{y=\"",
	"bad\xffutf8\xfe", "\x00nul", "tab\there", "ünïcödé ☃",
}

// TestHostileLabels: a node name or a drop reason with quotes,
// backslashes, newlines or bytes that are not UTF-8 comes out escaped (or
// made UTF-8) and reads back as itself; nothing is injected.
func TestHostileLabels(t *testing.T) {
	for _, s := range hostile {
		m := snapshot(1000, 0)
		m.Node = s
		m.Drops[s] = 7
		e, text := scrape(t, Handler(func() api.Metrics { return m }))
		want := strings.ToValidUTF8(s, "\uFFFD")
		if f := e.byName["glow_node_info"]; f == nil || len(f.samples) != 1 || f.samples[0].labels["node"] != want {
			t.Errorf("node %q: glow_node_info %+v", s, f)
		}
		if v, ok := e.value("glow_drops_total", "reason", want); !ok || v != 7 {
			t.Errorf("drop reason %q: %v, %v", s, v, ok)
		}
		if f := e.byName["glow_peers"]; f == nil || f.typ != "gauge" || len(f.samples) != 4 {
			t.Errorf("node %q: glow_peers %+v", s, f)
		}
		if v, _ := e.value("glow_peers", "state", "direct"); v != 2 {
			t.Errorf("node %q: glow_peers{state=direct} = %v", s, v)
		}
		if glow := glowLines(text); strings.Count(glow, "\n") != 2*len(glowFamilies)+34 {
			t.Errorf("node %q: %d lines of glow's, want %d:\n%s", s, strings.Count(glow, "\n"), 2*len(glowFamilies)+34, glow)
		}
		var names []string
		for _, f := range e.families {
			if strings.HasPrefix(f.name, "glow_") {
				names = append(names, f.name)
			}
		}
		if !slices.Equal(names, glowFamilies) {
			t.Errorf("node %q: families %v", s, names)
		}
	}
	// Two reasons alike once made UTF-8 are one series, not two.
	m := snapshot(1, 0)
	m.Drops = map[string]uint64{"x\xff": 1, "x\xfe": 1}
	e, _ := scrape(t, Handler(func() api.Metrics { return m }))
	if f := e.byName["glow_drops_total"]; f == nil || len(f.samples) != 1 {
		t.Errorf("drops %+v, want one series", f)
	}
}

// FuzzLabels: any node name and drop reason gives an exposition the strict
// reader takes, with them read back as written (made UTF-8).
func FuzzLabels(f *testing.F) {
	for _, s := range hostile {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, node, reason string) {
		m := snapshot(1, 2)
		m.Node = node
		m.Drops = map[string]uint64{reason: 7}
		var b bytes.Buffer
		writeGlow(&b, m)
		e, err := parseText(b.String())
		if err != nil {
			t.Fatalf("%v\n%s", err, b.String())
		}
		if v, ok := e.value("glow_node_info", "node", strings.ToValidUTF8(node, "\uFFFD")); !ok || v != 1 {
			t.Errorf("node %q not read back:\n%s", node, b.String())
		}
		if v, ok := e.value("glow_drops_total", "reason", strings.ToValidUTF8(reason, "\uFFFD")); !ok || v != 7 {
			t.Errorf("reason %q not read back:\n%s", reason, b.String())
		}
		if len(e.families) != len(glowFamilies) {
			t.Errorf("%d families, want %d", len(e.families), len(glowFamilies))
		}
	})
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
	go func() { done <- Serve(ctx, ln, Handler(func() api.Metrics { return m })) }()
	get := func(path string) (int, string, string) {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	code, ct, body := get("/metrics")
	if code != 200 || ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("/metrics: %d %q", code, ct)
	}
	if e, err := parseText(body); err != nil {
		t.Errorf("/metrics: %v\n%s", err, body)
	} else if v, ok := e.value("glow_receive_bytes_total", "path", "relay"); !ok || v != 2 {
		t.Errorf("/metrics: glow_receive_bytes_total{path=relay} = %v, %v\n%s", v, ok, body)
	}
	if code, _, _ := get("/"); code != 404 {
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
	go Serve(ctx, ln, Handler(func() api.Metrics { return m }))
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
