// Package relay decides whether this node forwards a relay frame for
// others, or takes one addressed to it, and keeps it from being an open
// proxy: it forwards only between nodes it trusts (its user's, and friends'
// for traffic between them), only frames that come from a neighbour
// entitled to send them, with a per-source rate and byte limit, and counts
// every decision.
//
// A frame's header is not authenticated, so its source is believed only
// as far as the neighbour it came from vouches for it. The caller (the
// overlay's receive path) names that neighbour: the peer whose proven path
// (UDP address or stream link) the frame arrived on; frames from anywhere
// else never get here (the caller drops and counts them). Then:
//
//   - a frame that still has the starting hop limit (wire.MaxHopLimit) has
//     crossed no relay, so its neighbour must be its source;
//   - otherwise the neighbour is a relay that forwarded it: one of this
//     user's nodes (trusted to relay for anyone it knows), or a friend's
//     node, which forwards only for its own user's nodes;
//   - no frame may carry a hop limit above wire.MaxHopLimit, or claim this
//     node as its source.
//
// The frame format is internal/wire's (RelayHeaderLen bytes, then an
// end-to-end encrypted WireGuard packet or a sealed control packet); this
// package never sees plaintext. The forwarding itself happens on the
// overlay's receive path, which asks a Forwarder for each frame; Allow and
// Accept are safe for concurrent use, read the membership table without a
// lock (copy on write), take only the frame source's own lock (Allow) and
// do not allocate once a source is known. The frames of a batch that
// repeat an allowed header take their source's limit as one Credit (Spend,
// Give): one lock and a few atomics per run of frames, not per frame.
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

// User says whose a node is, as far as relaying goes.
type User uint32

const (
	// Stranger is a node this one has no certificate for (the zero value,
	// so a node missing from Members is one).
	Stranger User = iota
	// Own is this node's user.
	Own
	// Friend users are numbered from Friend up, one number per user.
	Friend
)

// Members maps the nodes this node knows to their users.
type Members map[wire.ShortID]User

// Verdict is what Allow decided, and why.
type Verdict uint8

const (
	Forward             Verdict = iota // Allow: send it on
	DropUntrusted                      // a source or destination this node does not relay for
	DropRateLimited                    // the source's bucket is empty
	DropHopLimit                       // the hop limit ran out
	DropHopLimitTooHigh                // a hop limit above wire.MaxHopLimit
	DropSourceMismatch                 // the neighbour may not send frames of that source
	Deliver                            // Accept: a frame for this node, take it (not counted)
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
	case DropHopLimitTooHigh:
		return "hop-limit-too-high"
	case DropSourceMismatch:
		return "source-mismatch"
	case Deliver:
		return "delivered"
	}
	return "unknown"
}

// Forwarder applies trust and limits to frames in transit.
type Forwarder struct {
	limits         Limits
	burstP, burstB float64               // bucket sizes: limits times Burst
	members        atomic.Pointer[table] // nil: trust nothing

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

// table is a membership snapshot; immutable once published.
type table struct {
	self  wire.ShortID
	users Members
}

// New returns a Forwarder with the given limits (zero fields take defaults)
// that trusts nothing until SetMembers.
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
	f := &Forwarder{limits: l, burstP: l.PacketsPerSecond * l.Burst.Seconds(), burstB: l.BytesPerSecond * l.Burst.Seconds()}
	m := map[wire.ShortID]*bucket{}
	f.buckets.Store(&m)
	return f
}

// SetMembers replaces the membership table (on membership changes): self
// is this node, m every other node it has a certificate for. m must not
// change afterwards.
func (f *Forwarder) SetMembers(self wire.ShortID, m Members) {
	f.members.Store(&table{self: self, users: m})
}

// Allow decides for one frame of n bytes from src to dst with hop limit
// hops, which neighbour from sent this node, at now.
func (f *Forwarder) Allow(from, src, dst wire.ShortID, hops uint8, n int, now time.Time) Verdict {
	v := f.decide(from, src, dst, hops, n, now)
	f.counts[v].Add(1)
	if v == Forward {
		f.bytes.Add(uint64(n))
	}
	return v
}

