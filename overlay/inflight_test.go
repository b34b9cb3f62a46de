package overlay

import (
	"testing"
	"time"
)

// A full pipeline makes the feeder wait until packets leave.
func TestInflightWaitsForRoom(t *testing.T) {
	f := newInflight(4)
	var timer *time.Timer
	f.add(6)
	released := make(chan struct{})
	go func() {
		time.Sleep(2 * time.Millisecond)
		f.done(1) // 5: still above the limit
		time.Sleep(2 * time.Millisecond)
		close(released)
		f.done(2) // 3: room
	}()
	f.wait(&timer)
	select {
	case <-released:
	default:
		t.Fatal("wait returned while more than the limit were in flight")
	}
	if got := f.n.Load(); got != 3 {
		t.Fatalf("in flight = %d, want 3", got)
	}
}

// Packets dropped inside wireguard-go never leave: a wait gives up on them
// after inflightStall instead of blocking the feeder for ever.
func TestInflightStallResets(t *testing.T) {
	f := newInflight(4)
	var timer *time.Timer
	f.add(100)
	start := time.Now()
	f.wait(&timer)
	if waited := time.Since(start); waited < inflightStall {
		t.Fatalf("returned after %v, before the stall time", waited)
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
