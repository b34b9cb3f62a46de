package overlay

import (
	"context"
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
)

// serveEcho serves TCP echo on n's IPv4 overlay address at port, and
// returns how many connections it has accepted.
func serveEcho(t *testing.T, n *Node, port uint16) *atomic.Int64 {
	ln, err := stackNet(n).ListenTCPAddrPort(netip.AddrPortFrom(n.Cert().IPv4, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return accepted
}

// dial tries a TCP connection from a to ip:port within d.
// holdsOffered reports whether to holds every record that from would show
// it (visibleLocked), at from's version or newer: from's gossip to to has
// caught up with from's store, so a record from would offer to is there.
func holdsOffered(from, to *Node) bool {
	from.mu.Lock()
	p := from.paths.peers[to.ID()]
	var offered []member.DigestEntry
	if p != nil {
		for _, e := range from.mem.store.Digest() {
			if from.visibleLocked(p, e.RecordKey) {
				offered = append(offered, e)
			}
		}
	}
	from.mu.Unlock()
	if p == nil {
		return false
	}
	to.mu.Lock()
	defer to.mu.Unlock()
	for _, e := range offered {
		if to.mem.store.Version(e.RecordKey) < e.Version {
			return false
		}
	}
	return true
}

func dial(a *Node, ip netip.Addr, port uint16, d time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return a.Userspace().DialContext(ctx, "tcp", netip.AddrPortFrom(ip, port).String())
}

// roundTrip writes msg on c and reads it back within d.
func roundTrip(c net.Conn, msg string, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	return err
}

// TestFriendShare: alice (nas, desk) and bob (laptop). Bob becomes a friend;
// alice shares nas:8080/tcp with him: that one service is reachable, nothing
// else is; unshare cuts an open connection; a bad policy is refused and the
// old one stays; alice's own nodes are never affected.
func TestFriendShare(t *testing.T) {
	nas := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	code, _ := nas.Invite(time.Minute, 1)
	desk := testNode(t, "desk", func(c *Config) { c.JoinCode = code })
	laptop := testNode(t, "laptop", func(c *Config) { c.UserName = "bob" })
	waitFor(t, 20*time.Second, "desk and nas direct", func() bool { return directPeers(desk) == 1 })
	for _, p := range []uint16{8080, 8081} {
		serveEcho(t, nas, p)
	}
	serveEcho(t, desk, 8080)

	fcode, err := nas.FriendInvite(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := desk.FriendInvite(time.Minute); err == nil {
		t.Fatal("a non-admin node issued a friend code")
	}
	name, err := laptop.FriendAdd(context.Background(), fcode)
	if err != nil || name != "alice" {
		t.Fatalf("friend add: %q %v", name, err)
	}
	if fs := nas.Friends(); len(fs) != 1 || fs[0].Name != "bob" {
		t.Fatalf("alice's friends: %+v", fs)
	}
	waitFor(t, 20*time.Second, "laptop to reach nas", func() bool {
		p, ok := peerStatus(laptop, "nas")
		return ok && p.Online
	})
	// Nothing shared yet.
	if c, err := dial(laptop, nas.Cert().IPv4, 8080, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("bob reached nas:8080 before it was shared")
	}
	// Share nas:8080/tcp with bob.
	if _, changed, err := nas.Share("nas:8080/tcp", "bob", true); err != nil || !changed {
		t.Fatalf("share: %v %v", changed, err)
	}
	var conn net.Conn
	waitFor(t, 15*time.Second, "bob to reach nas:8080", func() bool {
		c, err := dial(laptop, nas.Cert().IPv4, 8080, time.Second)
		if err != nil {
			return false
		}
		if roundTrip(c, "hello", 2*time.Second) != nil {
			c.Close()
			return false
		}
		conn = c
		return true
	})
	defer conn.Close()
	if c, err := dial(laptop, nas.Cert().IPv4, 8081, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("bob reached nas:8081, which is not shared")
	}
	// Desk is not shared: bob's nodes do not even learn it. Looked at once
	// laptop holds everything nas offers it (a digest round since the
	// share), which would include desk's records if they were offered.
	waitFor(t, 30*time.Second, "laptop to hold what nas offers it", func() bool { return holdsOffered(nas, laptop) })
	nas.mu.Lock()
	deskKnown := nas.mem.store.Cert(desk.ID()) != nil
	nas.mu.Unlock()
	laptop.mu.Lock()
	leaked := laptop.mem.store.Cert(desk.ID()) != nil || laptop.mem.store.Version(member.RecordKey{Kind: member.KindInfo, Node: desk.ID()}) != 0
	laptop.mu.Unlock()
	if !deskKnown {
		t.Fatal("nas does not hold desk's certificate: nothing to keep from bob")
	}
	if _, ok := peerStatus(laptop, "desk"); ok || leaked {
		t.Fatal("bob learned of desk, which is not shared with him")
	}
	if c, err := dial(laptop, desk.Cert().IPv4, 8080, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("bob reached desk")
	}
	// Alice's own nodes reach each other on any port.
	if c, err := dial(desk, nas.Cert().IPv4, 8081, 5*time.Second); err != nil {
		t.Fatalf("desk -> nas:8081: %v", err)
	} else {
		c.Close()
	}
	// A bad policy is refused and the share stays in force.
	before := nas.Policy()
	if _, err := nas.ApplyPolicy("allow bob -> nas:99999/tcp\n"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("bad policy: %v", err)
	}
	if after := nas.Policy(); after.Version != before.Version {
		t.Fatal("a refused policy changed the version")
	}
	if err := roundTrip(conn, "still", 2*time.Second); err != nil {
		t.Fatalf("open connection broken by a refused policy: %v", err)
	}
	// Unshare cuts the open connection.
	if _, changed, err := nas.Share("nas:8080/tcp", "bob", false); err != nil || !changed {
		t.Fatalf("unshare: %v %v", changed, err)
	}
	if err := roundTrip(conn, "gone?", 2*time.Second); err == nil {
		t.Fatal("an open connection survived unshare")
	}
	if c, err := dial(desk, nas.Cert().IPv4, 8080, 5*time.Second); err != nil {
		t.Fatalf("desk -> nas:8080 after unshare: %v", err)
	} else {
		c.Close()
	}
	counts := nas.FilterCounts()
	if counts["not-shared"] == 0 {
		t.Fatalf("filter counted no not-shared drops: %v", counts)
	}
	// History and rollback.
	h, _ := nas.PolicyHistory()
	if len(h) < 2 {
		t.Fatalf("history %+v", h)
	}
	if _, err := nas.RollbackPolicy(h[0].Version); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "bob to reach nas:8080 after rollback", func() bool {
		c, err := dial(laptop, nas.Cert().IPv4, 8080, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	// Desk got the policy by gossip (it is signed by alice's user key).
	waitFor(t, 10*time.Second, "desk to hold the newest policy", func() bool {
		return desk.Policy().Version == nas.Policy().Version
	})
}

// TestRelayRefusesStrangers: a node of another user cannot use alice's node
// as a relay: its frames are dropped and counted, never forwarded.
func TestRelayRefusesStrangers(t *testing.T) {
	nodes := joinedNet(t, 2)
	relay, target := nodes[0], nodes[1]
	mallory, _ := member.NewNodeKeys()
	frame := make([]byte, wire.RelayHeaderLen+32)
	wire.PutRelayHeader(frame, 8, mallory.ID().Short(), target.ID().Short())
	copy(frame[wire.RelayHeaderLen:], []byte{4, 0, 0, 0}) // looks like WireGuard data
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(relay.Port())}
	for i := 0; i < 5; i++ {
		uc.WriteTo(frame, dst)
	}
	waitFor(t, 5*time.Second, "the relay to count the frames", func() bool {
		return relay.bind.Counters().RelayUnauthenticated >= 5
	})
	if c, _ := relay.fwd.Counts(); c["forwarded"] != 0 {
		t.Fatalf("forwarded a stranger's frame: %v", c)
	}
	if got := target.bind.Counters().RelayNoPeer; got != 0 {
		t.Fatalf("target received %d frames of a stranger", got)
	}
}

// FuzzParseFriendMsg: friend requests and answers as they arrive, opened
// (parseCtl dispatches them to parseFriendMsg). An accepted message must
// survive a round trip (the OK byte reads any value but 1 as false, so the
// bytes may differ).
func FuzzParseFriendMsg(f *testing.F) {
	f.Add(friendReq{UserName: "bob", Cert: []byte("cert")}.marshal())
	f.Add(friendResp{OK: true, UserName: "alice", Cert: []byte("cert")}.marshal())
	f.Add(friendResp{Err: "no"}.marshal())
	f.Add([]byte{byte(msgFriendReq)})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseCtl(b)
		if err != nil {
			return
		}
		var again []byte
		switch m := m.(type) {
		case friendReq:
			again = m.marshal()
		case friendResp:
			again = m.marshal()
		default:
			return
		}
		m2, err := parseCtl(again)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("friend message %x re-encodes to %x: %v", b, again, err)
		}
	})
}
