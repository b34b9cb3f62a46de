package overlay

import (
	"net/netip"
	"testing"
	"time"

	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// TestAttackFriendSquatsOurNodeID: a friend's user key signs a certificate
// for any node id, one of ours too (ids are public: a node's key). Our
// certificate for that id takes it from the friend's in the store
// (TestStoreFriendCannotTakeOurID), but the peer stayed the same peer with
// new keys: the direct path the friend's node proved (its address, its
// stream link) stayed our node's path, so our traffic for our node went to
// the friend until heartbeats gave up on it. A peer whose keys change is a
// new peer: nothing the old keys proved carries over.
func TestAttackFriendSquatsOurNodeID(t *testing.T) {
	nas := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	bob := membertest.NewUser(t, "bob")
	now := time.Now()
	_, fresh := membertest.NewCert(t, nas.mem.user, "fresh", now)
	_, sq := membertest.NewCert(t, bob, "fresh", now) // bob's keys, for our node's id
	squat := *sq
	squat.Raw, squat.Node, squat.IPv6 = nil, fresh.Node, member.NodeAddr6(bob.Public(), fresh.Node)
	member.SignCert(bob, &squat)
	own := &peer{cert: nas.mem.cert}
	bobAddr := netip.MustParseAddrPort("127.0.0.1:9") // where bob's node answered pings

	nas.mu.Lock()
	defer nas.mu.Unlock()
	befriendLocked(t, nas, bob)
	nas.handleRecordsLocked(own, []recordMsg{{member.KindCert, squat.Marshal()}}, now)
	nas.flushCertsLocked()
	p := nas.paths.peers[fresh.Node]
	if p == nil || p.cert.Ctl != squat.Ctl {
		t.Fatal("bob's certificate for our node's id was not taken: the test cannot see what it leaves")
	}
	nas.setPathLocked(p, bobAddr, time.Millisecond, now) // bob's node proved a direct path
	if !p.path().neighbour() {
		t.Fatal("bob's node has no direct path: the test cannot see it kept")
	}

	nas.handleRecordsLocked(own, []recordMsg{{member.KindCert, fresh.Marshal()}}, now)
	nas.flushCertsLocked()
	q := nas.paths.peers[fresh.Node]
	if q == nil || q.cert != nas.mem.store.Cert(fresh.Node) || q.cert.Ctl != fresh.Ctl {
		t.Fatal("our node's certificate did not replace bob's")
	}
	if c := q.path(); c.neighbour() {
		t.Errorf("our node fresh's path is %v (%v), which bob's node proved", c.kind, c.direct)
	}
	if nb := nas.paths.nbrs[fresh.Node]; nb != nil && nb.path().neighbour() {
		t.Errorf("our node fresh is a neighbour by bob's path")
	}
	// Our node proves its own path; then bob's old peer changes late (the
	// reader of its stream link ends): its path is no one's to publish.
	ourAddr := netip.MustParseAddrPort("127.0.0.1:7")
	nas.setPathLocked(q, ourAddr, time.Millisecond, now)
	nas.detachStreamLocked(p, p.stream, now)
	if bp := q.ep.path.Load(); bp == nil || bp.addr != ourAddr {
		t.Errorf("our node fresh's packets go to %+v, not its address %v, after bob's old peer changed", bp, ourAddr)
	}
}
