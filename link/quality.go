package link

// Link class and quality: what routing weighs a link by, and how often a
// dropped link is retried. Everything here is pure: the caller passes the
// time in and owns the value (no locks; one owner goroutine).

import (
	"math/rand/v2"
	"time"
)

// Class is what a link is for, which routing weighs.
type Class uint8

// Link classes. The zero Class is unknown.
const (
	ClassLocal   Class = iota + 1 // same LAN (discovery, a private address)
	ClassWAN                      // across the Internet: direct UDP, TCP, WebSocket
	ClassControl                  // slow or costly (ssh, serial): control traffic, last-resort data
)

func (c Class) String() string {
	switch c {
	case ClassLocal:
		return "local"
	case ClassWAN:
		return "wan"
	case ClassControl:
		return "control"
	}
	return "unknown"
}

// Quality window sizes.
const (
	// QualityWindow is how many probe outcomes Loss averages over.
	QualityWindow = 32
	// maxPending bounds probes awaiting an answer; the oldest beyond it
	// counts as lost.
	maxPending = 16
)

// Quality tracks a link's round-trip time and loss from probe events.
//
// RTT is an exponentially weighted moving average (weight 1/8 per sample,
// as TCP's SRTT in RFC 6298), seeded by the first sample. Loss is the share
// of lost probes among the last QualityWindow outcomes. A probe is lost when
// the caller says so (Lost), when it is still unanswered at Expire, or when
// more than 16 probes are outstanding. The zero value is ready to use.
type Quality struct {
	srtt    time.Duration
	rttvar  time.Duration
	samples uint64
	lastAck time.Time

	pending []probe // in send order

	outcomes [QualityWindow]bool // true: lost
	next     int                 // ring position
	count    int                 // outcomes recorded, up to QualityWindow
}

type probe struct {
	id   uint32
	sent time.Time
}

// Sent records that probe id left at now.
func (q *Quality) Sent(id uint32, now time.Time) {
	if len(q.pending) >= maxPending {
		q.pending = q.pending[1:]
		q.record(true)
	}
	q.pending = append(q.pending, probe{id, now})
}

// Acked records the answer to probe id arriving at now and reports whether
// id was outstanding (a duplicate or unknown answer changes nothing).
func (q *Quality) Acked(id uint32, now time.Time) bool {
	for i, p := range q.pending {
		if p.id != id {
			continue
		}
		q.pending = append(q.pending[:i], q.pending[i+1:]...)
		rtt := max(now.Sub(p.sent), 0)
		if q.samples == 0 {
			q.srtt, q.rttvar = rtt, rtt/2
		} else {
			d := q.srtt - rtt
			if d < 0 {
				d = -d
			}
			q.rttvar += (d - q.rttvar) / 4
			q.srtt += (rtt - q.srtt) / 8
		}
		q.samples++
		if now.After(q.lastAck) {
			q.lastAck = now
		}
		q.record(false)
		return true
	}
	return false
}

// Lost records one lost probe (one the caller gave up on, or failed to send).
func (q *Quality) Lost(now time.Time) { q.record(true) }

// Expire counts every probe sent more than timeout before now as lost and
// returns how many it counted.
func (q *Quality) Expire(now time.Time, timeout time.Duration) int {
	n := 0
	for n < len(q.pending) && now.Sub(q.pending[n].sent) > timeout {
		n++
	}
	q.pending = q.pending[n:]
	for range n {
		q.record(true)
	}
	return n
}

func (q *Quality) record(lost bool) {
	q.outcomes[q.next] = lost
	q.next = (q.next + 1) % QualityWindow
	q.count = min(q.count+1, QualityWindow)
}

// RTT returns the smoothed round-trip time, 0 before the first answer.
func (q *Quality) RTT() time.Duration { return q.srtt }

// RTTVar returns the smoothed mean deviation of the round-trip time.
func (q *Quality) RTTVar() time.Duration { return q.rttvar }

// Loss returns the share of lost probes in the window, 0 to 1 (0 before any
// outcome).
func (q *Quality) Loss() float64 {
	if q.count == 0 {
		return 0
	}
	lost := 0
	for i := range q.count {
		if q.outcomes[i] {
			lost++
		}
	}
	return float64(lost) / float64(q.count)
}

// LastAck returns when the last answer arrived (zero if none has).
func (q *Quality) LastAck() time.Time { return q.lastAck }

// Outstanding returns how many probes await an answer.
func (q *Quality) Outstanding() int { return len(q.pending) }

// Backoff paces reconnect attempts: exponential from Min to Max with
// jitter, so that many nodes that lost one relay do not all return at once.
// The zero value uses 1s to 60s. Not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	// Rand returns a number in [0, 1); nil means math/rand/v2. Tests fix it.
	Rand func() float64

	attempt int
}

// Next returns how long to wait before the next attempt: the n-th call
// (from 0) draws from [d/2, d) with d = Min·2ⁿ capped at Max.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = time.Second
	}
	if hi <= 0 {
		hi = 60 * time.Second
	}
	hi = max(hi, lo)
	d := lo
	for i := 0; i < b.attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if b.attempt < 62 {
		b.attempt++
	}
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	return d/2 + time.Duration(r()*float64(d/2))
}

// Reset starts over from Min, after a connection that worked.
func (b *Backoff) Reset() { b.attempt = 0 }
