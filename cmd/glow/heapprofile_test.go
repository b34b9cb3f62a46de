package main

import (
	"runtime"
	"testing"
)

// TestNoHeapProfile: the daemon turns the heap profiler off, unless
// GODEBUG=memprofilerate=N asks for one.
func TestNoHeapProfile(t *testing.T) {
	defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)

	runtime.MemProfileRate = 512 * 1024
	t.Setenv("GODEBUG", "asynctimerchan=0")
	noHeapProfile()
	if runtime.MemProfileRate != 0 {
		t.Errorf("MemProfileRate = %d after noHeapProfile, want 0", runtime.MemProfileRate)
	}

	runtime.MemProfileRate = 4096
	t.Setenv("GODEBUG", "memprofilerate=4096")
	noHeapProfile()
	if runtime.MemProfileRate != 4096 {
		t.Errorf("MemProfileRate = %d with GODEBUG=memprofilerate=4096, want it kept", runtime.MemProfileRate)
	}
}
