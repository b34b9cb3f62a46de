package member

import (
	"bytes"
	"testing"
)

// TestDocTieBreak: two admins sign version 2 of the policy at once. Stores
// that get them in either order keep the same one, their gossip versions
// (Rank) differ so digests tell them apart, and a version built on one
// names it as its parent across an encoding round trip.
func TestDocTieBreak(t *testing.T) {
	u, _ := NewUserKey("alice")
	sign := func(v uint64, body string, parent [8]byte) *UserDoc {
		d := &UserDoc{Kind: KindPolicy, Version: v, Body: []byte(body), Parent: parent}
		if err := SignUserDoc(u, d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	base := sign(1, "# base\n", [8]byte{})
	a := sign(2, "# base\nallow bob -> nas:22\n", DocHash(base.Marshal()))
	b := sign(2, "# base\nallow carol -> nas:80\n", DocHash(base.Marshal()))
	if a.Rank() == b.Rank() || a.Rank()>>16 != 2 || base.Rank()>>16 != 1 {
		t.Fatalf("ranks %x %x %x", base.Rank(), a.Rank(), b.Rank())
	}
	s1, s2 := NewStore(u.Public()), NewStore(u.Public())
	for _, d := range []*UserDoc{base, a, b} {
		s1.AddDoc(d)
	}
	for _, d := range []*UserDoc{base, b, a} {
		s2.AddDoc(d)
	}
	h1, h2 := s1.Doc(KindPolicy), s2.Doc(KindPolicy)
	if !bytes.Equal(h1.Marshal(), h2.Marshal()) {
		t.Fatal("two stores keep different documents of the same version")
	}
	k := h1.Key()
	if s1.Version(k) != max(a.Rank(), b.Rank()) {
		t.Fatalf("held rank %x, want the greater of %x %x", s1.Version(k), a.Rank(), b.Rank())
	}
	c := sign(3, string(h1.Body)+"# more\n", DocHash(h1.Marshal()))
	got, err := ParseUserDoc(c.Marshal())
	if err != nil || got.Parent != DocHash(h1.Marshal()) || got.Rank() != c.Rank() {
		t.Fatalf("format 2: %v %+v", err, got)
	}
	if ok, err := s1.AddDoc(got); !ok || err != nil {
		t.Fatalf("version 3: %v %v", ok, err)
	}
}
