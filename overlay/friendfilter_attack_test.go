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

// TestAttackFriendCertFilterOff: a node whose peers are all its own user's
// runs without the policy filter (tunwrap.go: AllowedIPs already vouch for
// every source). A friend's certificate taken from gossip makes the
// friend's node a peer with a WireGuard configuration at once, while what
// follows from the set of certificates (the policy, the filter switch)
// waits for the control loop's queue to drain (flushCertsLocked, up to a
// tick or max(64, N/4) datagrams later). In between the friend's packets would reach
// the TUN unfiltered, so the filter is on from the moment a friend's peer
// can be configured in WireGuard (wgConfigLocked).
func TestAttackFriendCertFilterOff(t *testing.T) {
	nas := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	bob := membertest.NewUser(t, "bob")
	now := time.Now()
	_, laptop := membertest.NewCert(t, bob, "laptop", now)

	nas.mu.Lock()
	defer nas.mu.Unlock()
	if nas.tunf == nil || nas.tunf.on.Load() {
		t.Fatalf("nas with only its own certificate: filter present %v, on %v: the test needs it off", nas.tunf != nil, nas.tunf != nil && nas.tunf.on.Load())
	}
	befriendLocked(t, nas, bob)
	// Bob's certificate gossiped by one of alice's nodes; the control loop
	// may let go of nas.mu as soon as handleRecordsLocked returns.
	nas.handleRecordsLocked(&peer{cert: nas.mem.cert}, []recordMsg{{member.KindCert, laptop.Marshal()}}, now)
	if nas.mem.store.Cert(laptop.Node) == nil || nas.paths.peers[laptop.Node] == nil {
		t.Fatal("bob's node is no peer: the test does not see the window")
	}
	p := nas.paths.peers[laptop.Node]
	nas.bind.wgCfgMu.Lock()
	cfg := p.ep.wg.cfg
	nas.bind.wgCfgMu.Unlock()
	if cfg == "" {
		t.Fatal("bob's node has no WireGuard configuration: the test cannot see the window")
	}
	if !nas.tunf.on.Load() {
		t.Errorf("bob's node can be configured in WireGuard (%d bytes of configuration) while the policy filter is off", len(cfg))
	}
}

// TestAttackFriendKeepsOurNewAddress: a friend's node holds an address
// that no node of ours held, so it is routed to the friend; then a new node
// of ours is certified with it. Our node takes it in WireGuard, but the
// friend's configuration still lists it until the shadow state is computed
// again, which since certsGap waits for the control loop's queue to drain:
// meanwhile a wake of the friend's WireGuard peer (lazywg.go) takes the
// address back, and our traffic for our new node goes to the friend.
func TestAttackFriendKeepsOurNewAddress(t *testing.T) {
	nas := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	bob := membertest.NewUser(t, "bob")
	now := time.Now()
	_, laptop := membertest.NewCert(t, bob, "laptop", now)
	_, fresh := membertest.NewCert(t, nas.mem.user, "fresh", now)
	d := *fresh
	d.Raw, d.IPv4 = nil, laptop.IPv4
	member.SignCert(nas.mem.user, &d)
	fresh = &d
	own := &peer{cert: nas.mem.cert}

	nas.mu.Lock()
	defer nas.mu.Unlock()
	befriendLocked(t, nas, bob)
	nas.handleRecordsLocked(own, []recordMsg{{member.KindCert, laptop.Marshal()}}, now)
	nas.flushCertsLocked()
	bp := nas.paths.peers[laptop.Node]
	if bp == nil || !slices.Contains(bp.routed, laptop.IPv4) {
		t.Fatal("bob's node does not hold its address: the test cannot see it kept")
	}
	nas.handleRecordsLocked(own, []recordMsg{{member.KindCert, fresh.Marshal()}}, now)
	if nas.paths.peers[fresh.Node] == nil {
		t.Fatal("our new node is no peer")
	}
	nas.bind.wgCfgMu.Lock()
	cfg, ours := bp.ep.wg.cfg, nas.paths.peers[fresh.Node].ep.wg.cfg
	nas.bind.wgCfgMu.Unlock()
	addr := "allowed_ip=" + netip.PrefixFrom(laptop.IPv4, 32).String() + "\n"
	if !strings.Contains(ours, addr) {
		t.Errorf("our node fresh's WireGuard configuration lacks its address %v:\n%s", laptop.IPv4, ours)
	}
	if strings.Contains(cfg, addr) {
		t.Errorf("bob's WireGuard configuration still routes %v, now our node fresh's, to bob (routed %v)", laptop.IPv4, bp.routed)
	}
}

// befriendLocked makes u a friend of n's user, as a friend list gossiped
// to n would (n.mu held).
func befriendLocked(t *testing.T, n *Node, u *member.UserKey) {
	t.Helper()
	friends := membertest.SignedDoc(n.mem.user, member.KindFriends, 1,
		member.FormatFriends([]member.Friend{{Name: u.Name, Key: [32]byte(u.Public())}}))
	if _, err := n.mem.store.AddDoc(friends); err != nil {
		t.Fatal(err)
	}
}

// TestAttackUnfriendFilterOff: when the last friend is removed, the policy
// filter goes off (refreshPolicyLocked: only our own nodes are left), but
// the friend's WireGuard peer goes with the applier's queue (sleepWG), a
// moment later. Meanwhile its packets still come out of wireguard-go, and
// with the filter off they reach the TUN unchecked. The filter goes off
// only behind the removals queued before it.
func TestAttackUnfriendFilterOff(t *testing.T) {
	nas := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	bob := membertest.NewUser(t, "bob")
	now := time.Now()
	_, laptop := membertest.NewCert(t, bob, "laptop", now)
	own := &peer{cert: nas.mem.cert}
	configured := func() bool {
		s, err := nas.dev.IpcGet()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(s, "public_key="+laptop.WG.String()+"\n")
	}

	nas.mu.Lock()
	befriendLocked(t, nas, bob)
	nas.handleRecordsLocked(own, []recordMsg{{member.KindCert, laptop.Marshal()}}, now)
	nas.flushCertsLocked()
	nas.mu.Unlock()
	nas.bind.wakeForDst(laptop.IPv4) // bob's peer configured
	if !configured() || !nas.tunf.on.Load() {
		t.Fatalf("bob's peer configured %v, filter on %v: the test needs both", configured(), nas.tunf.on.Load())
	}

	nas.bind.wgMu.Lock() // the applier busy: bob's removal waits in its queue
	unfriend := membertest.SignedDoc(nas.mem.user, member.KindFriends, 2, member.FormatFriends(nil))
	nas.mu.Lock()
	nas.handleRecordsLocked(own, []recordMsg{{member.KindFriends, unfriend.Marshal()}}, now)
	gone := nas.paths.peers[laptop.Node] == nil
	nas.mu.Unlock()
	stillOn, filterOn := configured(), nas.tunf.on.Load()
	nas.bind.wgMu.Unlock()
	if !gone {
		t.Fatal("bob's node is still a peer after the unfriending")
	}
	if stillOn && !filterOn {
		t.Errorf("bob's WireGuard peer still configured while the policy filter is off")
	}
	waitFor(t, 10*time.Second, "bob's peer removed and the filter off", func() bool {
		return !configured() && !nas.tunf.on.Load()
	})
}
