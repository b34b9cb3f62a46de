package overlay

import (
	"strings"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// TestAttackRemovedPeerWakesWG: while the Bind's lookup maps wait for the
// control loop (Hold, a queue of certificates being taken: bind_hold.go),
// a peer removed meanwhile (a revocation) is still found by the packet
// path by its overlay address or short id. A packet to its address (the
// TUN reader: wakeForDst) or a handshake initiation relayed from it
// (wakeOnInitiation) then configures its WireGuard peer again, after the
// removal took it out, and no one removes it after: the endpoint is gone
// from the Bind, so lazy trimming never looks at it. A removed endpoint's
// WireGuard configuration must be gone with it.
func TestAttackRemovedPeerWakesWG(t *testing.T) {
	nas := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	now := time.Now()
	_, old := membertest.NewCert(t, nas.mem.user, "old", now)
	_, fresh := membertest.NewCert(t, nas.mem.user, "fresh", now)
	own := &peer{cert: nas.mem.cert} // records gossiped by one of alice's nodes

	nas.mu.Lock()
	defer nas.mu.Unlock()
	nas.handleRecordsLocked(own, []recordMsg{{member.KindCert, old.Marshal()}}, now)
	nas.flushCertsLocked()
	p := nas.paths.peers[old.Node]
	if p == nil {
		t.Fatal("old is no peer")
	}
	e := p.ep
	nas.bind.wakeForDst(old.IPv4) // nas sends to old: its WireGuard peer is configured
	configured := func() bool {
		s, err := nas.dev.IpcGet()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(s, "public_key="+old.WG.String()+"\n")
	}
	if !e.wg.on.Load() || !configured() {
		t.Fatal("old's WireGuard peer was not configured: the test cannot see it come back")
	}

	// A new node's certificate (the Bind's maps now wait), then old's
	// revocation, two datagrams of one queue.
	nas.handleRecordsLocked(own, []recordMsg{{member.KindCert, fresh.Marshal()}}, now)
	var version uint64 = 1
	if d := nas.mem.store.Doc(member.KindRevoked); d != nil {
		version = d.Version + 1
	}
	rev := membertest.SignedDoc(nas.mem.user, member.KindRevoked, version, member.FormatRevoked([]wire.NodeID{old.Node}))
	nas.handleRecordsLocked(own, []recordMsg{{member.KindRevoked, rev.Marshal()}}, now)
	if nas.paths.peers[old.Node] != nil {
		t.Fatal("old is still a peer after its revocation")
	}
	// The WireGuard applier takes old's peer out (its goroutine may hold
	// the queue: wait for it, bounded).
	nas.bind.applyWG()
	waitFor(t, 10*time.Second, "old's WireGuard peer removed", func() bool { return !configured() })

	nas.bind.wakeForDst(old.IPv4)   // a packet to old's address meanwhile
	nas.bind.wakeOnInitiation(e, 1) // or its handshake initiation, relayed
	nas.flushCertsLocked()          // the loop's queue drained
	nas.bind.applyWG()
	if configured() || e.wg.on.Load() {
		t.Errorf("old, revoked and removed, has its WireGuard peer configured again (on=%v)", e.wg.on.Load())
	}
	if nas.bind.known(old.Node) != nil || (*nas.bind.byShort.Load())[old.Node.Short()] != nil {
		t.Error("old, revoked and removed, has an endpoint in the Bind again")
	}
}

// TestAttackRemovedPeerDuringRebind: a peer removed (a revocation) while a
// rebind pauses WireGuard configuration (portclash.go) must lose its
// WireGuard peer once the pause ends. Its removal found the device paused
// and was dropped: the endpoint is gone from the Bind, so no trim ever
// looks at it again, and a revoked node kept a configured peer (its key
// and allowed IPs) in wireguard-go for good.
func TestAttackRemovedPeerDuringRebind(t *testing.T) {
	nas := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	now := time.Now()
	_, old := membertest.NewCert(t, nas.mem.user, "old", now)
	own := &peer{cert: nas.mem.cert}
	configured := func() bool {
		s, err := nas.dev.IpcGet()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(s, "public_key="+old.WG.String()+"\n")
	}

	nas.mu.Lock()
	nas.handleRecordsLocked(own, []recordMsg{{member.KindCert, old.Marshal()}}, now)
	nas.flushCertsLocked()
	p := nas.paths.peers[old.Node]
	nas.mu.Unlock()
	if p == nil {
		t.Fatal("old is no peer")
	}
	nas.bind.wakeForDst(old.IPv4) // nas sends to old: its WireGuard peer is configured
	if !p.ep.wg.on.Load() || !configured() {
		t.Fatal("old's WireGuard peer was not configured: the test cannot see it stay")
	}

	if !nas.bind.pauseWG() { // a rebind begins
		t.Fatal("bind closing")
	}
	nas.mu.Lock()
	var version uint64 = 1
	if d := nas.mem.store.Doc(member.KindRevoked); d != nil {
		version = d.Version + 1
	}
	rev := membertest.SignedDoc(nas.mem.user, member.KindRevoked, version, member.FormatRevoked([]wire.NodeID{old.Node}))
	nas.handleRecordsLocked(own, []recordMsg{{member.KindRevoked, rev.Marshal()}}, now)
	removed := nas.paths.peers[old.Node] == nil
	nas.mu.Unlock()
	if !removed {
		t.Fatal("old is still a peer after its revocation")
	}
	nas.bind.applyWG() // the removal, while paused
	nas.bind.resumeWG()
	waitFor(t, 10*time.Second, "old's WireGuard peer removed after the rebind", func() bool { return !configured() })
}
