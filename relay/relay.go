// Package relay decides whether this node forwards a relay frame for
// others, and keeps it from being an open proxy: it forwards only between
// nodes it trusts (its user's, and friends' for traffic between them), with
// a per-source rate and byte limit, and counts every decision.
//
// The frame format is internal/wire's (RelayHeaderLen bytes, then an
// end-to-end encrypted WireGuard packet or a sealed control packet); this
// package never sees plaintext. The forwarding itself happens on the
// overlay's receive path, which asks a Forwarder for each frame; Allow is
// safe for concurrent use, takes only the frame source's own lock and does
// not allocate once a source is known.
//
// Limits are token buckets per source node, refilled from the time passed
// in, so tests step time explicitly.
package relay

import (
	"sync"
	"sync/atomic"
	"time"

	"glow/internal/wire"
)

// Limits bound what one source may send through this node.
type Limits struct {
	PacketsPerSecond float64 // sustained rate; 0 means DefaultLimits'
	BytesPerSecond   float64
	Burst            time.Duration // how much of the rate may come at once
}

// DefaultLimits allow one source about 8 Gbit/s through this node: well
// above what a relay forwards (so TCP through a relay never meets them), far
// below a flood that would starve the node's own traffic for long.
var DefaultLimits = Limits{PacketsPerSecond: 1_000_000, BytesPerSecond: 1 << 30, Burst: 500 * time.Millisecond}

// Trust tells whether a frame from src to dst may be forwarded.
type Trust func(src, dst wire.ShortID) bool

// Verdict is what Allow decided, and why.
type Verdict uint8

const (
	Forward Verdict = iota
	DropUntrusted
	DropRateLimited
	DropHopLimit
	numVerdicts
)

func (v Verdict) String() string {
	switch v {
	case Forward:
		return "forwarded"
	case DropUntrusted:
		return "untrusted"
	case DropRateLimited:
		return "rate-limited"
	case DropHopLimit:
		return "hop-limit"
	}
	return "unknown"
}

// Forwarder applies trust and limits to frames in transit.
type Forwarder struct {
	limits Limits
	trust  atomic.Pointer[Trust]

	counts [numVerdicts]atomic.Uint64
	bytes  atomic.Uint64 // bytes forwarded

	// buckets is read without a lock (copy on write); mu serialises the
	// writers, which run only for a source's first frame.
	mu      sync.Mutex
	buckets atomic.Pointer[map[wire.ShortID]*bucket]
}

// bucket is one source's token bucket, with its own lock: frames of
// different sources never wait for each other.
type bucket struct {
	mu          sync.Mutex
	pkts, bytes float64
	last        time.Time
}

// New returns a Forwarder with the given limits (zero fields take defaults)
// that trusts nothing until SetTrust.
func New(l Limits) *Forwarder {
	if l.PacketsPerSecond <= 0 {
		l.PacketsPerSecond = DefaultLimits.PacketsPerSecond
	}
	if l.BytesPerSecond <= 0 {
		l.BytesPerSecond = DefaultLimits.BytesPerSecond
	}
	if l.Burst <= 0 {
		l.Burst = DefaultLimits.Burst
	}
	f := &Forwarder{limits: l}
	m := map[wire.ShortID]*bucket{}
	f.buckets.Store(&m)
	return f
}

// SetTrust replaces the trust function (on membership changes).
func (f *Forwarder) SetTrust(t Trust) { f.trust.Store(&t) }

// Allow decides for one frame of n bytes with hop limit hops, at now.
func (f *Forwarder) Allow(src, dst wire.ShortID, hops uint8, n int, now time.Time) Verdict {
	v := f.decide(src, dst, hops, n, now)
	f.counts[v].Add(1)
	if v == Forward {
		f.bytes.Add(uint64(n))
	}
	return v
}

func (f *Forwarder) decide(src, dst wire.ShortID, hops uint8, n int, now time.Time) Verdict {
	if hops <= 1 {
		return DropHopLimit
	}
	t := f.trust.Load()
	if t == nil || !(*t)(src, dst) {
		return DropUntrusted
	}
	burstP := f.limits.PacketsPerSecond * f.limits.Burst.Seconds()
	burstB := f.limits.BytesPerSecond * f.limits.Burst.Seconds()
	b := (*f.buckets.Load())[src]
	if b == nil {
		b = f.newBucket(src, now, burstP, burstB)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.pkts = min(burstP, b.pkts+dt*f.limits.PacketsPerSecond)
		b.bytes = min(burstB, b.bytes+dt*f.limits.BytesPerSecond)
		b.last = now
	}
	if b.pkts < 1 || b.bytes < float64(n) {
		return DropRateLimited
	}
	b.pkts--
	b.bytes -= float64(n)
	return Forward
}

// newBucket adds a full bucket for src (or returns the one another
// goroutine just added). Past 4096 sources, the buckets idle long enough to
// be full again are forgotten.
func (f *Forwarder) newBucket(src wire.ShortID, now time.Time, burstP, burstB float64) *bucket {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := *f.buckets.Load()
	if b := old[src]; b != nil {
		return b
	}
	m := make(map[wire.ShortID]*bucket, len(old)+1)
	for id, b := range old {
		if len(old) > 4096 {
			b.mu.Lock()
			idle := now.Sub(b.last) > f.limits.Burst
			b.mu.Unlock()
			if idle {
				continue
			}
		}
		m[id] = b
	}
	b := &bucket{pkts: burstP, bytes: burstB, last: now}
	m[src] = b
	f.buckets.Store(&m)
	return b
}

// Counts returns how many frames got each verdict, and the bytes forwarded.
func (f *Forwarder) Counts() (byVerdict map[string]uint64, bytes uint64) {
	m := map[string]uint64{}
	for v := Verdict(0); v < numVerdicts; v++ {
		m[v.String()] = f.counts[v].Load()
	}
	return m, f.bytes.Load()
}
