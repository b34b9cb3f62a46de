package member_test

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

func TestStoreRejectsForgedStaleExpired(t *testing.T) {
	now := time.Now()
	alice, mallory := membertest.NewUser(t, "alice"), membertest.NewUser(t, "mallory")
	st := member.NewStore(alice.Public())
	k, c := membertest.NewCert(t, alice, "nas", now)
	if ok, err := st.Apply(member.KindCert, c.Marshal(), now); !ok || err != nil {
		t.Fatalf("valid cert: %v %v", ok, err)
	}
	if ok, err := st.Apply(member.KindCert, c.Marshal(), now); ok || err != nil {
		t.Fatalf("same cert again: %v %v", ok, err)
	}
	_, mc := membertest.NewCert(t, mallory, "evil", now)
	if _, err := st.Apply(member.KindCert, mc.Marshal(), now); err == nil || st.Rejected[member.RejectUser] != 1 {
		t.Fatalf("other user's cert: %v %v", err, st.Rejected)
	}
	_, old := membertest.NewCert(t, alice, "old", now.Add(-3*time.Hour))
	if _, err := st.Apply(member.KindCert, old.Marshal(), now); err == nil || st.Rejected[member.RejectExpired] != 1 {
		t.Fatalf("expired cert: %v %v", err, st.Rejected)
	}
	if _, err := st.Apply(member.KindCert, []byte("garbage"), now); err == nil || st.Rejected[member.RejectMalformed] != 1 {
		t.Fatalf("garbage: %v", err)
	}
	// Node info: signed by the node, ordered by Seq.
	info := &member.NodeInfo{Node: k.ID(), Seq: 10, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:47470")}}
	member.SignInfo(k.Sign, info)
	if ok, err := st.Apply(member.KindInfo, info.Marshal(), now); !ok || err != nil {
		t.Fatalf("info: %v %v", ok, err)
	}
	stale := &member.NodeInfo{Node: k.ID(), Seq: 9}
	member.SignInfo(k.Sign, stale)
	if _, err := st.Apply(member.KindInfo, stale.Marshal(), now); err == nil || st.Rejected[member.RejectStale] != 1 {
		t.Fatalf("replayed older info: %v %v", err, st.Rejected)
	}
	other, _ := member.NewNodeKeys()
	forged := &member.NodeInfo{Node: k.ID(), Seq: 11}
	member.SignInfo(other.Sign, forged) // signed by the wrong key
	if _, err := st.Apply(member.KindInfo, forged.Marshal(), now); err == nil || st.Rejected[member.RejectSignature] != 1 {
		t.Fatalf("forged info: %v %v", err, st.Rejected)
	}
	forgedStale := &member.NodeInfo{Node: k.ID(), Seq: 8}
	member.SignInfo(other.Sign, forgedStale) // older than the one held: dropped before its signature is checked
	if _, err := st.Apply(member.KindInfo, forgedStale.Marshal(), now); err == nil || st.Rejected[member.RejectStale] != 2 || st.Rejected[member.RejectSignature] != 1 {
		t.Fatalf("forged older info: %v %v", err, st.Rejected)
	}
	orphan := &member.NodeInfo{Node: other.ID(), Seq: 1}
	member.SignInfo(other.Sign, orphan)
	if _, err := st.Apply(member.KindInfo, orphan.Marshal(), now); err == nil || st.Rejected[member.RejectNoCert] != 1 {
		t.Fatalf("info of uncertified node: %v", err)
	}
	if st.Info(k.ID()).Seq != 10 {
		t.Fatal("store lost the good record")
	}
	// A newer certificate for the same node replaces the old one.
	c2 := *c
	c2.Raw = nil
	c2.NotBefore = now.Add(time.Second)
	member.SignCert(alice, &c2)
	if ok, err := st.Apply(member.KindCert, c2.Marshal(), now); !ok || err != nil {
		t.Fatalf("newer cert: %v %v", ok, err)
	}
	if ok, err := st.Apply(member.KindCert, c.Marshal(), now); ok || err == nil {
		t.Fatal("older cert replaced a newer one")
	}
}

// TestStoreRefusesKeyChange: a certificate that gives a known node other
// keys, or puts it under another user, is refused even when the user key
// signed it; after a revocation of the node, and only then, the id is free.
func TestStoreRefusesKeyChange(t *testing.T) {
	now := time.Now()
	alice, bob := membertest.NewUser(t, "alice"), membertest.NewUser(t, "bob")
	st := member.NewStore(alice.Public())
	_, c := membertest.NewCert(t, alice, "nas", now)
	if ok, err := st.Apply(member.KindCert, c.Marshal(), now); !ok || err != nil {
		t.Fatalf("valid cert: %v %v", ok, err)
	}
	other, _ := member.NewNodeKeys()
	rekey := func(u *member.UserKey, wg, ctl wire.Key, at time.Time) *member.Cert {
		c2 := *c
		c2.Raw, c2.WG, c2.Ctl, c2.NotBefore = nil, wg, ctl, at
		c2.IPv6 = member.NodeAddr6(u.Public(), c.Node)
		member.SignCert(u, &c2)
		return &c2
	}
	newWG := rekey(alice, other.WGPublic(), c.Ctl, now.Add(time.Second))
	newCtl := rekey(alice, c.WG, other.CtlPublic(), now.Add(time.Second))
	for _, bad := range []*member.Cert{newWG, newCtl} {
		if ok, err := st.Apply(member.KindCert, bad.Marshal(), now); ok || err == nil {
			t.Fatalf("key change accepted: %v %v", ok, err)
		}
	}
	// A friend's user key cannot claim the node either.
	st.AddDoc(membertest.SignedDoc(alice, member.KindFriends, 1, member.FormatFriends([]member.Friend{{Name: "bob", Key: [32]byte(bob.Public())}})))
	if ok, err := st.Apply(member.KindCert, rekey(bob, c.WG, c.Ctl, now.Add(time.Second)).Marshal(), now); ok || err == nil {
		t.Fatalf("another user's certificate for the node accepted: %v %v", ok, err)
	}
	if n := st.Rejected[member.RejectKeyChange]; n != 3 {
		t.Fatalf("key-change refusals counted %d, want 3", n)
	}
	if !bytes.Equal(st.Cert(c.Node).Marshal(), c.Marshal()) {
		t.Fatal("the held certificate changed")
	}
	// A renewal with the same keys is fine.
	renewed := rekey(alice, c.WG, c.Ctl, now.Add(2*time.Second))
	if ok, err := st.Apply(member.KindCert, renewed.Marshal(), now); !ok || err != nil {
		t.Fatalf("renewal: %v %v", ok, err)
	}
	// Revoked, the id takes no certificate; once the revocation is lifted by
	// a newer list, it takes one with new keys.
	st.AddDoc(membertest.SignedDoc(alice, member.KindRevoked, 1, member.FormatRevoked([]wire.NodeID{c.Node})))
	if ok, err := st.Apply(member.KindCert, newWG.Marshal(), now); ok || err == nil || st.Rejected[member.RejectRevoked] != 1 {
		t.Fatalf("certificate of a revoked node: %v %v", ok, err)
	}
	st.AddDoc(membertest.SignedDoc(alice, member.KindRevoked, 2, nil))
	if ok, err := st.Apply(member.KindCert, newWG.Marshal(), now); !ok || err != nil {
		t.Fatalf("new keys after a revocation: %v %v", ok, err)
	}
}

func FuzzParseInfo(f *testing.F) {
	k, _ := member.NewNodeKeys()
	n := &member.NodeInfo{Node: k.ID(), Seq: 1, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("[::1]:1")}}
	member.SignInfo(k.Sign, n)
	f.Add(n.Marshal())
	n = &member.NodeInfo{Node: k.ID(), Seq: 2, Routes: []netip.Prefix{netip.MustParsePrefix("10.71.1.0/24"), netip.MustParsePrefix("::/0")}}
	member.SignInfo(k.Sign, n)
	f.Add(n.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := member.ParseInfo(b)
		if err != nil {
			return
		}
		if len(info.Routes) > member.MaxRoutes {
			t.Fatalf("%d routes accepted", len(info.Routes))
		}
		for _, r := range info.Routes {
			if !r.IsValid() || r != r.Masked() {
				t.Fatalf("route %v accepted", r)
			}
		}
	})
}

