package overlay

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// TestShadowedAddresses: which friends' addresses a node routes. Ours win
// over a friend's; two friends claiming one address both lose it; a
// friend's IPv6 in our /48 is not routed; everything else is.
func TestShadowedAddresses(t *testing.T) {
	now := time.Now()
	alice, bob, carol, s := membertest.FriendsStore(t)
	_, nas := membertest.NewCert(t, alice, "nas", now)
	_, desk := membertest.NewCert(t, alice, "desk", now)
	cert := func(u *member.UserKey, name string, mod func(c *member.Cert)) *member.Cert {
		_, c := membertest.NewCert(t, u, name, now)
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
	n := &Node{id: nas.Node, mem: membership{cert: nas, store: s}}
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
	if got := len(n.paths.shadow.conflicts); got != 4 {
		t.Errorf("%d conflicts, want 4: %+v", got, n.paths.shadow.conflicts)
	}
	// A friend's certificate newer than the shadow state is checked too.
	late := cert(bob, "late", func(c *member.Cert) { c.IPv4 = nas.IPv4 })
	if got := n.routedLocked(late); !slices.Equal(got, []netip.Addr{late.IPv6}) {
		t.Errorf("a new certificate claiming nas's address is routed %v", got)
	}
}
