package relay

import (
	"time"

	"glow/internal/wire"
)

// Credit is part of one source's rate limit taken out of its bucket at
// once, for the frames of a batch that repeat a header Allow let through:
// Spend checks each such frame against the credit (no lock, no atomic),
// and Give returns what is left at the end of the batch. Each frame still
// meets its source's packet and byte limits and is counted, as with Again,
// but the bucket's lock and the counters are touched once per run of
// frames instead of once per frame.
//
// The zero Credit holds nothing. A Credit belongs to one goroutine.
type Credit struct {
	src          wire.ShortID
	pkts, bytes  float64 // tokens left
	held         bool    // taken from src's bucket, not yet given back
	fwd, limited uint64  // frames forwarded and refused with this credit
	fwdBytes     uint64
}

// Spend decides for one more frame of n bytes from src, with the same
// neighbour, source, destination and hop limit as one Allow just let
// through (like Again). If c does not cover it (it holds nothing, another
// source's credit, or too little), c is given back and a new credit taken
// from src's bucket for up to more frames of n bytes (this one included):
// what the bucket holds, no more.
func (f *Forwarder) Spend(c *Credit, src wire.ShortID, n, more int, now time.Time) Verdict {
	if !c.held || c.src != src || c.pkts < 1 || c.bytes < float64(n) {
		f.Give(c)
		f.take(c, src, max(more, 1), max(more, 1)*n, now)
	}
	if c.pkts < 1 || c.bytes < float64(n) {
		c.limited++
		return DropRateLimited
	}
	c.pkts--
	c.bytes -= float64(n)
	c.fwd++
	c.fwdBytes += uint64(n)
	return Forward
}

// take moves up to pkts frames and bytes bytes of src's limits at now (as
// much as its bucket holds) into c, which holds nothing.
func (f *Forwarder) take(c *Credit, src wire.ShortID, pkts, bytes int, now time.Time) {
	b := (*f.buckets.Load())[src]
	if b == nil {
		b = f.newBucket(src, now)
	}
	b.mu.Lock()
	f.refill(b, now)
	p, n := min(float64(pkts), b.pkts), min(float64(bytes), b.bytes)
	b.pkts -= p
	b.bytes -= n
	b.mu.Unlock()
	*c = Credit{src: src, pkts: p, bytes: n, held: true}
}

// Give returns what is left of c to its source's bucket, counts the frames
// decided with it, and leaves c holding nothing. A c that holds nothing is
// left alone.
func (f *Forwarder) Give(c *Credit) {
	if !c.held {
		return
	}
	if c.pkts > 0 || c.bytes > 0 {
		if b := (*f.buckets.Load())[c.src]; b != nil {
			b.mu.Lock()
			b.pkts = min(f.burstP, b.pkts+c.pkts)
			b.bytes = min(f.burstB, b.bytes+c.bytes)
			b.mu.Unlock()
		}
	}
	if c.fwd > 0 {
		f.counts[Forward].Add(c.fwd)
		f.bytes.Add(c.fwdBytes)
	}
	if c.limited > 0 {
		f.counts[DropRateLimited].Add(c.limited)
	}
	*c = Credit{}
}
