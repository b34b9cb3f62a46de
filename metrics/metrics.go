// Package metrics exposes a glow node's counters to Prometheus: `glow up
// --metrics ADDR` serves them at http://ADDR/metrics and `glow metrics`
// prints them through the local API.
//
// Each scrape reads one snapshot (api.Metrics, taken from the counters the
// node keeps anyway); nothing is counted for Prometheus on the packet
// path. The exposition is written here, in the Prometheus text format
// 0.0.4 (Content-Type: text/plain; version=0.0.4; charset=utf-8), and only
// that format is served: there is no negotiation of the protobuf or
// OpenMetrics formats, and Prometheus, asking for those first, falls back
// to the text one. Label values are escaped (\\, \", \n) and made valid
// UTF-8, so a node name or a drop reason cannot break the exposition.
//
// A scrape shows glow's families first, each with HELP and TYPE, in name
// order and with its series in label order, then the Go runtime's and the
// process's, written by github.com/VictoriaMetrics/metrics
// (WriteProcessMetrics and WriteFDMetrics, with TYPE lines and empty HELP
// ones): go_goroutines, go_threads, go_gomaxprocs, go_memstats_* (from
// runtime.ReadMemStats), go_gc_duration_seconds, go_gc_cpu_seconds_total,
// the histograms go_gc_pauses_seconds and go_sched_latencies_seconds, and
// go_info; process_cpu_seconds_total, process_resident_memory_bytes
// (and _peak, _anon, _file, _shared), process_virtual_memory_bytes,
// process_num_threads, process_open_fds, process_max_fds,
// process_start_time_seconds, process_io_* and, under cgroup v2,
// process_pressure_*: so a scrape also shows the daemon's memory and CPU.
//
// glow's names have the glow_ prefix, counters end in _total, and every
// label has a small fixed set of values:
//
//	glow_receive_bytes_total{path}       WireGuard bytes in, path: direct, relay, stream, turn
//	glow_transmit_bytes_total{path}      WireGuard bytes out
//	glow_receive_packets_total{path}     WireGuard datagrams in
//	glow_transmit_packets_total{path}    WireGuard datagrams out
//	glow_drops_total{reason}             drops by reason (the reasons of glow status --json, and dns/...)
//	glow_peers{state}                    known peers by path now: direct, stream, relay, offline
//	glow_handshakes_total{direction}     WireGuard handshake messages, sent or received
//	glow_relay_forwarded_bytes_total     relay frames' bytes passed on for other nodes
//	glow_certificate_remaining_seconds   until this node's certificate expires
//	glow_dns_queries_total{result}       the resolver's queries: local, forwarded, servfail, refused, formerr, notimp
//	glow_node_info{node}                 1, labelled with this node's name.user
package metrics

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"golang.org/x/net/netutil"

	"glow/overlay/api"
)

// Source returns a snapshot of the node's counters.
type Source func() api.Metrics

// PeerStates are the values of glow_peers' state label, each exported
// (zero when no peer is in it).
var PeerStates = []string{"direct", "stream", "relay", "offline"}

// DNSResults are the values of glow_dns_queries_total's result label.
var DNSResults = []string{"local", "forwarded", "servfail", "refused", "formerr", "notimp"}

// contentType is the Prometheus text format's, version 0.0.4.
const contentType = "text/plain; version=0.0.4; charset=utf-8"

func init() {
	// The library writes its go_* and process_* lines with TYPE (and an
	// empty HELP) only when asked; the setting is the library's, global,
	// and glow is its only user in the binary.
	vm.ExposeMetadata(true)
}

// Handler serves src's metrics in the Prometheus text format: one
// snapshot per request, glow's families, then the Go runtime's and the
// process's.
func Handler(src Source) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		b.Grow(16 << 10)
		write(&b, src())
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
		w.Write(b.Bytes())
	})
}

// write writes the exposition of m, then the Go runtime's and the
// process's metrics, to b.
func write(b *bytes.Buffer, m api.Metrics) {
	writeGlow(b, m)
	vm.WriteProcessMetrics(b)
	vm.WriteFDMetrics(b)
}

// series is one line of a family: the value of its label (if it has one)
// and the value, formatted.
type series struct{ label, value string }

