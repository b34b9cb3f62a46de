// Package metrics exposes a glow node's counters to Prometheus: `glow up
// --metrics ADDR` serves them at http://ADDR/metrics and `glow metrics`
// prints them through the local API.
//
// The collector reads a snapshot (api.Metrics, taken from the counters the
// node keeps anyway) once per scrape; nothing is counted for Prometheus on
// the packet path. The registry is its own (not the global one), with the
// Go runtime's and the process's collectors beside glow's, so a scrape
// also shows the daemon's memory and CPU.
//
// Names have the glow_ prefix, counters end in _total, and every label has
// a small fixed set of values:
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
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

var (
	descRxBytes   = prometheus.NewDesc("glow_receive_bytes_total", "WireGuard bytes received, by the path they came.", []string{"path"}, nil)
	descTxBytes   = prometheus.NewDesc("glow_transmit_bytes_total", "WireGuard bytes sent, by the path they took.", []string{"path"}, nil)
	descRxPackets = prometheus.NewDesc("glow_receive_packets_total", "WireGuard datagrams received, by the path they came.", []string{"path"}, nil)
	descTxPackets = prometheus.NewDesc("glow_transmit_packets_total", "WireGuard datagrams sent, by the path they took.", []string{"path"}, nil)
	descDrops     = prometheus.NewDesc("glow_drops_total", "Datagrams, records and queries dropped, by reason.", []string{"reason"}, nil)
	descPeers     = prometheus.NewDesc("glow_peers", "Known peers by their path now.", []string{"state"}, nil)
	descHS        = prometheus.NewDesc("glow_handshakes_total", "WireGuard handshake messages (initiations and responses).", []string{"direction"}, nil)
	descRelayed   = prometheus.NewDesc("glow_relay_forwarded_bytes_total", "Bytes of relay frames passed on for other nodes.", nil, nil)
	descCert      = prometheus.NewDesc("glow_certificate_remaining_seconds", "Seconds until this node's certificate expires (negative once it has).", nil, nil)
	descDNS       = prometheus.NewDesc("glow_dns_queries_total", "The overlay resolver's queries, by result.", []string{"result"}, nil)
	descInfo      = prometheus.NewDesc("glow_node_info", "This node (always 1).", []string{"node"}, nil)
)

// collector turns one snapshot per scrape into metrics.
type collector struct{ src Source }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRxBytes, descTxBytes, descRxPackets, descTxPackets, descDrops,
		descPeers, descHS, descRelayed, descCert, descDNS, descInfo} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := c.src()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, t := range m.Traffic {
		counter(descRxBytes, t.BytesIn, t.Path)
		counter(descTxBytes, t.BytesOut, t.Path)
		counter(descRxPackets, t.PacketsIn, t.Path)
		counter(descTxPackets, t.PacketsOut, t.Path)
	}
	for reason, v := range m.Drops {
		counter(descDrops, v, reason)
	}
	for _, s := range PeerStates {
		gauge(descPeers, float64(m.Peers[s]), s)
	}
	counter(descHS, m.HandshakesSent, "sent")
	counter(descHS, m.HandshakesReceived, "received")
	counter(descRelayed, m.RelayForwardedBytes)
	gauge(descCert, m.CertSecondsLeft)
	if m.DNS != nil {
		for _, r := range DNSResults {
			counter(descDNS, m.DNS[r], r)
		}
	}
	gauge(descInfo, 1, m.Node)
}

// NewRegistry returns a registry holding glow's collector over src, the
// Go runtime's and the process's.
func NewRegistry(src Source) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{src: src},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg's metrics in the Prometheus text format (or, when a
// scraper asks for it, the protobuf or OpenMetrics one).
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
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
