package overlay

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"glow/overlay/member"
)

// Attacks through what a friend asserts (its certificates, records and
// documents) beyond its subnet routes (froutes_attack_test.go).

// TestAttackFriendTwinKeys: bob's user key signs a certificate for a node
// "evil" that carries the WireGuard and control keys of alice's desk (bob
// learnt them from desk's certificate: a friend holds the certificates of
// the nodes shared with it), and hands it to nas as gossip does. Nothing
// proves bob's node holds those keys. nas must refuse it: else nas's
// WireGuard peer for desk's key takes evil's endpoint and addresses, and
// desk's control messages are taken as evil's. nas must keep reaching desk.
func TestAttackFriendTwinKeys(t *testing.T) {
	nas := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	code, _ := nas.Invite(time.Minute, 1)
	desk := testNode(t, "desk", func(c *Config) { c.JoinCode = code })
	laptop := testNode(t, "laptop", func(c *Config) { c.UserName = "bob" })
	waitFor(t, 20*time.Second, "desk and nas direct", func() bool { return directPeers(desk) == 1 })
	serveEcho(t, desk, 8080)
	fcode, _ := nas.FriendInvite(time.Minute)
	if _, err := laptop.FriendAdd(context.Background(), fcode); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "nas to know laptop", func() bool { _, ok := peerStatus(nas, "laptop"); return ok })
	if got := dialCount(nas, desk.Cert().IPv4, 8080, 3); got != 3 {
		t.Fatalf("before the attack, nas -> desk:8080: %d/3", got)
	}

	dc := desk.Cert()
	keys, _ := member.NewNodeKeys()
	now := time.Now()
	v4, _ := member.AllocIPv4(keys.ID(), nil)
	evil := &member.Cert{Node: keys.ID(), Name: "evil", WG: dc.WG, Ctl: dc.Ctl, IPv4: v4,
		IPv6: member.NodeAddr6(laptop.mem.user.Public(), keys.ID()), NotBefore: now, NotAfter: now.Add(time.Hour)}
	member.SignCert(laptop.mem.user, evil)

	nas.mu.Lock()
	from := nas.paths.peers[laptop.ID()]
	if from == nil {
		nas.mu.Unlock()
		t.Fatal("nas has no peer for laptop")
	}
	nas.handleRecordsLocked(from, []recordMsg{{member.KindCert, evil.Marshal()}}, now)
	nas.flushCertsLocked()
	held := nas.mem.store.Cert(evil.Node) != nil
	ctlPeer := nas.paths.byCtl[dc.Ctl]
	bindEp := (*nas.bind.byCtlKey.Load())[dc.Ctl]
	nas.mu.Unlock()

	// Traffic to evil wakes its WireGuard peer (lazywg.go), then nas
	// speaks to desk.
	evilOK := dialCount(nas, evil.IPv4, 22, 1)
	deskOK := dialCount(nas, dc.IPv4, 8080, 3)
	holder := wgOwner(nas, netip.PrefixFrom(dc.IPv4, 32).String())
	t.Logf("nas holds evil's certificate: %v; desk's control key maps to %s (peer) and %v (bind); evil reached %d/1; nas -> desk:8080 %d/3; desk's /32 held by desk's key: %v",
		held, nameOf(ctlPeer), bindEp != nil && bindEp.ID == desk.ID(), evilOK, deskOK, holder == dc.WG.String())

	if held {
		t.Error("nas took a friend's certificate carrying desk's keys")
	}
	if ctlPeer == nil || ctlPeer.cert.Node != desk.ID() || bindEp == nil || bindEp.ID != desk.ID() {
		t.Error("desk's control key no longer maps to desk")
	}
	if deskOK != 3 || holder != dc.WG.String() {
		t.Error("nas lost desk")
	}
}

func nameOf(p *peer) string {
	if p == nil {
		return "nobody"
	}
	return p.cert.FQDN()
}
