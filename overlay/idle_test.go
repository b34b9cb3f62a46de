package overlay

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func loopTicks(n *Node) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.wakeAt.ticks
}

// TestBubbleIdleTicks: three nodes with direct paths and no traffic, past
// the start's bursts, run their control loops only for their timers
// (heartbeats every 10 s, digests and beacons every 5 s, info every 10 s),
// not on a fixed 250 ms tick (which made 2400 ticks in 10 minutes).
func TestBubbleIdleTicks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bubbleNet(t, "a", "b", "c")
		bubbleWait(t, time.Minute, "direct paths between all three", net.allDirect)
		time.Sleep(2 * time.Minute)
		var before []uint64
		for _, n := range net.nodes {
			before = append(before, loopTicks(n))
		}
		const window = 10 * time.Minute
		time.Sleep(window)
		for i, n := range net.nodes {
			ticks := loopTicks(n) - before[i]
			t.Logf("%s: %d control ticks in %v idle (%.2f a second)", n.Cert().Name, ticks, window, float64(ticks)/window.Seconds())
			// At most one every 2 s: each peer's heartbeat and pong, the
			// digests and beacons, in step or not.
			if max := uint64(window / (2 * time.Second)); ticks > max {
				t.Errorf("%s: %d control ticks in %v with idle peers, want at most %d", n.Cert().Name, ticks, window, max)
			}
		}
	})
}

// runDue ticks the rig's peers the way the control loop does: at the
// earliest deadline the last tick noted (dueLocked), no sooner than
// tickEvery after it and no later than maxSleep. after runs after each
// tick, as answers would arrive. It returns the number of ticks.
func (r *clockRig) runDue(until time.Time, after func(now time.Time)) int {
	r.t.Helper()
	ticks := 0
	for {
		var next time.Time
		r.locked(func() { next = r.n.wakeAt.next })
		if next.IsZero() || next.Sub(r.now) > maxSleep {
			next = r.now.Add(maxSleep)
		}
		if floor := r.now.Add(tickEvery); next.Before(floor) {
			next = floor
		}
		if next.After(until) {
			return ticks
		}
		r.locked(func() { r.n.wakeAt.next = time.Time{} }) // the tick notes every deadline anew
		r.tickAt(next)
		ticks++
		if after != nil {
			after(next)
		}
	}
}

// TestTimerDueHeartbeats: ticking only at the deadlines the peers' timers
// note, an idle peer's heartbeats still go at 10, 20, 30 s (in 8 ticks where
// the fixed 250 ms tick took 140), a busy peer's every 300 ms, and a busy
// path whose heartbeats stop being answered is dead between deadActive and
// deadActive+tickEvery after the first unanswered one, as with the fixed
// tick.
func TestTimerDueHeartbeats(t *testing.T) {
	r := newClockRig(t, "b")
	r.direct("b", addrX)
	t0 := r.now
	done := map[[12]byte]bool{}
	ticks := r.runDue(t0.Add(35*time.Second), func(time.Time) { r.answerPending(done) })
	got := offsets(r.pings("b", addrX, t0.Add(time.Nanosecond)), t0)
	t.Logf("idle: heartbeats at %v in %d ticks", got, ticks)
	if want := secs(10, 20, 30); !slices.Equal(got, want) {
		t.Fatalf("idle heartbeats at %v, want %v", got, want)
	}
	if ticks > 10 {
		t.Errorf("%d ticks in 35 s for one idle peer, want at most 10", ticks)
	}

	// Traffic starts: the data path tells the loop (touch reports it once).
	e := r.n.bind.Peer(r.peers["b"].cert.Node)
	t1 := r.now.Add(time.Second)
	if !e.touch(e.path.Load(), t1.UnixNano()) || e.touch(e.path.Load(), t1.Add(time.Millisecond).UnixNano()) {
		t.Fatal("touch does not report exactly the first send after an idle spell")
	}
	r.tickAt(t1) // the loop, woken
	cut := t1.Add(3 * time.Second)
	r.runDue(cut, func(now time.Time) {
		r.busy("b", now)
		r.answerPending(done)
	})
	busy := r.pings("b", addrX, t1)
	if iv := intervals(busy); len(busy) < 9 || slices.ContainsFunc(iv, func(d time.Duration) bool { return d != wantHeartbeatActive }) {
		t.Fatalf("busy heartbeats %v apart, want 300 ms", iv)
	}
	// From cut on nothing is answered.
	var lost time.Time
	r.runDue(cut.Add(3*time.Second), func(now time.Time) {
		r.busy("b", now)
		r.locked(func() {
			if lost.IsZero() && !r.peer("b").active.IsValid() {
				lost = now
			}
		})
	})
	first := r.pings("b", addrX, cut.Add(time.Nanosecond))
	if len(first) == 0 || lost.IsZero() {
		t.Fatalf("%d heartbeats after the cut, path lost at %v", len(first), lost)
	}
	if d := lost.Sub(first[0].at); d <= wantDeadActive || d > wantDeadActive+tickEvery {
		t.Fatalf("path lost %v after the first unanswered heartbeat, want within (1 s, 1.25 s]", d)
	}
	t.Logf("busy: heartbeats every %v; path lost %v after the first unanswered one", wantHeartbeatActive, lost.Sub(first[0].at))
}
