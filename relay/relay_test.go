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
	if v := f.Allow(a, a, b, 8, 100, now); v != DropUntrusted {
		t.Fatalf("no members set: %v", v)
	}
	f.SetMembers(wire.ShortID{7}, Members{a: Own, b: Own})
	if v := f.Allow(a, a, b, 8, 100, now); v != Forward {
		t.Fatalf("trusted: %v", v)
	}
	if v := f.Allow(stranger, stranger, b, 8, 100, now); v != DropUntrusted {
		t.Fatalf("stranger as source: %v", v)
	}
	if v := f.Allow(a, a, stranger, 8, 100, now); v != DropUntrusted {
		t.Fatalf("stranger as destination: %v", v)
	}
	if v := f.Allow(a, a, b, 1, 100, now); v != DropHopLimit {
		t.Fatalf("hop limit: %v", v)
	}
	// Burst of 10 packets per source; one was used above.
	n := 0
	for i := 0; i < 20; i++ {
		if f.Allow(a, a, b, 8, 100, now) == Forward {
			n++
		}
	}
	if n != 9 {
		t.Fatalf("forwarded %d of the burst, want 9", n)
	}
	// Another source has its own bucket.
	if v := f.Allow(b, b, a, 8, 100, now); v != Forward {
		t.Fatalf("other source limited by a's bucket: %v", v)
	}
	// Half a second later, 5 more.
	n = 0
	for i := 0; i < 20; i++ {
		if f.Allow(a, a, b, 8, 100, now.Add(500*time.Millisecond)) == Forward {
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
	if _, ok := counts["delivered"]; ok {
		t.Fatalf("counts show deliveries: %v", counts)
	}
	// Byte limit.
	g := New(Limits{PacketsPerSecond: 1e6, BytesPerSecond: 1000, Burst: time.Second})
	g.SetMembers(wire.ShortID{7}, Members{a: Own, b: Own})
	if g.Allow(a, a, b, 8, 900, now) != Forward || g.Allow(a, a, b, 8, 200, now) != DropRateLimited {
		t.Fatal("byte limit")
	}
}

// TestForwarderAgain: a frame that repeats an allowed header still meets
// its source's rate limit, and is counted.
func TestForwarderAgain(t *testing.T) {
	a, b := wire.ShortID{1}, wire.ShortID{2}
	f := New(Limits{PacketsPerSecond: 10, BytesPerSecond: 1e6, Burst: time.Second})
	f.SetMembers(wire.ShortID{7}, Members{a: Own, b: Own})
	now := time.Unix(100, 0)
	if v := f.Allow(a, a, b, 8, 100, now); v != Forward {
		t.Fatalf("first: %v", v)
	}
	n := 0
	for i := 0; i < 20; i++ {
		if f.Again(a, 100, now) == Forward {
			n++
		}
	}
	counts, bytes := f.Counts()
	if n != 9 || counts["forwarded"] != 10 || counts["rate-limited"] != 11 || bytes != 1000 {
		t.Fatalf("again: %d forwarded, counts %v, bytes %d", n, counts, bytes)
	}
}

// TestForwarderNeighbours: who may hand this node a frame of which source
// (issue 11, item 2). self is this node; a, b are its user's nodes; f1, f2
// nodes of friend 1, g1 a node of friend 2.
func TestForwarderNeighbours(t *testing.T) {
	self, a, b := wire.ShortID{0xee}, wire.ShortID{1}, wire.ShortID{2}
	f1, f2, g1, x := wire.ShortID{3}, wire.ShortID{4}, wire.ShortID{5}, wire.ShortID{9}
	members := Members{a: Own, b: Own, f1: Friend, f2: Friend, g1: Friend + 1}
	const first, later = wire.MaxHopLimit, wire.MaxHopLimit - 2
	cases := []struct {
		name           string
		from, src, dst wire.ShortID
		hops           uint8
		want           Verdict // Allow's (dst another node), or Accept's (dst self)
	}{
		{"own node, own frame", a, a, b, first, Forward},
		{"own node relays for own", a, b, self, later, Deliver},
		{"own node relays for a friend", a, f1, b, later, Forward},
		{"own node claims a first hop of another", a, b, self, first, DropSourceMismatch},
		{"own node names this node", a, self, b, later, DropSourceMismatch},
		{"own node names this node, first hop", a, self, self, first, DropSourceMismatch},
		{"friend's node, own frame", f1, f1, a, first, Forward},
		{"friend's node, own frame, to us", f1, f1, self, first, Deliver},
		{"friend's node relays for its user", f1, f2, self, later, Deliver},
		{"friend's node forges one of ours", f1, a, b, later, DropSourceMismatch},
		{"friend's node forges one of ours, to us", f1, a, self, later, DropSourceMismatch},
		{"friend's node forges another friend's", f1, g1, a, later, DropSourceMismatch},
		{"friend's node to another friend", f1, f1, g1, first, DropUntrusted},
		{"between two friends' nodes", a, f1, g1, later, DropUntrusted},
		{"stranger source", a, x, b, later, DropUntrusted},
		{"stranger neighbour", x, a, b, later, DropUntrusted},
		{"stranger destination", a, a, x, first, DropUntrusted},
		{"hop limit 9", a, a, b, first + 1, DropHopLimitTooHigh},
		{"hop limit 255, to us", a, a, self, 255, DropHopLimitTooHigh},
		{"hop limit 0, to us", a, a, self, 0, DropHopLimit},
		{"last hop spent", a, a, b, 1, DropHopLimit},
		{"last hop, to us", b, a, self, 1, Deliver},
	}
	f := New(Limits{})
	if v := f.Accept(a, a, first); v != DropUntrusted {
		t.Fatalf("no members set: Accept %v", v)
	}
	f.SetMembers(self, members)
	now := time.Unix(100, 0)
	want := map[string]uint64{}
	for _, c := range cases {
		var got Verdict
		if c.dst == self {
			got = f.Accept(c.from, c.src, c.hops)
		} else {
			got = f.Allow(c.from, c.src, c.dst, c.hops, 100, now)
		}
		if got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
		if c.want != Deliver {
			want[c.want.String()]++
		}
	}
	want["untrusted"]++ // before SetMembers
	counts, _ := f.Counts()
	for k, v := range counts {
		if v != want[k] {
			t.Errorf("count %s = %d, want %d", k, v, want[k])
		}
	}
}

// FuzzForwarder: whatever the header says and whoever sent it, a frame
// passes only within the rules of the package doc, and nothing panics.
func FuzzForwarder(f *testing.F) {
	f.Add(byte(1), byte(1), byte(2), uint8(8), false)
	f.Add(byte(1), byte(2), byte(0), uint8(7), true)
	f.Add(byte(3), byte(1), byte(2), uint8(200), false)
	self := wire.ShortID{0}
	members := Members{{1}: Own, {2}: Own, {3}: Friend, {4}: Friend, {5}: Friend + 1}
	fw := New(Limits{})
	fw.SetMembers(self, members)
	now := time.Unix(100, 0)
	f.Fuzz(func(t *testing.T, from, src, dst byte, hops uint8, local bool) {
		nb, s, d := wire.ShortID{from}, wire.ShortID{src}, wire.ShortID{dst}
		var v Verdict
		switch {
		case local:
			v = fw.Accept(nb, s, hops)
		case d == self:
			return // the receive path never asks Allow for its own frames
		default:
			v = fw.Allow(nb, s, d, hops, 100, now)
		}
		if v != Forward && v != Deliver {
			return
		}
		us, uf := members[s], members[nb]
		switch {
		case hops == 0 || hops > wire.MaxHopLimit || !local && hops < 2:
			t.Fatalf("%v with hop limit %d", v, hops)
		case us == Stranger || uf == Stranger:
			t.Fatalf("%v from %v for a stranger (src %v)", v, nb, s)
		case nb != s && (hops == wire.MaxHopLimit || uf != Own && uf != us):
			t.Fatalf("%v: neighbour %v (user %d) may not send frames of %v (user %d), hops %d", v, nb, uf, s, us, hops)
		case !local && (members[d] == Stranger || members[d] != Own && us != Own):
			t.Fatalf("forwarded %v -> %v", s, d)
		}
	})
}

func BenchmarkAllow(b *testing.B) {
	f := New(Limits{})
	f.SetMembers(wire.ShortID{7}, Members{{1}: Own, {2}: Own})
	now := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		f.Allow(wire.ShortID{1}, wire.ShortID{1}, wire.ShortID{2}, 8, 1400, now)
	}
}