// writeGlow writes glow's families from m, in name order.
func writeGlow(b *bytes.Buffer, m api.Metrics) {
	var rxB, txB, rxP, txP []series
	for _, t := range m.Traffic {
		rxB = append(rxB, series{t.Path, u64(t.BytesIn)})
		txB = append(txB, series{t.Path, u64(t.BytesOut)})
		rxP = append(rxP, series{t.Path, u64(t.PacketsIn)})
		txP = append(txP, series{t.Path, u64(t.PacketsOut)})
	}
	var drops []series
	for reason, v := range m.Drops {
		drops = append(drops, series{reason, u64(v)})
	}
	var peers []series
	for _, s := range PeerStates {
		peers = append(peers, series{s, strconv.Itoa(m.Peers[s])})
	}
	var dns []series
	if m.DNS != nil {
		for _, r := range DNSResults {
			dns = append(dns, series{r, u64(m.DNS[r])})
		}
	}
	const counter, gauge = "counter", "gauge"
	family(b, "glow_certificate_remaining_seconds", gauge, "Seconds until this node's certificate expires (negative once it has).",
		"", []series{{"", f64(m.CertSecondsLeft)}})
	family(b, "glow_dns_queries_total", counter, "The overlay resolver's queries, by result.", "result", dns)
	family(b, "glow_drops_total", counter, "Datagrams, records and queries dropped, by reason.", "reason", drops)
	family(b, "glow_handshakes_total", counter, "WireGuard handshake messages (initiations and responses).",
		"direction", []series{{"sent", u64(m.HandshakesSent)}, {"received", u64(m.HandshakesReceived)}})
	family(b, "glow_node_info", gauge, "This node (always 1).", "node", []series{{m.Node, "1"}})
	family(b, "glow_peers", gauge, "Known peers by their path now.", "state", peers)
	family(b, "glow_receive_bytes_total", counter, "WireGuard bytes received, by the path they came.", "path", rxB)
	family(b, "glow_receive_packets_total", counter, "WireGuard datagrams received, by the path they came.", "path", rxP)
	family(b, "glow_relay_forwarded_bytes_total", counter, "Bytes of relay frames passed on for other nodes.",
		"", []series{{"", u64(m.RelayForwardedBytes)}})
	family(b, "glow_transmit_bytes_total", counter, "WireGuard bytes sent, by the path they took.", "path", txB)
	family(b, "glow_transmit_packets_total", counter, "WireGuard datagrams sent, by the path they took.", "path", txP)
}

// family writes one family: HELP, TYPE and its series, sorted by label
// value; nothing when it has no series. label is the label's name, "" for
// a family of one unlabelled series. Label values are made valid UTF-8
// and escaped; of two that end up equal (invalid UTF-8 alike) only the
// first is written, so a series never appears twice.
func family(b *bytes.Buffer, name, typ, help, label string, ss []series) {
	if len(ss) == 0 {
		return
	}
	for i := range ss {
		ss[i].label = escapeLabel(ss[i].label)
	}
	slices.SortStableFunc(ss, func(x, y series) int { return cmp.Compare(x.label, y.label) })
	ss = slices.CompactFunc(ss, func(x, y series) bool { return x.label == y.label })
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, helpEscaper.Replace(help), name, typ)
	for _, s := range ss {
		b.WriteString(name)
		if label != "" {
			b.WriteString("{" + label + `="` + s.label + `"}`)
		}
		b.WriteString(" " + s.value + "\n")
	}
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

// escapeLabel makes s valid UTF-8 (the text format's encoding) and
// escapes it for a label value.
func escapeLabel(s string) string {
	return labelEscaper.Replace(strings.ToValidUTF8(s, "\uFFFD"))
}

// u64 formats a counter exactly (a float64 would round above 2^53).
func u64(v uint64) string { return strconv.FormatUint(v, 10) }

// f64 formats a gauge the way the text format reads it: shortest
// decimal, +Inf, -Inf, NaN.
func f64(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// ListenAddr turns the argument of --metrics into the address to listen
// on. A bare port (9100) or an empty host (:9100) means loopback
// (127.0.0.1). An IP address is taken as given, loopback or not: serving
// metrics beyond this machine takes that explicit choice. A host name must
// resolve to loopback addresses only (localhost): a name that resolves
// elsewhere is refused, so a name never opens the port to a network by
// surprise.
func ListenAddr(ctx context.Context, s string) (string, error) {
	if _, err := strconv.ParseUint(s, 10, 16); err == nil {
		s = ":" + s
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("want PORT, HOST:PORT or IP:PORT: %v", err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", fmt.Errorf("port %q: want 1 to 65535", port)
	}
	if host == "" {
		return net.JoinHostPort("127.0.0.1", port), nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return "", err
	}
	for _, ip := range ips {
		if !ip.Unmap().IsLoopback() {
			return "", fmt.Errorf("%s resolves to %v, not loopback: give an IP address to serve metrics beyond this machine", host, ip)
		}
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("%s resolves to no address", host)
	}
	return s, nil
}

// MaxConns bounds the connections Serve handles at once: a scraper needs
// one, and a local program opening many must not hold the daemon's file
// descriptors (the rest wait in the kernel's backlog; an idle one is cut
// after the header timeout).
const MaxConns = 16

// Serve serves h at /metrics on ln until ctx is done (every other path is
// 404), at most MaxConns connections at once. It closes ln.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	ln = netutil.LimitListener(ln, MaxConns)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
