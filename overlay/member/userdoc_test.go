package member_test

import (
	"bytes"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// TestStoreFriendRevocations: alice's store honours bob's revocation list
// for bob's nodes only; carol's and alice's nodes named in it stay, a
// revoked node's certificate is refused from then on, and the list goes
// with the friend.
func TestStoreFriendRevocations(t *testing.T) {
	now := time.Now()
	alice, bob, carol, s := membertest.FriendsStore(t)
	_, nas := membertest.NewCert(t, alice, "nas", now)
	_, phone := membertest.NewCert(t, bob, "phone", now)
	_, laptop := membertest.NewCert(t, bob, "laptop", now)
	_, pc := membertest.NewCert(t, carol, "pc", now)
	for _, c := range []*member.Cert{nas, phone, laptop, pc} {
		if _, err := s.AddCert(c, now); err != nil {
			t.Fatal(err)
		}
	}
	rev := membertest.SignedDoc(bob, member.KindRevoked, 1, member.FormatRevoked([]wire.NodeID{phone.Node, nas.Node, pc.Node}))
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
	if s.Version(k)>>16 != 1 || !bytes.Equal(s.Raw(k), rev.Marshal()) { // Version 1 in the rank
		t.Errorf("bob's list not held: version %d", s.Version(k))
	}
	// Older versions and other documents of a friend are refused.
	if ok, _ := s.AddDoc(rev); ok {
		t.Error("the same list counted as new")
	}
	if _, err := s.AddDoc(membertest.SignedDoc(bob, member.KindPolicy, 9, []byte("allow alice -> *:*\n"))); err == nil {
		t.Error("a friend's policy was taken")
	}
	if _, err := s.AddDoc(membertest.SignedDoc(membertest.NewUser(t, "mallory"), member.KindRevoked, 1, member.FormatRevoked([]wire.NodeID{laptop.Node}))); err == nil || s.Cert(laptop.Node) == nil {
		t.Error("a stranger's revocation list was taken")
	}
	// A new version without the phone lets bob's re-issued certificate in.
	if _, err := s.AddDoc(membertest.SignedDoc(bob, member.KindRevoked, 2, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddCert(phone, now); err != nil {
		t.Errorf("phone after bob took the revocation back: %v", err)
	}
	// Bob stops being a friend: his list goes with him.
	if _, err := s.AddDoc(membertest.SignedDoc(alice, member.KindFriends, 2, member.FormatFriends([]member.Friend{{Name: "carol", Key: [32]byte(carol.Public())}}))); err != nil {
		t.Fatal(err)
	}
	if s.Version(k) != 0 {
		t.Error("a former friend's revocation list is still held")
	}
}

func FuzzParseUserDoc(f *testing.F) {
	u := membertest.NewUser(f, "alice")
	id := wire.NodeID{1, 2, 3}
	f.Add(membertest.SignedDoc(u, member.KindFriends, 1, member.FormatFriends([]member.Friend{{Name: "bob", Key: [32]byte{9}}})).Marshal())
	f.Add(membertest.SignedDoc(u, member.KindRevoked, 2, member.FormatRevoked([]wire.NodeID{id})).Marshal())
	f.Add(membertest.SignedDoc(u, member.KindPolicy, 3, []byte(testPolicy)).Marshal())
	f.Add([]byte{1, 5})
	child := &member.UserDoc{Kind: member.KindPolicy, Version: 4, Parent: [8]byte{7}, Body: []byte(testPolicy)}
	member.SignUserDoc(u, child)
	f.Add(child.Marshal()) // format 2: with a parent
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := member.ParseUserDoc(b)
		if err == nil && d.Rank() != member.DocRank(b) {
			t.Fatal("rank of the parsed document differs from its encoding's")
		}
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

// TestStoreFriendCannotTakeOurID: a friend's certificate naming one of
// our node ids is refused when ours is held, and gives way to ours when it
// came first.
func TestStoreFriendCannotTakeOurID(t *testing.T) {
	now := time.Now()
	alice, bob := membertest.NewUser(t, "alice"), membertest.NewUser(t, "bob")
	keys, desk := membertest.NewCert(t, alice, "desk", now)
	fake := &member.Cert{Node: desk.Node, Name: "desk", WG: keys.WGPublic(), Ctl: keys.CtlPublic(), IPv4: desk.IPv4,
		IPv6: member.NodeAddr6(bob.Public(), desk.Node), NotBefore: now.Add(time.Second), NotAfter: now.Add(time.Hour)}
	member.SignCert(bob, fake)
	for _, order := range [][]*member.Cert{{desk, fake}, {fake, desk}} {
		s := member.NewStore(alice.Public())
		if _, err := s.AddDoc(membertest.SignedDoc(alice, member.KindFriends, 1, member.FormatFriends([]member.Friend{{Name: "bob", Key: [32]byte(bob.Public())}}))); err != nil {
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