// TestForwarderCredit: frames that repeat an allowed header, decided from a
// credit (Spend), meet their source's limits exactly as with Again, are
// counted once the credit is given back, and what a credit did not use
// goes back to the bucket.
func TestForwarderCredit(t *testing.T) {
	a, b := wire.ShortID{1}, wire.ShortID{2}
	f := New(Limits{PacketsPerSecond: 10, BytesPerSecond: 1e6, Burst: time.Second})
	f.SetMembers(wire.ShortID{7}, Members{a: Own, b: Own})
	now := time.Unix(100, 0)
	if v := f.Allow(a, a, b, 8, 100, now); v != Forward {
		t.Fatalf("first: %v", v)
	}
	// 2 of a run of 20 frames, then the batch ends: 7 tokens go back.
	var c Credit
	for i := 0; i < 2; i++ {
		if v := f.Spend(&c, a, 100, 20-i, now); v != Forward {
			t.Fatalf("spend %d: %v", i, v)
		}
	}
	f.Give(&c)
	if counts, bytes := f.Counts(); counts["forwarded"] != 3 || bytes != 300 {
		t.Fatalf("after the first batch: counts %v, bytes %d", counts, bytes)
	}
	n := 0
	for i := 0; i < 20; i++ {
		if f.Spend(&c, a, 100, 20-i, now) == Forward {
			n++
		}
	}
	f.Give(&c)
	counts, bytes := f.Counts()
	if n != 7 || counts["forwarded"] != 10 || counts["rate-limited"] != 13 || bytes != 1000 {
		t.Fatalf("credit: %d forwarded, counts %v, bytes %d", n, counts, bytes)
	}
	// Nothing left for a frame outside any credit either.
	if v := f.Again(a, 100, now); v != DropRateLimited {
		t.Fatalf("after the credits: %v", v)
	}
	// A byte limit smaller than the run's frames.
	g := New(Limits{PacketsPerSecond: 1e6, BytesPerSecond: 1000, Burst: time.Second})
	g.SetMembers(wire.ShortID{7}, Members{a: Own, b: Own})
	if g.Allow(a, a, b, 8, 400, now) != Forward {
		t.Fatal("byte limit: first")
	}
	if g.Spend(&c, a, 400, 5, now) != Forward || g.Spend(&c, a, 400, 4, now) != DropRateLimited {
		t.Fatal("byte limit: credit")
	}
	g.Give(&c)
}
