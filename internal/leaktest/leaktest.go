// Package leaktest checks, in tests, that a test leaves no goroutines
// behind once its cleanups (which close servers, clients and links) have
// run.
package leaktest

import (
	"runtime"
	"testing"
	"time"
)

// Check fails t if, 3 s after t's later-registered cleanups have run, more
// goroutines are running than when Check was called. Call it first in the
// test, so that its cleanup runs last.
func Check(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines leaked: %d before, %d after\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
