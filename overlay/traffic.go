package overlay

import (
	"sync/atomic"

	"glow/overlay/api"
)

// WireGuard's traffic by the path it took, for metrics (metrics.go).
//
// The send path adds once per batch (Bind.Send sums the batch it already
// walks); each receive goroutine sums its batch in its own rx and adds
// once at the batch's end. So the cost on the packet path is a few plain
// additions per packet and a few uncontended-ish atomic adds per batch of
// up to 128 packets.

// trafficKind is the way a WireGuard datagram travelled.
type trafficKind uint8

const (
	trafficDirect trafficKind = iota // UDP to or from the peer's address
	trafficRelay                     // in relay frames through other nodes
	trafficStream                    // over a stream link (TCP, WebSocket, ssh)
	trafficTURN                      // through a TURN allocation
	numTraffic
)

var trafficNames = [numTraffic]string{"direct", "relay", "stream", "turn"}

// trafficCounters are the Bind's totals.
type trafficCounters struct {
	bytesIn, pktsIn, bytesOut, pktsOut [numTraffic]atomic.Uint64
	hsIn, hsOut                        atomic.Uint64 // handshake messages (initiation, response)
}

// kindOf is the way a packet sent on p travels.
func kindOf(p *path) trafficKind {
	switch {
	case p.relay:
		return trafficRelay
	case p.stream != nil:
		return trafficStream
	case p.turn != nil:
		return trafficTURN
	}
	return trafficDirect
}

// isWGHandshake reports whether WireGuard message type typ is a handshake
// initiation or response.
func isWGHandshake(typ byte) bool { return typ == 1 || typ == 2 }

// sent counts a batch of WireGuard datagrams sent on p.
func (t *trafficCounters) sent(p *path, bufs [][]byte) {
	var n, hs uint64
	for _, b := range bufs {
		n += uint64(len(b))
		if len(b) > 0 && isWGHandshake(b[0]) {
			hs++
		}
	}
	k := kindOf(p)
	t.bytesOut[k].Add(n)
	t.pktsOut[k].Add(uint64(len(bufs)))
	if hs > 0 {
		t.hsOut.Add(hs)
	}
}

// rxTraffic is one receive goroutine's counts of its current batch.
type rxTraffic struct {
	bytes, pkts [numTraffic]uint64
	hs          uint64
}

// add counts one WireGuard datagram of n bytes and type typ that came by k.
func (r *rxTraffic) add(k trafficKind, n int, typ byte) {
	r.bytes[k] += uint64(n)
	r.pkts[k]++
	if isWGHandshake(typ) {
		r.hs++
	}
}

// flush adds the batch's counts to t and clears them.
func (r *rxTraffic) flush(t *trafficCounters) {
	for k := range numTraffic {
		if r.pkts[k] > 0 {
			t.bytesIn[k].Add(r.bytes[k])
			t.pktsIn[k].Add(r.pkts[k])
		}
	}
	if r.hs > 0 {
		t.hsIn.Add(r.hs)
	}
	*r = rxTraffic{}
}

// snapshot returns the totals by path, and the handshake messages sent
// and received.
func (t *trafficCounters) snapshot() (by []api.PathTraffic, hsOut, hsIn uint64) {
	for k := range numTraffic {
		by = append(by, api.PathTraffic{
			Path:    trafficNames[k],
			BytesIn: t.bytesIn[k].Load(), PacketsIn: t.pktsIn[k].Load(),
			BytesOut: t.bytesOut[k].Load(), PacketsOut: t.pktsOut[k].Load(),
		})
	}
	return by, t.hsOut.Load(), t.hsIn.Load()
}