// BenchmarkRecordVerify: Store.Apply of one certificate and of one
// member.NodeInfo (decode and ed25519 check), each accepted as new every time;
// and of a certificate the store already holds, which is what most gossip
// copies of a record are.
func BenchmarkRecordVerify(b *testing.B) {
	u := membertest.NewUser(b, "alice")
	now := time.Now()
	keys, c := membertest.NewCert(b, u, "n1", now)
	raw := c.Marshal()
	info := &member.NodeInfo{Node: keys.ID(), Seq: 1,
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:47470"), netip.MustParseAddrPort("[2001:db8::1]:47470"), netip.MustParseAddrPort("203.0.113.9:31000")}}
	for range 4 {
		info.Links = append(info.Links, member.LinkInfo{Node: randomNodeID(), Cost: 10})
	}
	member.SignInfo(keys.Sign, info)
	rawInfo := info.Marshal()

	b.Run("cert", func(b *testing.B) {
		s := member.NewStore(u.Public())
		b.ReportAllocs()
		for b.Loop() {
			s.ForgetCert(c.Node) // so that every Apply accepts a new record
			if isNew, err := s.Apply(member.KindCert, raw, now); err != nil || !isNew {
				b.Fatal(isNew, err)
			}
		}
	})
	b.Run("cert-again", func(b *testing.B) {
		s := member.NewStore(u.Public())
		s.Apply(member.KindCert, raw, now)
		b.ReportAllocs()
		for b.Loop() {
			if isNew, err := s.Apply(member.KindCert, raw, now); err != nil || isNew {
				b.Fatal(isNew, err)
			}
		}
	})
	b.Run("info", func(b *testing.B) {
		s := member.NewStore(u.Public())
		if _, err := s.Apply(member.KindCert, raw, now); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			s.ForgetInfo(info.Node)
			if isNew, err := s.Apply(member.KindInfo, rawInfo, now); err != nil || !isNew {
				b.Fatal(isNew, err)
			}
		}
	})
}

func randomNodeID() wire.NodeID {
	k, _ := member.NewNodeKeys()
	return k.ID()
}
