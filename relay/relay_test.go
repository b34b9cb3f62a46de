package relay

import (
	"testing"
	"time"

	"glow/internal/wire"
)

func TestForwarder(t *testing.T) {
	a, b, stranger := wire.ShortID{1}, wire.ShortID{2}, wire.ShortID{9}
	f := New(Limits{PacketsPerSecond: 10, BytesPerSecond: 1e6, Burst: time.Second})
	now := time.Unix(100, 0)
	if v := f.Allow(a, b, 8, 100, now); v != DropUntrusted {
		t.Fatalf("no trust set: %v", v)
	}
	f.SetTrust(func(src, dst wire.ShortID) bool { return src != stranger && dst != stranger })
	if v := f.Allow(a, b, 8, 100, now); v != Forward {
		t.Fatalf("trusted: %v", v)
	}
	if v := f.Allow(stranger, b, 8, 100, now); v != DropUntrusted {
		t.Fatalf("stranger as source: %v", v)
	}
	if v := f.Allow(a, stranger, 8, 100, now); v != DropUntrusted {
		t.Fatalf("stranger as destination: %v", v)
	}
	if v := f.Allow(a, b, 1, 100, now); v != DropHopLimit {
		t.Fatalf("hop limit: %v", v)
	}
	// Burst of 10 packets per source; one was used above.
	n := 0
	for i := 0; i < 20; i++ {
		if f.Allow(a, b, 8, 100, now) == Forward {
			n++
		}
	}
	if n != 9 {
		t.Fatalf("forwarded %d of the burst, want 9", n)
	}
	// Another source has its own bucket.
	if v := f.Allow(b, a, 8, 100, now); v != Forward {
		t.Fatalf("other source limited by a's bucket: %v", v)
	}
	// Half a second later, 5 more.
	n = 0
	for i := 0; i < 20; i++ {
		if f.Allow(a, b, 8, 100, now.Add(500*time.Millisecond)) == Forward {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("after refill forwarded %d, want 5", n)
	}
	counts, bytes := f.Counts()
	if counts["forwarded"] != 16 || counts["untrusted"] != 3 || counts["hop-limit"] != 1 || counts["rate-limited"] != 26 || bytes != 1600 {
		t.Fatalf("counts %v bytes %d", counts, bytes)
	}
	// Byte limit.
	g := New(Limits{PacketsPerSecond: 1e6, BytesPerSecond: 1000, Burst: time.Second})
	g.SetTrust(func(_, _ wire.ShortID) bool { return true })
	if g.Allow(a, b, 8, 900, now) != Forward || g.Allow(a, b, 8, 200, now) != DropRateLimited {
		t.Fatal("byte limit")
	}
}

func BenchmarkAllow(b *testing.B) {
	f := New(Limits{})
	f.SetTrust(func(_, _ wire.ShortID) bool { return true })
	now := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		f.Allow(wire.ShortID{1}, wire.ShortID{2}, 8, 1400, now)
	}
}
