package overlay

// Bounding wireguard-go's memory.
//
// wireguard-go gives every packet in flight its own 64 KiB buffer from an
// unbounded pool, and its queues hold up to 1024 batches per stage. A TCP
// sender that is faster than the encryption (or a peer faster than our
// decryption) fills those queues: plain wireguard-go grows to 300-500 MiB
// here. Glow bounds the packets inside wireguard-go in each direction
// instead, at the two ends of the pipeline that it owns:
//
//	outbound: TUN Read   (+n)  ... encrypt ...  Bind.Send   (-n)
//	inbound:  Bind recv  (+n)  ... decrypt ...  TUN Write   (-n)
//
// When more than inflightLimit packets are inside, the next TUN Read (or
// socket read) waits until some leave. The wait pushes back where it should:
// into the kernel's TUN queue, whose drops slow the sending TCP down, and
// into the UDP socket buffer.
//
// The count is a soft bound. wireguard-go drops some packets it was given
// (no peer for the address, replayed, stale keys): those never reach the far
// end, so the count drifts up. A wait therefore ends when nothing has left
// for inflightStall, taking what is still counted as dropped, and the
// node's loop zeroes an idle direction's count.

import (
	"sync/atomic"
	"time"
)

const (
	// inflightLimit packets per direction: at ~1.4 KB each, 1 MB of data,
	// enough to keep both cores busy with 128-packet batches (see
	// BENCHMARKS.md); wireguard-go holds each in a 64 KiB buffer.
	inflightLimit = 128
	// inflightStall ends a wait when no packet left in that time.
	inflightStall = 5 * time.Millisecond
)

// inflight counts the packets between two points of wireguard-go's pipeline.
type inflight struct {
	n     atomic.Int64
	left  atomic.Uint64 // packets that left so far, to tell a stall
	wake  chan struct{}
	limit int64
}

func newInflight(limit int) *inflight {
	return &inflight{limit: int64(limit), wake: make(chan struct{}, 1)}
}

// add counts k packets handed to wireguard-go.
func (f *inflight) add(k int) {
	if k > 0 {
		f.n.Add(int64(k))
	}
}

// done counts k packets that left wireguard-go, waking a waiter when the
// count falls to the limit.
func (f *inflight) done(k int) {
	if k <= 0 {
		return
	}
	f.left.Add(uint64(k))
	v := f.n.Add(-int64(k))
	if v < 0 {
		f.n.CompareAndSwap(v, 0) // packets counted before a reset
	}
	if v <= f.limit && v+int64(k) > f.limit {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

// wait returns when at most limit packets are in flight, or when none has
// left for inflightStall (they were dropped inside wireguard-go, and the
// count starts again from zero). Only the one goroutine that feeds this
// direction waits, with its own timer t.
func (f *inflight) wait(t **time.Timer) {
	for f.n.Load() > f.limit {
		before := f.left.Load()
		if *t == nil {
			*t = time.NewTimer(inflightStall)
		} else {
			(*t).Reset(inflightStall)
		}
		select {
		case <-f.wake:
			(*t).Stop()
		case <-(*t).C:
			if f.left.Load() == before {
				f.n.Store(0)
				return
			}
		}
	}
}

// idle zeroes the count if no packet left since the last call (the loop
// calls it every tick): whatever is counted then was dropped.
func (f *inflight) idle(lastLeft *uint64) {
	l := f.left.Load()
	if l == *lastLeft {
		f.n.Store(0)
	}
	*lastLeft = l
}
