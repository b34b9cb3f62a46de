package api

// Metrics is a snapshot of a node's counters, read at the moment it is
// asked for (GET /v1/metrics/snapshot; GET /v1/metrics gives the same in
// the Prometheus text format, see package glow/metrics). Counters only
// grow while the daemon runs; gauges (Peers, CertSecondsLeft) are now's.
type Metrics struct {
	Node string `json:"node"` // this node's name.user
	// Traffic is WireGuard's datagrams by the path they took: direct (UDP
	// to the peer), relay (through other nodes), stream (a TCP, WebSocket
	// or ssh link) and turn (a TURN allocation). Relay frames this node
	// forwards for others are not in it (RelayForwardedBytes).
	Traffic []PathTraffic `json:"traffic"`
	// Drops are the datagrams, records and queries dropped, by reason: the
	// same reasons as Status.Drops, plus the resolver's (dns/...).
	Drops map[string]uint64 `json:"drops"`
	// Peers counts the known peers by their path now: direct, stream,
	// relay, offline.
	Peers map[string]int `json:"peers"`
	// HandshakesSent and HandshakesReceived count WireGuard handshake
	// messages (initiations and responses) that left or arrived.
	HandshakesSent     uint64 `json:"handshakes_sent"`
	HandshakesReceived uint64 `json:"handshakes_received"`
	// RelayForwardedBytes are the bytes of relay frames this node passed
	// on for other nodes.
	RelayForwardedBytes uint64 `json:"relay_forwarded_bytes"`
	// CertSecondsLeft is the time until this node's certificate expires
	// (negative once it has).
	CertSecondsLeft float64 `json:"cert_seconds_left"`
	// DNS counts the resolver's queries by result: local (answered from
	// the overlay's names), forwarded, servfail, refused, formerr, notimp;
	// empty when the resolver is off.
	DNS map[string]uint64 `json:"dns"`
}

// PathTraffic is the WireGuard traffic over one kind of path.
type PathTraffic struct {
	Path       string `json:"path"` // direct, relay, stream, turn
	BytesIn    uint64 `json:"bytes_in"`
	BytesOut   uint64 `json:"bytes_out"`
	PacketsIn  uint64 `json:"packets_in"`
	PacketsOut uint64 `json:"packets_out"`
}
