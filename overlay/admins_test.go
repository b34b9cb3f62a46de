package overlay

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"glow/nat/natlab"
	"glow/overlay/api"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// nodeEntry is name's line in n's nodes list.
func nodeEntry(n *Node, name string) (api.NodeInfo, bool) {
	for _, e := range n.Nodes() {
		if e.Name == name {
			return e, true
		}
	}
	return api.NodeInfo{}, false
}

func dropCount(n *Node, reason string) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dropCtl[reason]
}

// TestPromoteDemote: n1 (the user's first admin) promotes n2, which gets
// the user key (0600) and shows as admin on every node; with n1 down, n2
// invites n4, which joins and reaches n3; n2 promotes then demotes n3,
// which deletes its key and can no longer invite.
func TestPromoteDemote(t *testing.T) {
	nodes := joinedNet(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	if _, err := n2.Promote(ctx, "n3"); !errors.Is(err, api.ErrNotAdmin) {
		t.Fatalf("a node without the user key promoted: %v", err)
	}
	if _, err := n1.Promote(ctx, "nobody"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("promote nobody: %v", err)
	}
	res, err := n1.Promote(ctx, "n2")
	if err != nil || !res.Confirmed {
		t.Fatalf("promote n2: %+v %v", res, err)
	}
	fi, err := os.Stat(n2.state.Path("user.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("n2's user.key: %v %v", fi, err)
	}
	u, err := n2.state.LoadUserKey()
	if err != nil || !u.Priv.Equal(n1.mem.user.Priv) {
		t.Fatalf("n2's user key: %v", err)
	}
	if !n2.Status().Self.Admin || !n2.Cert().Admin {
		t.Fatal("n2 does not say it is an admin")
	}
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.Cert().Name+" to list n2 as admin", func() bool {
			e, ok := nodeEntry(n, "n2")
			return ok && e.Admin
		})
	}

	// The first admin goes away; the second admits a new node.
	n1.Close()
	code, err := n2.Invite(time.Minute, 1)
	if err != nil {
		t.Fatalf("invite from the promoted node: %v", err)
	}
	n4 := testNode(t, "n4", func(c *Config) { c.JoinCode = code })
	serveEcho(t, n3, 7000)
	waitFor(t, 20*time.Second, "n4 to reach n3", func() bool {
		c, err := dial(n4, n3.Cert().IPv4, 7000, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if _, err := n2.ApplyPolicy(defaultPolicy + "allow bob -> n3:22\n"); err != nil {
		t.Fatalf("policy from the promoted node: %v", err)
	}

	// A node that is not an admin cannot hand the key on, even holding it:
	// n4 sends n3 the real key with a certificate signed by it.
	n4.mu.Lock()
	bogus := n4.mem.cert // not n3's: refused either way, but first as not from an admin
	msg := adminKeyMsg{Cert: bogus.Marshal()}
	copy(msg.Seed[:], u.Priv.Seed())
	before := dropCount(n3, "admin-key-not-from-admin")
	n4.sendCtlLocked(n4.paths.peers[n3.id], netip.AddrPort{}, msg.marshal())
	n4.mu.Unlock()
	waitFor(t, 10*time.Second, "n3 to refuse a key from n4", func() bool {
		return dropCount(n3, "admin-key-not-from-admin") > before
	})
	if n3.Status().Self.Admin || n3.state.Exists("user.key") {
		t.Fatal("n3 took the user key from a node that is not an admin")
	}
	// An admin (n2) sending a key that is not the user's, with a valid
	// certificate for n3: refused too.
	other := membertest.NewUser(t, "alice")
	n2.mu.Lock()
	nc := n2.reissueLocked(n2.mem.store.Cert(n3.id), true, time.Now())
	msg = adminKeyMsg{Cert: nc.Marshal()}
	copy(msg.Seed[:], other.Priv.Seed())
	before = dropCount(n3, "admin-key-wrong-user")
	n2.sendCtlLocked(n2.paths.peers[n3.id], netip.AddrPort{}, msg.marshal())
	n2.mu.Unlock()
	waitFor(t, 10*time.Second, "n3 to refuse another user's key", func() bool {
		return dropCount(n3, "admin-key-wrong-user") > before
	})
	if n3.Status().Self.Admin || n3.state.Exists("user.key") {
		t.Fatal("n3 took a key that is not its user's")
	}

	if _, err := n2.Demote("n3"); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("demote a node that is not an admin: %v", err)
	}
	if _, err := n2.Promote(ctx, "n3"); err != nil {
		t.Fatal(err)
	}
	if _, err := n3.Invite(time.Minute, 1); err != nil {
		t.Fatalf("n3 promoted cannot invite: %v", err)
	}
	if _, err := n2.Demote("n3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "n3 to delete its user key", func() bool {
		return !n3.state.Exists("user.key") && !n3.Status().Self.Admin
	})
	if _, err := n3.Invite(time.Minute, 1); !errors.Is(err, api.ErrNotAdmin) {
		t.Fatalf("n3 demoted invites: %v", err)
	}
	waitFor(t, 10*time.Second, "n4 to list n3 as not admin", func() bool {
		e, ok := nodeEntry(n4, "n3")
		return ok && !e.Admin
	})
	for _, name := range []string{"n1", "n2", "n3", "n4"} {
		e, ok := nodeEntry(n4, name)
		if !ok || e.Expires == "" || e.Revoked {
			t.Fatalf("n4's list lacks %s: %+v", name, e)
		}
		if name != "n1" && !e.Online {
			t.Fatalf("n4 says %s is offline", name)
		}
	}
}

// TestRestoreUserKey: the user key, exported with a passphrase while the
// first admin lived, makes a fresh node (no certificate) an admin of the
// same user after that admin is gone: it finds n2 by --peer, and a node it
// invites joins and reaches n2.
func TestRestoreUserKey(t *testing.T) {
	nodes := joinedNet(t, 2)
	n1, n2 := nodes[0], nodes[1]
	pass := []byte("a long enough passphrase")
	backup, err := member.SealUserKey(n1.mem.user, pass)
	if err != nil {
		t.Fatal(err)
	}
	n1.Close()
	if _, err := member.OpenUserKey(backup, []byte("not the passphrase")); !errors.Is(err, member.ErrBadPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	u, err := member.OpenUserKey(backup, pass)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := (member.State{Dir: dir}).SaveUserKey(u); err != nil {
		t.Fatal(err)
	}
	n5 := testNode(t, "n5", func(c *Config) {
		c.StateDir = dir
		c.Peers = []string{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n2.Port()).String()}
	})
	if !n5.Status().Self.Admin || n5.Cert().User != n2.Cert().User {
		t.Fatal("the restored node is not an admin of the user")
	}
	waitFor(t, 20*time.Second, "n2 to list n5 as an online admin", func() bool {
		e, ok := nodeEntry(n2, "n5")
		return ok && e.Admin && e.Online
	})
	code, err := n5.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	n6 := testNode(t, "n6", func(c *Config) { c.JoinCode = code })
	serveEcho(t, n2, 7000)
	waitFor(t, 20*time.Second, "n6 to reach n2", func() bool {
		c, err := dial(n6, n2.Cert().IPv4, 7000, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// policyOf is the policy n holds: text and version.
func policyOf(n *Node) (string, uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.policyTextLocked()
}

// TestConcurrentPolicyChanges: admins a and b, each cut off from the
// other, share a different service at the same version. When they meet
// again every node holds one policy, the same, with both shares: the
// losing admin merged its change into the winner's as the next version.
// A third change after that, on top of the merge, keeps all three.
func TestConcurrentPolicyChanges(t *testing.T) {
	in := natlab.NewInternet()
	lk := &links{allowed: map[[2]netip.Addr]bool{}}
	u := membertest.NewUser(t, "alice")
	used := map[netip.Addr]bool{}
	ips := []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.3")}
	lk.set(ips[0], ips[2], true)
	lk.set(ips[1], ips[2], true)
	lk.set(ips[0], ips[1], true)
	var nodes []*Node
	for i, name := range []string{"a", "b", "c"} {
		dir := provision(t, u, name, used, i < 2)
		var peers []string
		if i > 0 {
			peers = append(peers, netip.AddrPortFrom(ips[0], DefaultPort).String())
		}
		nodes = append(nodes, labNode(t, in.NewHost(ips[i]), lk, name, func(c *Config) { c.StateDir, c.Peers = dir, peers }))
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		waitFor(t, 20*time.Second, n.Cert().Name+" to see both peers", func() bool { return directPeers(n) == 2 })
	}
	if _, _, err := a.Share("c:22", "bob", true); err != nil {
		t.Fatal(err)
	}
	_, v1 := policyOf(a)
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.Cert().Name+" to hold version 1", func() bool { _, v := policyOf(n); return v == v1 })
	}

	// a is cut off; both admins change the policy at version 2.
	lk.set(ips[0], ips[1], false)
	lk.set(ips[0], ips[2], false)
	if _, _, err := a.Share("c:80", "bob", true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Share("c:443", "carol", true); err != nil {
		t.Fatal(err)
	}
	ta, va := policyOf(a)
	tb, vb := policyOf(b)
	if va != v1+1 || vb != v1+1 || ta == tb {
		t.Fatalf("not a conflict: a %d, b %d", va, vb)
	}
	lk.set(ips[0], ips[1], true)
	lk.set(ips[0], ips[2], true)
	want := []string{"allow bob -> c:22", "allow bob -> c:80", "allow carol -> c:443"}
	converged := func() bool {
		t0, v0 := policyOf(a)
		for _, n := range nodes[1:] {
			if tn, vn := policyOf(n); tn != t0 || vn != v0 {
				return false
			}
		}
		for _, w := range want {
			if !strings.Contains(t0, w) {
				return false
			}
		}
		return true
	}
	waitFor(t, 40*time.Second, "every node to hold one policy with the three shares", converged)
	text, v := policyOf(c)
	t.Logf("after the merge: version %d:\n%s", v, text)
	if v != v1+2 {
		t.Fatalf("version %d after the merge, want %d (one version each, then the merge)", v, v1+2)
	}
	// A change on top of the merge is seen by both admins as built on theirs: no further merge.
	if _, _, err := b.Share("c:8080", "bob", true); err != nil {
		t.Fatal(err)
	}
	want = append(want, "allow bob -> c:8080")
	waitFor(t, 20*time.Second, "every node to hold the fourth share", converged)
	if _, v := policyOf(c); v != v1+3 {
		t.Fatalf("version %d after a change on top, want %d", v, v1+3)
	}
	// A whole text written from an old version is refused, not applied over
	// the changes it did not see; from the version in force it applies.
	waitFor(t, 10*time.Second, "a to hold the fourth share", func() bool { _, v := policyOf(a); return v == v1+3 })
	if _, err := a.ApplyPolicyOn(v1, defaultPolicy); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("a text from version %d applied over version %d: %v", v1, v1+3, err)
	}
	if _, v := policyOf(a); v != v1+3 {
		t.Fatalf("a refused apply changed the version to %d", v)
	}
	if pi, err := a.ApplyPolicyOn(v1+3, defaultPolicy); err != nil || pi.Version != v1+4 {
		t.Fatalf("apply on the version in force: %+v %v", pi, err)
	}
}
