package overlay

import (
	"net/netip"
	"testing"
	"time"
)

func TestSourceLimiter(t *testing.T) {
	var l sourceLimiter
	now := time.Unix(1000, 0)
	a := netip.MustParseAddr("192.0.2.1")
	ok := 0
	for range 3 * unauthBurst {
		if l.allow(a, now) {
			ok++
		}
	}
	if ok != unauthBurst {
		t.Fatalf("a burst of %d: %d allowed, want %d", 3*unauthBurst, ok, unauthBurst)
	}
	if !l.allow(a, now.Add(time.Second/unauthRate*2)) {
		t.Fatal("no token after the refill time")
	}
	if !l.allow(netip.MustParseAddr("192.0.2.2"), now) {
		t.Fatal("another source is limited by the first")
	}
	// The table is bounded; sources idle long enough make room.
	for i := range maxSources + 100 {
		l.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if n := l.sources(); n > maxSources {
		t.Fatalf("%d sources in the table (cap %d)", n, maxSources)
	}
	if l.allow(netip.MustParseAddr("198.51.100.1"), now) {
		t.Fatal("a new source admitted into a full table of busy sources")
	}
	if !l.allow(netip.MustParseAddr("198.51.100.1"), now.Add(2*time.Second)) {
		t.Fatal("a new source refused although the table's sources are idle")
	}
	// One IPv6 host holds a /64: it is one source.
	k1 := sourceKey(netip.MustParseAddr("2001:db8:1:2::1"))
	k2 := sourceKey(netip.MustParseAddr("2001:db8:1:2:ffff::9"))
	k3 := sourceKey(netip.MustParseAddr("2001:db8:1:3::1"))
	if k1 != k2 || k1 == k3 {
		t.Fatalf("IPv6 source keys %v %v %v", k1, k2, k3)
	}
	if sourceKey(netip.MustParseAddr("::ffff:192.0.2.1")) != a {
		t.Fatal("a v4-mapped address is not its v4 source")
	}
}
