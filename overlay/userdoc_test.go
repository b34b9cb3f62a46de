package overlay

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
)

// signedDoc signs a document of kind with body for user u.
func signedDoc(u *member.UserKey, kind member.RecordKind, version uint64, body []byte) *member.UserDoc {
	d := &member.UserDoc{Kind: kind, Version: version, Body: body}
	member.SignUserDoc(u, d)
	return d
}

// friendsStore is alice's store with bob and carol as her friends.
func friendsStore(t *testing.T) (alice, bob, carol *member.UserKey, s *member.Store) {
	t.Helper()
	alice, bob, carol = newTestUser(t, "alice"), newTestUser(t, "bob"), newTestUser(t, "carol")
	s = member.NewStore(alice.Public())
	friends := []member.Friend{{Name: "bob", Key: [32]byte(bob.Public())}, {Name: "carol", Key: [32]byte(carol.Public())}}
	if _, err := s.AddDoc(signedDoc(alice, member.KindFriends, 1, member.FormatFriends(friends))); err != nil {
		t.Fatal(err)
	}
	return alice, bob, carol, s
}

// TestStoreFriendRevocations: alice's store honours bob's revocation list
// for bob's nodes only; carol's and alice's nodes named in it stay, a
// revoked node's certificate is refused from then on, and the list goes
// with the friend.
func TestStoreFriendRevocations(t *testing.T) {
	now := time.Now()
	alice, bob, carol, s := friendsStore(t)
	_, nas := newTestCert(t, alice, "nas", now)
	_, phone := newTestCert(t, bob, "phone", now)
	_, laptop := newTestCert(t, bob, "laptop", now)
	_, pc := newTestCert(t, carol, "pc", now)
	for _, c := range []*member.Cert{nas, phone, laptop, pc} {
		if _, err := s.AddCert(c, now); err != nil {
			t.Fatal(err)
		}
	}
	rev := signedDoc(bob, member.KindRevoked, 1, member.FormatRevoked([]wire.NodeID{phone.Node, nas.Node, pc.Node}))
	if ok, err := s.Apply(member.KindRevoked, rev.Marshal(), now); !ok || err != nil {
		t.Fatalf("bob's revocation list: %v %v", ok, err)
	}
	if s.Cert(phone.Node) != nil {
		t.Error("bob's revoked phone is still held")
	}
	for _, c := range []*member.Cert{nas, laptop, pc} {
		if s.Cert(c.Node) == nil {
			t.Errorf("%s dropped on bob's word", c.FQDN())
		}
	}
	if _, err := s.AddCert(phone, now); err == nil {
		t.Error("the revoked phone's certificate was taken again")
	}
	// Gossip sees it under bob's key; the records cache keeps it.
	k := member.RecordKey{Kind: member.KindRevoked, Node: wire.NodeID(bob.Public())}
	if s.Version(k) != 1 || !bytes.Equal(s.Raw(k), rev.Marshal()) {
		t.Errorf("bob's list not held: version %d", s.Version(k))
	}
	// Older versions and other documents of a friend are refused.
	if ok, _ := s.AddDoc(rev); ok {
		t.Error("the same list counted as new")
	}
	if _, err := s.AddDoc(signedDoc(bob, member.KindPolicy, 9, []byte("allow alice -> *:*\n"))); err == nil {
		t.Error("a friend's policy was taken")
	}
	if _, err := s.AddDoc(signedDoc(newTestUser(t, "mallory"), member.KindRevoked, 1, member.FormatRevoked([]wire.NodeID{laptop.Node}))); err == nil || s.Cert(laptop.Node) == nil {
		t.Error("a stranger's revocation list was taken")
	}
	// A new version without the phone lets bob's re-issued certificate in.
	if _, err := s.AddDoc(signedDoc(bob, member.KindRevoked, 2, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddCert(phone, now); err != nil {
		t.Errorf("phone after bob took the revocation back: %v", err)
	}
	// Bob stops being a friend: his list goes with him.
	if _, err := s.AddDoc(signedDoc(alice, member.KindFriends, 2, member.FormatFriends([]member.Friend{{Name: "carol", Key: [32]byte(carol.Public())}}))); err != nil {
		t.Fatal(err)
	}
	if s.Version(k) != 0 {
		t.Error("a former friend's revocation list is still held")
	}
}

func FuzzParseUserDoc(f *testing.F) {
	u := newTestUser(f, "alice")
	id := wire.NodeID{1, 2, 3}
	f.Add(signedDoc(u, member.KindFriends, 1, member.FormatFriends([]member.Friend{{Name: "bob", Key: [32]byte{9}}})).Marshal())
	f.Add(signedDoc(u, member.KindRevoked, 2, member.FormatRevoked([]wire.NodeID{id})).Marshal())
	f.Add(signedDoc(u, member.KindPolicy, 3, []byte(defaultPolicy)).Marshal())
	f.Add([]byte{1, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := member.ParseUserDoc(b)
		if err == nil && !bytes.Equal(d.Marshal(), b) {
			t.Fatal("accepted document does not re-encode to its bytes")
		}
	})
}

// FuzzUserDocBodies feeds the friend list and revocation list parsers
// (bodies that arrive signed, but from any user of a friend's).
func FuzzUserDocBodies(f *testing.F) {
	f.Add(member.FormatFriends([]member.Friend{{Name: "bob", Key: [32]byte{9}}, {Name: "carol", Key: [32]byte{8}}}))
	f.Add(member.FormatRevoked([]wire.NodeID{{1}, {2}}))
	f.Add([]byte("bob AAAA\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if fs, err := member.ParseFriends(b); err == nil {
			again, err := member.ParseFriends(member.FormatFriends(fs))
			if err != nil || len(again) != len(fs) {
				t.Fatalf("friend list does not survive a round trip: %v", err)
			}
		}
		if ids, err := member.ParseRevoked(b); err == nil {
			again, err := member.ParseRevoked(member.FormatRevoked(ids))
			if err != nil || len(again) != len(ids) {
				t.Fatalf("revocation list does not survive a round trip: %v", err)
			}
		}
	})
}

// TestShadowedAddresses: which friends' addresses a node routes. Ours win
// over a friend's; two friends claiming one address both lose it; a
// friend's IPv6 in our /48 is not routed; everything else is.
func TestShadowedAddresses(t *testing.T) {
	now := time.Now()
	alice, bob, carol, s := friendsStore(t)
	_, nas := newTestCert(t, alice, "nas", now)
	_, desk := newTestCert(t, alice, "desk", now)
	cert := func(u *member.UserKey, name string, mod func(c *member.Cert)) *member.Cert {
		_, c := newTestCert(t, u, name, now)
		mod(c)
		return c
	}
	spare := netip.MustParseAddr("100.127.1.1")
	b1 := cert(bob, "b1", func(c *member.Cert) { c.IPv4 = desk.IPv4 })
	b2 := cert(bob, "b2", func(c *member.Cert) { c.IPv4 = spare })
	c1 := cert(carol, "c1", func(c *member.Cert) { c.IPv4 = spare })
	c2 := cert(carol, "c2", func(c *member.Cert) { c.IPv6 = member.NodeAddr6(alice.Public(), c.Node) })
	c3 := cert(carol, "c3", func(c *member.Cert) {})
	for _, c := range []*member.Cert{nas, desk, b1, b2, c1, c2, c3} {
		if _, err := s.AddCert(c, now); err != nil {
			t.Fatalf("%s: %v", c.FQDN(), err)
		}
	}
	n := &Node{cert: nas, id: nas.Node, store: s}
	want := map[*member.Cert][]netip.Addr{
		nas:  {nas.IPv4, nas.IPv6},
		desk: {desk.IPv4, desk.IPv6},
		b1:   {b1.IPv6},
		b2:   {b2.IPv6},
		c1:   {c1.IPv6},
		c2:   {c2.IPv4},
		c3:   {c3.IPv4, c3.IPv6},
	}
	for c, w := range want {
		if got := n.routedLocked(c); !slices.Equal(got, w) {
			t.Errorf("%s: routed %v, want %v", c.FQDN(), got, w)
		}
	}
	if got := len(n.shadow.conflicts); got != 4 {
		t.Errorf("%d conflicts, want 4: %+v", got, n.shadow.conflicts)
	}
	// A friend's certificate newer than the shadow state is checked too.
	late := cert(bob, "late", func(c *member.Cert) { c.IPv4 = nas.IPv4 })
	if got := n.routedLocked(late); !slices.Equal(got, []netip.Addr{late.IPv6}) {
		t.Errorf("a new certificate claiming nas's address is routed %v", got)
	}
}

// TestStoreFriendCannotTakeOurID: a friend's certificate naming one of
// our node ids is refused when ours is held, and gives way to ours when it
// came first.
func TestStoreFriendCannotTakeOurID(t *testing.T) {
	now := time.Now()
	alice, bob := newTestUser(t, "alice"), newTestUser(t, "bob")
	keys, desk := newTestCert(t, alice, "desk", now)
	fake := &member.Cert{Node: desk.Node, Name: "desk", WG: keys.WGPublic(), Ctl: keys.CtlPublic(), IPv4: desk.IPv4,
		IPv6: member.NodeAddr6(bob.Public(), desk.Node), NotBefore: now.Add(time.Second), NotAfter: now.Add(time.Hour)}
	member.SignCert(bob, fake)
	for _, order := range [][]*member.Cert{{desk, fake}, {fake, desk}} {
		s := member.NewStore(alice.Public())
		if _, err := s.AddDoc(signedDoc(alice, member.KindFriends, 1, member.FormatFriends([]member.Friend{{Name: "bob", Key: [32]byte(bob.Public())}}))); err != nil {
			t.Fatal(err)
		}
		for _, c := range order {
			s.AddCert(c, now)
		}
		if got := s.Cert(desk.Node); got == nil || got.User != desk.User {
			holder := "nobody"
			if got != nil {
				holder = got.FQDN()
			}
			t.Errorf("%s then %s: desk's id is held by %s", order[0].FQDN(), order[1].FQDN(), holder)
		}
	}
}
