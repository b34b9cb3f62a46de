package link_test

import (
	"math"
	"testing"
	"time"

	"glow/link"
)

func TestQuality(t *testing.T) {
	var q link.Quality
	t0 := time.Unix(1000, 0)
	if q.RTT() != 0 || q.Loss() != 0 {
		t.Fatal("zero value not empty")
	}
	q.Sent(1, t0)
	if !q.Acked(1, t0.Add(100*time.Millisecond)) {
		t.Fatal("ack of outstanding probe not taken")
	}
	if q.Acked(1, t0.Add(200*time.Millisecond)) {
		t.Error("duplicate ack taken")
	}
	if q.RTT() != 100*time.Millisecond {
		t.Errorf("first sample: RTT %v", q.RTT())
	}
	// EWMA: one sample of 200ms moves SRTT by 1/8 of the difference.
	q.Sent(2, t0.Add(time.Second))
	q.Acked(2, t0.Add(time.Second+200*time.Millisecond))
	if q.RTT() != 112500*time.Microsecond {
		t.Errorf("second sample: RTT %v", q.RTT())
	}
	// Many samples converge.
	for i := uint32(3); i < 100; i++ {
		at := t0.Add(time.Duration(i) * time.Second)
		q.Sent(i, at)
		q.Acked(i, at.Add(50*time.Millisecond))
	}
	if d := q.RTT() - 50*time.Millisecond; d < 0 || d > time.Millisecond {
		t.Errorf("converged RTT %v", q.RTT())
	}
	if q.Loss() != 0 {
		t.Errorf("loss %v", q.Loss())
	}
	// Expire counts unanswered probes older than the timeout.
	at := t0.Add(200 * time.Second)
	q.Sent(200, at)
	q.Sent(201, at.Add(time.Second))
	if n := q.Expire(at.Add(1500*time.Millisecond), time.Second); n != 1 {
		t.Errorf("expired %d, want 1", n)
	}
	if q.Outstanding() != 1 {
		t.Errorf("outstanding %d", q.Outstanding())
	}
	q.Lost(at)
	if got, want := q.Loss(), 2.0/link.QualityWindow; math.Abs(got-want) > 1e-9 {
		t.Errorf("loss %v, want %v", got, want)
	}
	// A window of losses only.
	for i := range link.QualityWindow {
		q.Lost(at.Add(time.Duration(i)))
	}
	if q.Loss() != 1 {
		t.Errorf("loss %v, want 1", q.Loss())
	}
	// Too many outstanding probes: the oldest count as lost.
	var p link.Quality
	for i := range uint32(20) {
		p.Sent(i, t0)
	}
	if p.Outstanding() != 16 || p.Loss() != 1 {
		t.Errorf("outstanding %d, loss %v", p.Outstanding(), p.Loss())
	}
	if p.Acked(0, t0) {
		t.Error("ack of a probe already counted lost")
	}
}

func TestClass(t *testing.T) {
	for c, want := range map[link.Class]string{0: "unknown", link.ClassLocal: "local", link.ClassWAN: "wan", link.ClassControl: "control"} {
		if c.String() != want {
			t.Errorf("%d: %q", c, c.String())
		}
	}
}

func TestBackoff(t *testing.T) {
	r := 0.0
	b := link.Backoff{Min: 100 * time.Millisecond, Max: time.Second, Rand: func() float64 { return r }}
	var got []time.Duration
	for range 6 {
		got = append(got, b.Next())
	}
	want := []time.Duration{50, 100, 200, 400, 500, 500}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Errorf("lower bound: got %v", got)
			break
		}
	}
	b.Reset()
	r = 0.999
	if d := b.Next(); d < 99*time.Millisecond || d >= 100*time.Millisecond {
		t.Errorf("upper bound after reset: %v", d)
	}
	// Zero value: 1s..60s, jittered within [d/2, d).
	var z link.Backoff
	for i := range 100 {
		d := z.Next()
		if d < 500*time.Millisecond || d >= 60*time.Second {
			t.Fatalf("call %d: %v", i, d)
		}
	}
}
