package overlay

import (
	"testing"
	"testing/synctest"
	"time"
)

// A full pipeline makes the feeder wait until packets leave, however long
// that takes as long as some keep leaving (each within inflightStall).
// Under synctest the clock moves only when every goroutine is blocked, so
// the order of the feeder's wait and the drain is fixed, not raced.
func TestInflightWaitsForRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newInflight(4)
		var timer *time.Timer
		f.add(10)
		released := make(chan struct{})
		go func() {
			// 10 -> 5, one packet per 4/5 of the stall time: still above
			// the limit, and never a stall.
			for range 5 {
				time.Sleep(inflightStall * 4 / 5)
				f.done(1)
			}
			close(released)
			f.done(2) // 3: room
		}()
		start := time.Now()
		f.wait(&timer)
		select {
		case <-released:
		default:
			t.Fatalf("wait returned after %v while more than the limit were in flight", time.Since(start))
		}
		if got := f.n.Load(); got != 3 {
			t.Fatalf("in flight = %d, want 3", got)
		}
		if got, want := time.Since(start), 5*inflightStall*4/5; got != want {
			t.Fatalf("waited %v on the fake clock, want %v (until the drain made room)", got, want)
		}
	})
}

// A wait that was woken for room, but finds the count above the limit again
// (the feeder's count is added to concurrently), keeps waiting.
func TestInflightWakeWithoutRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newInflight(4)
		var timer *time.Timer
		f.add(5)
		go func() {
			time.Sleep(inflightStall / 2)
			f.done(1) // 4: wakes the waiter...
			f.add(1)  // ...but 5 again before it looks
			synctest.Wait()
			time.Sleep(inflightStall / 2)
			f.done(1)
		}()
		start := time.Now()
		f.wait(&timer)
		if got := f.n.Load(); got != 4 {
			t.Fatalf("in flight = %d, want 4", got)
		}
		if got := time.Since(start); got != inflightStall {
			t.Fatalf("returned after %v, want %v (at the second drain)", got, inflightStall)
		}
	})
}

// Packets dropped inside wireguard-go never leave: a wait gives up on them
// after inflightStall instead of blocking the feeder for ever.
func TestInflightStallResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { inflightStallResets(t) })
}

func inflightStallResets(t *testing.T) {
	f := newInflight(4)
	var timer *time.Timer
	f.add(100)
	start := time.Now()
	f.wait(&timer)
	if waited := time.Since(start); waited != inflightStall {
		t.Fatalf("returned after %v on the fake clock, want the stall time %v", waited, inflightStall)
	}
	if got := f.n.Load(); got != 0 {
		t.Fatalf("in flight after a stall = %d, want 0", got)
	}
	// Packets counted before the reset that leave later do not make room
	// below zero.
	f.done(10)
	if got := f.n.Load(); got != 0 {
		t.Fatalf("in flight = %d, want 0", got)
	}
}

// The loop's idle check forgets counts that did not move for a tick.
func TestInflightIdle(t *testing.T) {
	f := newInflight(4)
	var left uint64
	f.add(3)
	f.done(1)
	f.idle(&left) // packets left since the last check: kept
	if got := f.n.Load(); got != 2 {
		t.Fatalf("in flight = %d, want 2", got)
	}
	f.idle(&left) // nothing left since: dropped
	if got := f.n.Load(); got != 0 {
		t.Fatalf("in flight after an idle tick = %d, want 0", got)
	}
}
