package member_test

import (
	"net/netip"
	"testing"
	"time"

	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// twin is a certificate of u for a new node id with the keys of c.
func twin(t *testing.T, u *member.UserKey, c *member.Cert, now time.Time) *member.Cert {
	t.Helper()
	k, _ := member.NewNodeKeys()
	v4, _ := member.AllocIPv4(k.ID(), nil)
	tw := &member.Cert{Node: k.ID(), Name: "twin", WG: c.WG, Ctl: c.Ctl, IPv4: v4,
		IPv6: member.NodeAddr6(u.Public(), k.ID()), NotBefore: now, NotAfter: now.Add(time.Hour)}
	member.SignCert(u, tw)
	return tw
}

// TestAttackFriendTwinKeysStore: a friend's certificate with the WireGuard
// or control key of another user's node is refused whichever came first:
// ours keeps its keys (a friend's twin held already gives way to ours),
// and between two friends the one held first keeps them.
func TestAttackFriendTwinKeysStore(t *testing.T) {
	alice, bob, carol, s := membertest.FriendsStore(t)
	now := time.Now()
	_, desk := membertest.NewCert(t, alice, "desk", now)
	_, laptop := membertest.NewCert(t, bob, "laptop", now)

	// Ours first, then bob's twin of it (both keys, then one each).
	mustAdd(t, s, desk, now)
	for i, tw := range []*member.Cert{twin(t, bob, desk, now), half(t, bob, desk, true, now), half(t, bob, desk, false, now)} {
		if ok, err := s.AddCert(tw, now); ok || err == nil {
			t.Errorf("twin %d of desk taken", i)
		}
	}
	// Bob's twin first (desk's cert not yet held), then ours: it wins.
	s2 := freshStore(t, alice, bob, carol)
	tw := twin(t, bob, desk, now)
	mustAdd(t, s2, tw, now)
	mustAdd(t, s2, desk, now)
	if s2.Cert(tw.Node) != nil || s2.Cert(desk.Node) == nil {
		t.Error("bob's twin kept after desk's certificate came")
	}
	// Two friends: carol's twin of bob's laptop is refused.
	mustAdd(t, s, laptop, now)
	if ok, err := s.AddCert(twin(t, carol, laptop, now), now); ok || err == nil {
		t.Error("carol's twin of bob's laptop taken")
	}
	if got := s.Rejected[member.RejectKeyTaken]; got != 4 {
		t.Errorf("key-taken rejections: %d, want 4", got)
	}
}

// half is a twin of c with only its WireGuard key (wg) or control key.
func half(t *testing.T, u *member.UserKey, c *member.Cert, wg bool, now time.Time) *member.Cert {
	t.Helper()
	k, _ := member.NewNodeKeys()
	tw := twin(t, u, c, now)
	if wg {
		tw.Ctl = k.CtlPublic()
	} else {
		tw.WG = k.WGPublic()
	}
	tw.Raw = nil
	member.SignCert(u, tw)
	return tw
}

func mustAdd(t *testing.T, s *member.Store, c *member.Cert, now time.Time) {
	t.Helper()
	if _, err := s.AddCert(c, now); err != nil {
		t.Fatalf("%s: %v", c.FQDN(), err)
	}
}

func freshStore(t *testing.T, alice, bob, carol *member.UserKey) *member.Store {
	s := member.NewStore(alice.Public())
	friends := []member.Friend{{Name: "bob", Key: [32]byte(bob.Public())}, {Name: "carol", Key: [32]byte(carol.Public())}}
	if _, err := s.AddDoc(membertest.SignedDoc(alice, member.KindFriends, 1, member.FormatFriends(friends))); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAttackFriendDeviceKey: a friend's certificate with the WireGuard key
// of one of our devices (a phone that runs only WireGuard, listed in our
// user's devices document) is refused, and one held already gives way
// when the document lists the device: wireguard-go finds a peer by its
// key alone, so the friend's node would take the phone's WireGuard peer
// (its endpoint, its allowed IPs).
func TestAttackFriendDeviceKey(t *testing.T) {
	alice, bob, carol, s := membertest.FriendsStore(t)
	now := time.Now()
	_, desk := membertest.NewCert(t, alice, "desk", now)
	mustAdd(t, s, desk, now)
	phoneKeys, _ := member.NewNodeKeys()
	phone := member.Device{Name: "phone", WG: phoneKeys.WGPublic(), IPv4: netip.MustParseAddr("100.64.9.9"), Via: desk.Node}
	devices := membertest.SignedDoc(alice, member.KindDevices, 1, member.FormatDevices([]member.Device{phone}))

	// The friend's certificate first, then our devices document.
	s2 := freshStore(t, alice, bob, carol)
	mustAdd(t, s2, desk, now)
	_, evil := membertest.NewCert(t, bob, "evil", now)
	evil.WG, evil.Raw = phone.WG, nil
	member.SignCert(bob, evil)
	mustAdd(t, s2, evil, now)
	if _, err := s2.AddDoc(devices); err != nil {
		t.Fatal(err)
	}
	if s2.Cert(evil.Node) != nil {
		t.Error("bob's node with the phone's WireGuard key kept after the devices document listed the phone")
	}

	// Our devices document first, then the friend's certificate.
	if _, err := s.AddDoc(devices); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AddCert(evil, now); ok || err == nil {
		t.Error("bob's node with the phone's WireGuard key taken")
	}
	if got := s.Rejected[member.RejectKeyTaken]; got != 1 {
		t.Errorf("key-taken rejections: %d, want 1", got)
	}
	// Bob's other nodes are unaffected.
	_, laptop := membertest.NewCert(t, bob, "laptop", now)
	mustAdd(t, s, laptop, now)
}
