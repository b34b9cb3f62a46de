package overlay

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// TestAttackFriendTakesOurNewAddress is TestAttackFriendKeepsOurNewAddress
// the other way round: a new node of ours is certified with an address no
// one held, and before the shadow state is computed again
// (flushCertsLocked, up to a queue of datagrams later) a friend's node
// takes a certificate claiming that address (its renewal, same keys).
// The friend's configuration is checked against the shadow state, which
// does not know our new node yet: WireGuard would route our node's address
// to the friend (at once if its peer is on, else at its next wake) until
// the follow-up.
func TestAttackFriendTakesOurNewAddress(t *testing.T) {
	nas := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	bob := membertest.NewUser(t, "bob")
	now := time.Now()
	_, laptop := membertest.NewCert(t, bob, "laptop", now)
	_, fresh := membertest.NewCert(t, nas.mem.user, "fresh", now)
	if fresh.IPv4 == laptop.IPv4 {
		t.Skip("random addresses collided")
	}
	renewed := *laptop // the friend's node, certified again with our new node's address
	renewed.Raw, renewed.IPv4, renewed.NotBefore = nil, fresh.IPv4, laptop.NotBefore.Add(time.Second)
	member.SignCert(bob, &renewed)
	own := &peer{cert: nas.mem.cert}

	nas.mu.Lock()
	defer nas.mu.Unlock()
	befriendLocked(t, nas, bob)
	nas.handleRecordsLocked(own, []recordMsg{{member.KindCert, laptop.Marshal()}}, now)
	nas.flushCertsLocked()
	bp := nas.paths.peers[laptop.Node]
	if bp == nil || !slices.Contains(bp.routed, laptop.IPv4) {
		t.Fatal("bob's node does not hold its address: the test cannot see what it takes")
	}
	nas.handleRecordsLocked(own, []recordMsg{{member.KindCert, fresh.Marshal()}}, now)
	nas.handleRecordsLocked(bp, []recordMsg{{member.KindCert, renewed.Marshal()}}, now)
	if nas.mem.store.Cert(laptop.Node) != nas.paths.peers[laptop.Node].cert || bp.cert.IPv4 != fresh.IPv4 {
		t.Fatal("bob's renewed certificate was not taken: the test cannot see the window")
	}
	nas.bind.wgCfgMu.Lock()
	cfg := bp.ep.wg.cfg
	nas.bind.wgCfgMu.Unlock()
	addr := "allowed_ip=" + netip.PrefixFrom(fresh.IPv4, 32).String() + "\n"
	if strings.Contains(cfg, addr) || bp.routesTo(fresh.IPv4) {
		t.Errorf("bob's WireGuard configuration routes %v, our new node fresh's, to bob (routed %v)", fresh.IPv4, bp.routed)
	}
	nas.flushCertsLocked()
	if bp.routesTo(fresh.IPv4) {
		t.Errorf("after the follow-up bob's node is still routed %v", fresh.IPv4)
	}
}
