package leaktest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB whose cleanups the test runs by hand and whose
// errors it reads.
type recorder struct {
	testing.TB
	cleanups []func()
	errs     []string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Failed() bool              { return len(r.errs) > 0 }
func (r *recorder) Cleanup(f func())          { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(f string, a ...any) { r.errs = append(r.errs, fmt.Sprintf(f, a...)) }

func (r *recorder) finish() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func parkedUntil(stop chan struct{}) { <-stop }

// TestCheckReportsLeak: a goroutine started after Check and still blocked
// when the cleanups have run is reported, with its stack.
func TestCheckReportsLeak(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	r := &recorder{TB: t}
	check(r, 200*time.Millisecond)
	go parkedUntil(stop)
	r.finish()
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "created by glow/internal/leaktest.TestCheckReportsLeak") {
		t.Fatalf("leak not reported with its stack: %q", r.errs)
	}
}

// TestCheckWaitsForExit: a goroutine that ends a little after the cleanups
// (as a closed node's readers do) is not a leak; neither are goroutines
// that were running before Check, nor a second Check in the same test.
func TestCheckWaitsForExit(t *testing.T) {
	old := make(chan struct{})
	go parkedUntil(old)
	defer close(old)

	r := &recorder{TB: t}
	Check(r)
	Check(r) // a helper's call: no second cleanup
	if len(r.cleanups) != 1 {
		t.Fatalf("%d cleanups registered, want 1", len(r.cleanups))
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { parkedUntil(stop); time.Sleep(100 * time.Millisecond); close(done) }()
	r.cleanups = append(r.cleanups, func() { close(stop) })
	r.finish()
	if len(r.errs) != 0 {
		t.Fatalf("reported a goroutine that ended: %q", r.errs)
	}
	select {
	case <-done:
	default:
		t.Fatal("Check returned before the goroutine ended")
	}
}

// TestIgnoresHarness: subtests' runner goroutines, started after Check,
// are the harness's and not reported.
func TestIgnoresHarness(t *testing.T) {
	r := &recorder{TB: t}
	Check(r)
	t.Run("sub", func(t *testing.T) { t.Parallel() })
	r.finish()
	if len(r.errs) != 0 {
		t.Fatalf("reported harness goroutines: %q", r.errs)
	}
}

// TestParallelTestsNotBlamed: a goroutine that a parallel test starts (and
// keeps) while this test runs is that test's, not this one's; a leak of
// this test's own goroutines is still reported (the overlay NAT matrix's
// parallel subtests blamed each other's nodes before).
func TestParallelTestsNotBlamed(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	ready := make(chan struct{})
	started := make(chan struct{})
	finish := make(chan struct{})
	var errs []string
	t.Run("group", func(t *testing.T) {
		t.Run("checked", func(t *testing.T) {
			t.Parallel()
			r := &recorder{TB: t}
			check(r, 200*time.Millisecond)
			close(ready)
			<-started // the other test's goroutine now runs
			r.finish()
			errs = r.errs
			close(finish)
		})
		t.Run("other", func(t *testing.T) {
			t.Parallel()
			<-ready
			go parkedUntil(stop) // the other test's, still running
			close(started)
			<-finish // this test stays alive while the first checks
		})
	})
	if len(errs) != 0 {
		t.Fatalf("blamed a parallel test's goroutine: %q", errs)
	}
}
