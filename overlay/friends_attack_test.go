package overlay

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"glow/internal/wire"
)

// twoUsers is alice (nas, the admin, and desk) and bob (laptop, the admin,
// and phone), friends, with nas:8080/tcp shared with bob and bob's phone
// shared with alice (so alice's nodes learn it). nas serves echo on 8080.
type twoUsers struct {
	nas, desk, laptop, phone *Node
}

func newTwoUsers(t *testing.T) twoUsers {
	t.Helper()
	var u twoUsers
	u.nas = testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	code, _ := u.nas.Invite(time.Minute, 1)
	u.desk = testNode(t, "desk", func(c *Config) { c.JoinCode = code })
	u.laptop = testNode(t, "laptop", func(c *Config) { c.UserName = "bob" })
	code, _ = u.laptop.Invite(time.Minute, 1)
	u.phone = testNode(t, "phone", func(c *Config) { c.JoinCode = code })
	waitFor(t, 20*time.Second, "desk and nas direct", func() bool { return directPeers(u.desk) == 1 })
	waitFor(t, 20*time.Second, "phone and laptop direct", func() bool { return directPeers(u.phone) == 1 })
	serveEcho(t, u.nas, 8080)
	fcode, err := u.nas.FriendInvite(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.laptop.FriendAdd(context.Background(), fcode); err != nil {
		t.Fatalf("friend add: %v", err)
	}
	if _, _, err := u.nas.Share("nas:8080/tcp", "bob", true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := u.laptop.Share("phone:22/tcp", "alice", true); err != nil {
		t.Fatal(err)
	}
	return u
}

// dialCount tries k TCP echo exchanges from a to ip:port and returns how
// many worked.
func dialCount(a *Node, ip netip.Addr, port uint16, k int) int {
	ok := 0
	for range k {
		c, err := dial(a, ip, port, 2*time.Second)
		if err != nil {
			continue
		}
		if roundTrip(c, "x", 2*time.Second) == nil {
			ok++
		}
		c.Close()
	}
	return ok
}

// holds reports whether n holds a certificate and a peer for id.
func holds(n *Node, id wire.NodeID) (cert, peer bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.store.Cert(id) != nil, n.peers[id] != nil
}

// TestAttackFriendRevocationIgnored: bob's phone is stolen and bob revokes
// it (the phone does not hear of it). Alice's nodes must drop it within seconds (certificate, peer, access
// to nas:8080). The same revocation also names alice's nas and desk: a
// friend cannot revoke another user's nodes, so nothing changes for them.
func TestAttackFriendRevocationIgnored(t *testing.T) {
	u := newTwoUsers(t)
	nasIP := u.nas.Cert().IPv4
	waitFor(t, 30*time.Second, "phone to reach nas:8080", func() bool { return dialCount(u.phone, nasIP, 8080, 1) == 1 })
	waitFor(t, 20*time.Second, "desk to learn phone", func() bool { c, _ := holds(u.desk, u.phone.ID()); return c })

	// Bob's admin signs the revocation and pushes it to its neighbours,
	// all but the phone: a stolen device ignores its revocation anyway,
	// and here it must keep trying.
	ids := []wire.NodeID{u.phone.ID(), u.nas.ID(), u.desk.ID()}
	d := &UserDoc{Kind: KindRevoked, Version: 1, Body: formatRevoked(ids)}
	u.laptop.mu.Lock()
	SignUserDoc(u.laptop.user, d)
	u.laptop.floodLocked(u.laptop.peers[u.phone.ID()], []recordMsg{{KindRevoked, d.Marshal()}})
	u.laptop.mu.Unlock()
	// Bounded wait (not a timing assertion): gossip runs every 5 s.
	deadline := time.Now().Add(3 * gossipEvery)
	for time.Now().Before(deadline) {
		c1, p1 := holds(u.nas, u.phone.ID())
		c2, p2 := holds(u.desk, u.phone.ID())
		if !c1 && !p1 && !c2 && !p2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	nasCert, nasPeer := holds(u.nas, u.phone.ID())
	deskCert, deskPeer := holds(u.desk, u.phone.ID())
	reached := dialCount(u.phone, nasIP, 8080, 3)
	t.Logf("after bob revoked phone: nas holds cert=%v peer=%v, desk holds cert=%v peer=%v; phone reached nas:8080 %d/3",
		nasCert, nasPeer, deskCert, deskPeer, reached)
	if nasCert || nasPeer || deskCert || deskPeer || reached != 0 {
		t.Fatal("a friend's revocation of its own node was not honoured")
	}
	// The revocation named alice's nodes too: they stay.
	for _, n := range []*Node{u.nas, u.desk} {
		for _, id := range []wire.NodeID{u.nas.ID(), u.desk.ID()} {
			if c, _ := holds(n, id); !c {
				t.Fatalf("%s dropped alice's node %v on bob's word", n.Cert().Name, id)
			}
		}
	}
	if directPeers(u.desk) < 1 {
		t.Fatal("desk lost nas")
	}
	if got := dialCount(u.laptop, nasIP, 8080, 1); got != 1 {
		t.Fatal("bob's laptop (not revoked) lost nas:8080")
	}
}
