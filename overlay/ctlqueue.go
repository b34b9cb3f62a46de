package overlay

// The control demux: how datagrams that are not WireGuard reach the
// control loop, so that a flood from outsiders never starves the
// heartbeats of known peers.
//
//	Bind receive path (bind_recv.go) -> ctlQueues.put, in the receive goroutine:
//	  control packet whose sender key is a known peer's control key and that
//	  came from an address learned for that same peer, or over a stream link
//	  or relay frame (an authenticated neighbour)        -> known queue (1024)
//	  everything else: unknown senders, a known key from another address,
//	  beacons, STUN                                       -> per-source-address
//	                                                         token bucket -> other queue (256)
//	control loop (loop.go): takes from the known queue whenever it has
//	  something, and from the other queue only when it is empty.
//
// A full queue drops and counts (the receive path never blocks). The
// limit is per source address (an IPv6 /64), not address and port, since
// ports cost an attacker nothing; the table of sources is bounded.

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"glow/internal/wire"
)

const (
	knownQueueLen = 1024
	otherQueueLen = 256

	// Unauthenticated datagrams one source address may have handled per
	// second, and as a burst: far above what a node, a joiner or a STUN
	// client sends, far below what would keep the loop busy.
	unauthRate  = 100
	unauthBurst = 100
	// maxSources bounds the token bucket table: 4,096 sources are about
	// 200 KiB. When it is full, sources idle for a second (their buckets are
	// full) make room; a new source that still finds no room is dropped.
	maxSources = 4096
)

// ctlQueues are the two bounded queues into the control loop, and its
// wake-up call (loop.go).
type ctlQueues struct {
	known   chan inbound // authenticated neighbours' control packets
	other   chan inbound // everything else, rate limited per source
	lim     sourceLimiter
	wake    chan struct{} // wakes the loop before its timer; never blocks
	traffic atomic.Bool   // with wake: a peer that was idle has traffic
}

func newCtlQueues() *ctlQueues {
	return &ctlQueues{known: make(chan inbound, knownQueueLen), other: make(chan inbound, otherQueueLen),
		wake: make(chan struct{}, 1)}
}

// wakeLoop wakes the control loop if it sleeps; it never blocks.
func (q *ctlQueues) wakeLoop() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// trafficResumed tells the loop, from the data path, that a peer idle for
// activeWindow carries traffic again: its heartbeats and probing go fast.
func (q *ctlQueues) trafficResumed() {
	q.traffic.Store(true)
	q.wakeLoop()
}

// put copies pkt into the queue it belongs in. linkPeer is the stream link's
// peer (nil for UDP); from is invalid for a datagram that came relayed
// (via an authenticated neighbour) or over a stream link.
func (b *Bind) putCtl(k wire.Kind, pkt []byte, from netip.AddrPort, via wire.NodeID, addrs map[netip.AddrPort]*Endpoint) {
	q := b.ctl
	if k == wire.KindControl && len(pkt) >= ctlOverhead {
		if e := (*b.byCtlKey.Load())[wire.Key(pkt[wire.HeaderLen:wire.HeaderLen+32])]; e != nil {
			if !from.IsValid() || addrs[from] == e {
				select {
				case q.known <- inbound{kind: k, buf: append([]byte(nil), pkt...), from: from, via: via}:
				default:
					b.dropCtlFull.Add(1)
				}
				return
			}
		}
	}
	if from.IsValid() && !q.lim.allow(sourceKey(from.Addr()), time.Now()) {
		b.dropCtlLimited.Add(1)
		return
	}
	select {
	case q.other <- inbound{kind: k, buf: append([]byte(nil), pkt...), from: from, via: via}:
	default:
		b.dropCtlFull.Add(1)
	}
}

// sourceKey is what the rate limit counts by: an IPv4 address, or the /64
// of an IPv6 address (one host commonly holds a whole /64).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// SetControlKey makes key the control key of peer id: its control packets
// from its learned addresses go to the known queue.
func (b *Bind) SetControlKey(id wire.NodeID, key wire.Key) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.peerLocked(id)
	if e.ctlKey == key {
		return
	}
	e.ctlKey = key
	b.publishCtlKeysLocked()
}

func (b *Bind) publishCtlKeysLocked() {
	if b.held.on {
		b.held.ctl = true
		return
	}
	m := make(map[wire.Key]*Endpoint, len(b.peers))
	for _, e := range b.peers {
		if e.ctlKey != (wire.Key{}) {
			m[e.ctlKey] = e
		}
	}
	b.byCtlKey.Store(&m)
}

// sourceLimiter is a token bucket per source address.
type sourceLimiter struct {
	mu sync.Mutex
	m  map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// allow takes a token from a's bucket.
func (l *sourceLimiter) allow(a netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	bk := l.m[a]
	if bk == nil {
		if l.m == nil {
			l.m = map[netip.Addr]*bucket{}
		}
		if len(l.m) >= maxSources {
			for s, o := range l.m {
				if now.Sub(o.last) > time.Second*unauthBurst/unauthRate {
					delete(l.m, s)
				}
			}
			if len(l.m) >= maxSources {
				return false
			}
		}
		bk = &bucket{tokens: unauthBurst, last: now}
		l.m[a] = bk
	}
	bk.tokens = min(unauthBurst, bk.tokens+now.Sub(bk.last).Seconds()*unauthRate)
	bk.last = now
	if bk.tokens < 1 {
		return false
	}
	bk.tokens--
	return true
}

// sources is the size of the table, for tests.
func (l *sourceLimiter) sources() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
