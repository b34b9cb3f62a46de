package member_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// TestStoreCachesFollowChanges: what the Store keeps between changes (its
// sorted certificates, digest summary and next expiry) matches what the
// records held give after every kind of change: a certificate added,
// renewed, displaced by an address conflict, shadowing a friend's for the
// same id, revoked by our list or a friend's, dropped with a friend, and
// expired; a node info and a document added. Each step asks for the kept views first, so
// a change that does not drop them shows here as a stale answer.
func TestStoreCachesFollowChanges(t *testing.T) {
	now := time.Now()
	alice, bob, carol, st := membertest.FriendsStore(t)
	check := func(step string) {
		t.Helper()
		certs, sum, next := st.FreshViews(wire.NodeID{})
		if got := st.Certs(); !slices.Equal(got, certs) {
			t.Errorf("%s: Certs() = %v, the records held give %v", step, names(got), names(certs))
		}
		if got := st.Summary(); got != sum {
			t.Errorf("%s: Summary() is not Summarize(Digest())", step)
		}
		if got := st.NextExpiry(wire.NodeID{}); !got.Equal(next) {
			t.Errorf("%s: NextExpiry = %v, the records held give %v", step, got, next)
		}
	}
	apply := func(step string, kind member.RecordKind, raw []byte) {
		t.Helper()
		if ok, err := st.Apply(kind, raw, now); !ok || err != nil {
			t.Fatalf("%s: Apply = %v, %v", step, ok, err)
		}
		check(step)
	}
	resign := func(u *member.UserKey, c *member.Cert, edit func(*member.Cert)) *member.Cert {
		d := *c
		d.Raw = nil
		edit(&d)
		member.SignCert(u, &d)
		return &d
	}
	check("empty")

	nasK, nas := membertest.NewCert(t, alice, "nas", now)
	apply("nas", member.KindCert, nas.Marshal())
	_, pc := membertest.NewCert(t, alice, "pc", now)
	short := resign(alice, pc, func(c *member.Cert) { c.NotAfter = now.Add(10 * time.Minute) })
	apply("pc, expiring first", member.KindCert, short.Marshal())
	info := &member.NodeInfo{Node: nasK.ID(), Seq: 1, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:47470")}}
	member.SignInfo(nasK.Sign, info)
	apply("nas's info", member.KindInfo, info.Marshal())
	apply("nas renewed", member.KindCert, resign(alice, nas, func(c *member.Cert) {
		c.NotBefore, c.NotAfter = now.Add(time.Second), now.Add(30*time.Minute)
	}).Marshal())

	_, bobPC := membertest.NewCert(t, bob, "bobpc", now)
	apply("bob's node", member.KindCert, bobPC.Marshal())
	apply("bob revokes it", member.KindRevoked, membertest.SignedDoc(bob, member.KindRevoked, 1, member.FormatRevoked([]wire.NodeID{bobPC.Node})).Marshal())

	_, carolPC := membertest.NewCert(t, carol, "carolpc", now)
	apply("carol's node", member.KindCert, carolPC.Marshal())
	apply("carol no longer a friend", member.KindFriends, membertest.SignedDoc(alice, member.KindFriends, 2,
		member.FormatFriends([]member.Friend{{Name: "bob", Key: [32]byte(bob.Public())}})).Marshal())

	_, shadowed := membertest.NewCert(t, bob, "shadowed", now)
	apply("bob's certificate for an id", member.KindCert, shadowed.Marshal())
	apply("ours for the same id", member.KindCert, resign(alice, shadowed, func(c *member.Cert) {
		c.Name, c.IPv6 = "mine", member.NodeAddr6(alice.Public(), c.Node)
	}).Marshal())

	_, pc2 := membertest.NewCert(t, alice, "pc", now.Add(2*time.Second))
	pc2 = resign(alice, pc2, func(c *member.Cert) { c.IPv4 = short.IPv4 })
	apply("a newer pc displaces the old", member.KindCert, pc2.Marshal())
	if st.Cert(short.Node) != nil {
		t.Fatal("the displaced certificate is still held: the test does not displace")
	}
	apply("a short-lived one again", member.KindCert, resign(alice, short, func(c *member.Cert) {
		c.Name, c.IPv4 = "short", netip.MustParseAddr("100.64.9.9")
	}).Marshal())

	apply("a policy", member.KindPolicy, membertest.SignedDoc(alice, member.KindPolicy, 1, []byte(membertest.BigPolicy(200))).Marshal())
	apply("nas revoked", member.KindRevoked, membertest.SignedDoc(alice, member.KindRevoked, 1, member.FormatRevoked([]wire.NodeID{nas.Node})).Marshal())

	gone := st.Expire(now.Add(20*time.Minute), wire.NodeID{})
	if !slices.Equal(gone, []wire.NodeID{short.Node}) {
		t.Errorf("Expire 20 minutes on: gone %v, want the short-lived certificate only (%v)", gone, short.Node)
	}
	check("expired")
}

func names(cs []*member.Cert) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}
