// Package leaktest checks, in tests, that a test leaves no goroutines
// behind once its cleanups (which close nodes, servers, clients and links)
// have run.
//
// Use:
//
//	func TestX(t *testing.T) {
//		leaktest.Check(t) // first, so that its cleanup runs last
//		...
//	}
//
// Check remembers the goroutines alive when it is called and, after the
// test's later cleanups, waits (a bounded time, polling) until every
// goroutine started since has ended. Goroutines of the runtime and of the
// testing package, and goroutines that existed before Check, are ignored,
// so tests that run in parallel or share package-level servers do not
// blame each other for what was already there. A goroutine started since
// is followed up its "created by ... in goroutine N" chain: one that
// descends from another test's goroutine still running (a parallel test)
// is that test's, not this one's. A chain that breaks (its creator has
// ended) counts as this test's, so a leak is never missed for it.
//
// Check is idempotent per test: a helper (a node builder, say) may call it
// as well, and only the first call in a test counts.
package leaktest

import (
	"bytes"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Wait is how long Check waits, after the test's cleanups, for goroutines
// to end. It is generous: under load, closing a node's sockets and timers
// takes time, and this bounds only how long a leaking test takes to fail.
const Wait = 10 * time.Second

var checked sync.Map // testing.TB -> struct{}

// Check fails t if, within Wait after t's later-registered cleanups have
// run, goroutines started after Check was called are still running. Call it
// first in the test, so that its cleanup runs last.
func Check(t testing.TB) {
	t.Helper()
	check(t, Wait)
}

func check(t testing.TB, wait time.Duration) {
	if _, dup := checked.LoadOrStore(t, struct{}{}); dup {
		return
	}
	before := map[uint64]bool{}
	for _, g := range interesting() {
		before[g.id] = true
	}
	self := callerID()
	t.Cleanup(func() {
		defer checked.Delete(t)
		if t.Failed() {
			// A failed test may well have left things running; the
			// failure that matters is already reported.
			return
		}
		var left []goroutine
		deadline := time.Now().Add(wait)
		for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
			left = left[:0]
			owner := otherTests(self)
			for _, g := range interesting() {
				if !before[g.id] && !owner(g.id) {
					left = append(left, g)
				}
			}
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(pause)
		}
		if len(left) == 0 {
			return
		}
		var b strings.Builder
		for _, g := range left {
			b.WriteString("\n\n")
			b.WriteString(g.stack)
		}
		t.Errorf("leaktest: %d goroutine(s) started by the test still running %v after its cleanups:%s", len(left), wait, b.String())
	})
}

type goroutine struct {
	id    uint64
	stack string
}

// interesting returns the goroutines other than the caller's, the
// runtime's and the testing package's.
func interesting() []goroutine {
	buf := allStacks()
	var gs []goroutine
	for i, s := range bytes.Split(buf, []byte("\n\n")) {
		if i == 0 {
			continue // the caller
		}
		g, ok := parse(string(s))
		if ok && !ignored(g.stack) {
			gs = append(gs, g)
		}
	}
	return gs
}

// allStacks is runtime.Stack of every goroutine, whole.
func allStacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return buf
}

// callerID is the id of the calling goroutine.
func callerID() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	g, _ := parse(string(buf))
	return g.id
}

// otherTests returns whether a goroutine alive now descends, by its
// "created by ... in goroutine N" chain through goroutines alive now, from
// a test goroutine other than self (a test running in parallel).
func otherTests(self uint64) func(id uint64) bool {
	buf := allStacks()
	creator := map[uint64]uint64{}
	tests := map[uint64]bool{}
	for _, s := range bytes.Split(buf, []byte("\n\n")) {
		g, ok := parse(string(s))
		if !ok {
			continue
		}
		if strings.Contains(g.stack, "\ntesting.tRunner(") {
			tests[g.id] = true
		}
		if i := strings.LastIndex(g.stack, " in goroutine "); i > 0 {
			idText, _, _ := strings.Cut(g.stack[i+len(" in goroutine "):], "\n")
			if c, err := strconv.ParseUint(strings.TrimSpace(idText), 10, 64); err == nil {
				creator[g.id] = c
			}
		}
	}
	return func(id uint64) bool {
		for range len(creator) + 1 { // a chain is no longer than the goroutines
			c, ok := creator[id]
			switch {
			case !ok || c == self:
				return false
			case tests[c]:
				return true
			}
			id = c
		}
		return false
	}
}

// parse reads a goroutine's id from its "goroutine N [state]:" header.
func parse(s string) (goroutine, bool) {
	rest, ok := strings.CutPrefix(s, "goroutine ")
	if !ok {
		return goroutine{}, false
	}
	idText, _, ok := strings.Cut(rest, " ")
	if !ok {
		return goroutine{}, false
	}
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil {
		return goroutine{}, false
	}
	return goroutine{id: id, stack: s}, true
}

// ignoredFuncs are top or creating functions of goroutines that belong to
// the runtime or the test harness, not to the code under test.
var ignoredFuncs = []string{
	"testing.RunTests",
	"testing.(*T).Run",
	"testing.(*T).Parallel",
	"testing.(*F).Fuzz",
	"testing.runFuzzTests",
	"testing.runFuzzing",
	"testing.tRunner.func1",
	"testing.(*M).",
	"testing.runExample",
	"testing.(*B).",
	"main.main",
	"runtime.gc",
	"runtime.bgsweep",
	"runtime.bgscavenge",
	"runtime.forcegchelper",
	"runtime.runfinq",
	"runtime.runCleanups",
	"runtime.ReadTrace",
	"runtime/trace.Start",
	"os/signal.signal_recv",
	"os/signal.loop",
}

// ignored reports whether a goroutine's stack is one of the harness's:
// its first (innermost user) function or its creator is in ignoredFuncs.
func ignored(stack string) bool {
	lines := strings.Split(stack, "\n")
	if len(lines) < 2 {
		return true
	}
	var funcs []string
	for _, l := range lines[1:] {
		if l == "" || strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "runtime.goexit(") {
			continue
		}
		f := l
		if i := strings.LastIndex(f, "("); i > 0 && strings.HasSuffix(f, ")") {
			f = f[:i]
		}
		f = strings.TrimPrefix(f, "created by ")
		if i := strings.Index(f, " in goroutine"); i > 0 {
			f = f[:i]
		}
		funcs = append(funcs, f)
	}
	if len(funcs) == 0 {
		return true
	}
	// The goroutine's own entry function is the last frame before its
	// "created by" line; the creator is the last line.
	entry, creator := funcs[len(funcs)-1], ""
	if strings.Contains(stack, "\ncreated by ") && len(funcs) >= 2 {
		entry, creator = funcs[len(funcs)-2], funcs[len(funcs)-1]
	}
	if slices.ContainsFunc(ignoredFuncs, func(p string) bool { return strings.HasPrefix(entry, p) }) {
		return true
	}
	// The testing package's own helpers (the -timeout alarm, a test's
	// runner goroutine) are created by testing and run testing code.
	if strings.HasPrefix(entry, "testing.") && strings.HasPrefix(creator, "testing.") {
		return true
	}
	return false
}