// Again decides for one more frame of n bytes with the same neighbour,
// source, destination and hop limit as one that Allow just let through
// (the receive path checks once per batch and header): only src's rate
// limit is left to apply.
func (f *Forwarder) Again(src wire.ShortID, n int, now time.Time) Verdict {
	v := f.limit(src, n, now)
	f.counts[v].Add(1)
	if v == Forward {
		f.bytes.Add(uint64(n))
	}
	return v
}

// Accept decides for one frame addressed to this node from src with hop
// limit hops, which neighbour from sent: Deliver, or why not (counted).
func (f *Forwarder) Accept(from, src wire.ShortID, hops uint8) Verdict {
	t := f.members.Load()
	if t == nil {
		f.counts[DropUntrusted].Add(1)
		return DropUntrusted
	}
	v, _ := t.check(from, src, hops)
	if v == Forward {
		return Deliver
	}
	f.counts[v].Add(1)
	return v
}

// check applies the rules that hold for every frame, forwarded or not (see
// the package doc); Forward means they pass. It returns src's user too.
func (t *table) check(from, src wire.ShortID, hops uint8) (Verdict, User) {
	switch {
	case hops > wire.MaxHopLimit:
		return DropHopLimitTooHigh, Stranger
	case hops == 0:
		return DropHopLimit, Stranger
	case src == t.self:
		return DropSourceMismatch, Stranger // ours never come back to us
	}
	us := t.users[src]
	if us == Stranger {
		return DropUntrusted, us
	}
	if from == src {
		return Forward, us
	}
	if hops == wire.MaxHopLimit {
		return DropSourceMismatch, us // crossed no relay, so from must have made it
	}
	switch uf := t.users[from]; {
	case uf == Own, uf == us:
		return Forward, us
	case uf == Stranger:
		return DropUntrusted, us
	}
	return DropSourceMismatch, us // a friend's node relays for its own user only
}

func (f *Forwarder) decide(from, src, dst wire.ShortID, hops uint8, n int, now time.Time) Verdict {
	if hops == 1 {
		return DropHopLimit
	}
	t := f.members.Load()
	if t == nil {
		return DropUntrusted
	}
	v, us := t.check(from, src, hops)
	if v != Forward {
		return v
	}
	// Between this user's nodes, or a friend's and one of ours: never
	// between two nodes of other users.
	if ud := t.users[dst]; ud == Stranger || ud != Own && us != Own {
		return DropUntrusted
	}
	return f.limit(src, n, now)
}

// limit takes one frame of n bytes from src's bucket.
func (f *Forwarder) limit(src wire.ShortID, n int, now time.Time) Verdict {
	b := (*f.buckets.Load())[src]
	if b == nil {
		b = f.newBucket(src, now)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	f.refill(b, now)
	if b.pkts < 1 || b.bytes < float64(n) {
		return DropRateLimited
	}
	b.pkts--
	b.bytes -= float64(n)
	return Forward
}

// refill adds what the time since b's last refill earned; b.mu is held.
func (f *Forwarder) refill(b *bucket, now time.Time) {
	if dt := now.Sub(b.last); dt > 0 {
		s := dt.Seconds()
		b.pkts = min(f.burstP, b.pkts+s*f.limits.PacketsPerSecond)
		b.bytes = min(f.burstB, b.bytes+s*f.limits.BytesPerSecond)
		b.last = now
	}
}

// newBucket adds a full bucket for src (or returns the one another
// goroutine just added). Past 4096 sources, the buckets idle long enough to
// be full again are forgotten.
func (f *Forwarder) newBucket(src wire.ShortID, now time.Time) *bucket {
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
	b := &bucket{pkts: f.burstP, bytes: f.burstB, last: now}
	m[src] = b
	f.buckets.Store(&m)
	return b
}

// Counts returns how many frames got each verdict (frames delivered to
// this node aside), and the bytes forwarded.
func (f *Forwarder) Counts() (byVerdict map[string]uint64, bytes uint64) {
	m := map[string]uint64{}
	for v := Verdict(0); v < numVerdicts; v++ {
		if v != Deliver {
			m[v.String()] = f.counts[v].Load()
		}
	}
	return m, f.bytes.Load()
}
