package overlay

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
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
	return n.mem.store.Cert(id) != nil, n.paths.peers[id] != nil
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
	d := &member.UserDoc{Kind: member.KindRevoked, Version: 1, Body: member.FormatRevoked(ids)}
	u.laptop.mu.Lock()
	member.SignUserDoc(u.laptop.mem.user, d)
	u.laptop.floodLocked(u.laptop.paths.peers[u.phone.ID()], []recordMsg{{member.KindRevoked, d.Marshal()}})
	u.laptop.mu.Unlock()
	// Bounded wait (not a timing assertion): gossip runs every 5 s.
	deadline := time.Now().Add(12 * gossipEvery) // generous: it stops as soon as all is dropped
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

// serveEchoOn serves TCP echo on ip:port of n's userspace stack.
func serveEchoOn(t *testing.T, n *Node, ip netip.Addr, port uint16) {
	ln, err := stackNet(n).ListenTCPAddrPort(netip.AddrPortFrom(ip, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
}

// wgOwner returns the WireGuard public key (hex) that holds prefix in n's
// device, or "".
func wgOwner(n *Node, prefix string) string {
	s, err := n.bind.dev.Load().IpcGet()
	if err != nil {
		return ""
	}
	var key string
	for line := range strings.SplitSeq(s, "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch {
		case k == "public_key":
			key = v
		case k == "allowed_ip" && v == prefix:
			return key
		}
	}
	return ""
}

// TestAttackFriendAddressShadow: bob signs a certificate for a node of his,
// evil, with the IPv4 address of alice's desk, and shares evil with alice.
// Alice's nodes must not route that address to evil (WireGuard allowed
// IPs, the packet path's address map, DNS), must keep it mapped to desk
// for the filter, must show the collision in status, and must still reach
// evil over IPv6.
func TestAttackFriendAddressShadow(t *testing.T) {
	nas, desk, laptop := aliceAndFriendBob(t)
	serveEcho(t, nas, 9999) // shared with nobody
	deskV4 := desk.Cert().IPv4

	// Bob's evil node: a certificate his user key signs, with desk's IPv4.
	keys, _ := member.NewNodeKeys()
	now := time.Now()
	c := &member.Cert{Node: keys.ID(), Name: "evil", WG: keys.WGPublic(), Ctl: keys.CtlPublic(), IPv4: deskV4,
		IPv6: member.NodeAddr6(laptop.mem.user.Public(), keys.ID()), NotBefore: now, NotAfter: now.Add(time.Hour)}
	member.SignCert(laptop.mem.user, c)
	st := member.State{Dir: t.TempDir()}
	if err := st.SaveNodeKeys(keys); err != nil {
		t.Fatal(err)
	}
	if err := st.WriteFile("cert", c.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	evil := testNode(t, "evil", func(cfg *Config) {
		cfg.StateDir = st.Dir
		cfg.Peers = []string{fmt.Sprintf("127.0.0.1:%d", laptop.Port())}
	})
	serveEchoOn(t, evil, c.IPv6, 22)
	waitFor(t, 20*time.Second, "laptop to know evil", func() bool { _, ok := peerStatus(laptop, "evil"); return ok })
	if _, _, err := laptop.Share("evil:22/tcp", "alice", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "nas to learn evil", func() bool { _, ok := peerStatus(nas, "evil"); return ok })
	waitFor(t, 20*time.Second, "evil to learn nas", func() bool { _, ok := peerStatus(evil, "nas"); return ok })

	// The attack: evil speaks to nas from desk's address, then nas speaks to desk.
	ownBefore := nas.FilterCounts()["ok-own"]
	evilIn := dialCount(evil, nas.Cert().IPv4, 9999, 3)
	ownAfter := nas.FilterCounts()["ok-own"]
	deskOK := dialCount(nas, deskV4, 8080, 3)
	prefix := netip.PrefixFrom(deskV4, 32).String()
	holder := wgOwner(nas, prefix)
	nas.mu.Lock()
	ep := (*nas.bind.byIP.Load())[deskV4]
	evilCfg := nas.bind.Peer(evil.ID()).wg.cfg
	nas.mu.Unlock()
	principal, _ := nas.dir.Lookup(deskV4)
	v4, _, _ := nas.names.LookupHost("bob", "evil")
	conflicts := nas.Status().Conflicts
	t.Logf("evil -> nas:9999 from desk's address: %d/3 connected (nas counted %d ok-own packets meanwhile); nas -> desk:8080: %d/3",
		evilIn, ownAfter-ownBefore, deskOK)
	t.Logf("on nas: %s held by desk=%v evil=%v; packet path maps it to %v; evil's allowed IPs list it: %v; filter principal %+v; DNS evil.bob A %v; conflicts in status: %d",
		prefix, holder == desk.Cert().WG.String(), holder == keys.WGPublic().String(), ep != nil && ep.ID == evil.ID(),
		strings.Contains(evilCfg, deskV4.String()+"/32"), principal, v4, len(conflicts))

	if evilIn != 0 {
		t.Error("evil's packets from desk's address reached nas")
	}
	if deskOK != 3 {
		t.Error("nas's traffic to desk did not reach desk")
	}
	if holder != desk.Cert().WG.String() || ep == nil || ep.ID != desk.ID() || strings.Contains(evilCfg, deskV4.String()) {
		t.Error("desk's address is routed to evil")
	}
	if principal.User != "alice" || principal.Node != "desk" {
		t.Errorf("desk's address maps to %+v", principal)
	}
	if v4.IsValid() {
		t.Errorf("evil.bob resolves to %v", v4)
	}
	if len(conflicts) != 1 || conflicts[0].Addr != deskV4.String() || conflicts[0].Node != "evil.bob" || conflicts[0].Holder != "desk.alice" {
		t.Errorf("status conflicts: %+v", conflicts)
	}
	// Evil stays reachable over IPv6.
	if got := dialCount(nas, c.IPv6, 22, 3); got != 3 {
		t.Errorf("nas -> [evil]:22 over IPv6: %d/3", got)
	}
}

// TestAttackShareOtherAddressOverlay: the in-process half of
// policy.TestAttackShareOtherAddress. Bob, granted nas:8080/tcp, makes his
// laptop route a container network (172.17.0.0/16) and an address of
// nas's LAN to nas, as a modified client could, and sends to port 8080
// there: nas's filter drops every packet as wrong-destination, while
// nas:8080 works over IPv4 and IPv6.
func TestAttackShareOtherAddressOverlay(t *testing.T) {
	nas := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	laptop := testNode(t, "laptop", func(c *Config) { c.UserName = "bob" })
	accepted := serveEcho(t, nas, 8080)
	serveEchoOn(t, nas, nas.Cert().IPv6, 8080)
	fcode, _ := nas.FriendInvite(time.Minute)
	if _, err := laptop.FriendAdd(context.Background(), fcode); err != nil {
		t.Fatal(err)
	}
	if _, _, err := nas.Share("nas:8080/tcp", "bob", true); err != nil {
		t.Fatal(err)
	}
	// Bob reaches nas:8080 with a connection held open and idle until the
	// end, so that no packet of it passes nas's filter while the attack is
	// counted: its last (the handshake's ACK) has passed once nas accepted
	// it. No packet bob sent before comes later either: one WireGuard peer
	// delivers in order.
	var open net.Conn
	waitFor(t, 20*time.Second, "bob to connect to nas:8080", func() bool {
		c, err := dial(laptop, nas.Cert().IPv4, 8080, 2*time.Second)
		open = c
		return err == nil
	})
	defer open.Close()
	waitFor(t, 10*time.Second, "nas to accept bob's connection", func() bool { return accepted.Load() > 0 })

	laptop.mu.Lock()
	p := laptop.paths.peers[nas.ID()]
	ep := p.ep
	laptop.bind.setWG(ep, ep.wg.key, ep.wg.cfg+"allowed_ip=172.17.0.0/16\nallowed_ip=192.168.77.0/24\n", p.routed)
	laptop.mu.Unlock()
	before, okBefore := nas.FilterCounts()["wrong-destination"], nas.FilterCounts()["ok"]
	reached := 0
	for _, dst := range []string{"172.17.0.2", "192.168.77.1"} {
		reached += dialCount(laptop, netip.MustParseAddr(dst), 8080, 2)
	}
	waitFor(t, 5*time.Second, "nas to count the drops", func() bool { return nas.FilterCounts()["wrong-destination"] >= before+4 })
	// Counted once nas's filter has taken every packet of the attack: a
	// SYN to port 8081 (not shared), behind them on the same WireGuard
	// peer, counted as not-shared.
	notShared := nas.FilterCounts()["not-shared"]
	waitFor(t, 10*time.Second, "nas to refuse a SYN to 8081 behind the attack", func() bool {
		if c, err := dial(laptop, nas.Cert().IPv4, 8081, 200*time.Millisecond); err == nil {
			c.Close()
		}
		return nas.FilterCounts()["not-shared"] > notShared
	})
	dropped, passed := nas.FilterCounts()["wrong-destination"]-before, nas.FilterCounts()["ok"]-okBefore
	t.Logf("bob -> other addresses:8080 through nas: %d/4 connected, %d packets passed nas's filter, %d dropped as wrong-destination",
		reached, passed, dropped)
	if reached != 0 || passed != 0 {
		t.Fatal("bob's packets to another address passed nas's filter")
	}
	for _, ip := range []netip.Addr{nas.Cert().IPv4, nas.Cert().IPv6} {
		if got := dialCount(laptop, ip, 8080, 1); got != 1 {
			t.Errorf("bob -> %v:8080 (shared): %d/1", ip, got)
		}
	}
}

// aliceAndFriendBob starts alice's nas and desk (joined with nas's code,
// direct to it, serving an echo on 8080) and bob's laptop, a friend of
// alice's (laptop took nas's friend code).
func aliceAndFriendBob(t *testing.T) (nas, desk, laptop *Node) {
	t.Helper()
	nas = testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	code, _ := nas.Invite(time.Minute, 1)
	desk = testNode(t, "desk", func(c *Config) { c.JoinCode = code })
	laptop = testNode(t, "laptop", func(c *Config) { c.UserName = "bob" })
	waitFor(t, 20*time.Second, "desk and nas direct", func() bool { return directPeers(desk) == 1 })
	serveEcho(t, desk, 8080)
	fcode, _ := nas.FriendInvite(time.Minute)
	if _, err := laptop.FriendAdd(context.Background(), fcode); err != nil {
		t.Fatal(err)
	}
	return nas, desk, laptop
}
