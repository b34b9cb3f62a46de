package member

import (
	"math/rand/v2"
	"testing"

	"glow/internal/wire"
)

// TestSummary: the same entries in any order sum alike; a changed version,
// a missing entry or an extra one changes exactly the range it falls in.
func TestSummary(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var d []DigestEntry
	for i := range 500 {
		var id wire.NodeID
		for j := range id {
			id[j] = byte(rng.UintN(256))
		}
		d = append(d, DigestEntry{RecordKey{RecordKind(1 + i%2), id}, rng.Uint64()})
	}
	s := Summarize(d)
	shuffled := append([]DigestEntry(nil), d...)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	if Summarize(shuffled) != s {
		t.Fatal("the same entries in another order sum differently")
	}
	for name, change := range map[string]func([]DigestEntry) ([]DigestEntry, RecordKey){
		"newer version": func(d []DigestEntry) ([]DigestEntry, RecordKey) { d[7].Version++; return d, d[7].RecordKey },
		"missing":       func(d []DigestEntry) ([]DigestEntry, RecordKey) { return d[1:], d[0].RecordKey },
		"extra": func(d []DigestEntry) ([]DigestEntry, RecordKey) {
			e := DigestEntry{RecordKey{KindInfo, wire.NodeID{200, 1}}, 1}
			return append(d, e), e.RecordKey
		},
	} {
		d2, k := change(append([]DigestEntry(nil), d...))
		s2 := Summarize(d2)
		for b := range s {
			if differs := s[b] != s2[b]; differs != (b == SummaryBucket(k)) {
				t.Errorf("%s: range %d differs %v, want %v", name, b, differs, b == SummaryBucket(k))
			}
		}
	}
}
