package overlay

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"glow/overlay/api"
	"glow/overlay/member"
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
