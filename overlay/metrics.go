package overlay

import (
	"net/http"
	"time"

	"glow/metrics"
	"glow/overlay/api"
)

// MetricsHandler serves the node's metrics in the Prometheus text format
// (package glow/metrics): for the local API's GET /v1/metrics and for
// `glow up --metrics ADDR`.
func (n *Node) MetricsHandler() http.Handler { return metrics.Handler(n.Metrics) }

// Metrics returns a snapshot of the node's counters. The traffic counters
// are the Bind's (traffic.go), the drops are Status's, the rest is read
// under Node.mu: a scrape costs what a status does.
func (n *Node) Metrics() api.Metrics {
	st := n.Status()
	m := api.Metrics{
		Node:  st.Self.Name + "." + st.Self.User,
		Drops: st.Drops,
		Peers: map[string]int{},
	}
	m.Traffic, m.HandshakesSent, m.HandshakesReceived = n.bind.traffic.snapshot()
	n.mu.Lock()
	for _, p := range n.paths.peers {
		switch p.path().kind {
		case pathDirect:
			m.Peers["direct"]++
		case pathStream:
			m.Peers["stream"]++
		case pathRelay:
			m.Peers["relay"]++
		default:
			m.Peers["offline"]++
		}
	}
	m.CertSecondsLeft = time.Until(n.mem.cert.NotAfter).Seconds()
	n.mu.Unlock()
	_, m.RelayForwardedBytes = n.fwd.Counts()
	if srv := n.dnsSrv.Load(); srv != nil {
		s := srv.Stats()
		m.DNS = map[string]uint64{
			"local": s.Local, "forwarded": s.Forwarded, "servfail": s.ServFail,
			"refused": s.Refused, "formerr": s.FormErr, "notimp": s.NotImp,
		}
		m.Drops["dns/short"] = s.DropShort
		m.Drops["dns/response"] = s.DropResponse
		m.Drops["dns/overload"] = s.DropOverload
		m.Drops["dns/write"] = s.DropWrite
		m.Drops["dns/client"] = s.DropClient
		m.Drops["dns/upstream-error"] = s.UpstreamErrors
	}
	return m
}
