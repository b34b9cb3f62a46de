package main

import (
	"strings"
	"testing"
)

func TestDNSTargets(t *testing.T) {
	lines := []string{
		"pkg: glow/dns",
		"BenchmarkServeUDP-2         	    2000	      5803 ns/op	    172334 qps	     500 B/op	      10 allocs/op",
		"BenchmarkForwardUDP-2       	    2000	     26397 ns/op	     37883 qps	    3799 B/op	      65 allocs/op",
		"BenchmarkLatencyLocal-2     	    2000	      6883 ns/op	         6.316 p50-µs	        23.46 p99-µs",
		"BenchmarkLatencyForward-2   	    2000	     72079 ns/op	        63.63 p50-µs	       193.1 p99-µs",
	}
	got := strings.Join(dnsTargets(lines), "\n")
	for _, want := range []string{"172334 (forwarded: 37883) (target >= 20000) ok", "p50: 6 µs (forwarded: 64 µs, 0.10x) (target <= 1000 µs) ok"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if got := strings.Join(dnsTargets(lines[:2]), "\n"); !strings.Contains(got, "not measured") {
		t.Errorf("partial input: %s", got)
	}
}
