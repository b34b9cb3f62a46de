package overlay

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"glow/overlay/member"
	"glow/relay"
)

// TestAttackFriendTURNPermits: a node with a TURN allocation permits its
// peers' addresses at the TURN server, again whenever a NodeInfo arrives.
// A friend's node publishes new endpoints in every NodeInfo it signs. The
// permissions used to only grow: each rotation's addresses were kept and
// renewed every 2 minutes in one request, without bound, for good. Now
// the client keeps the addresses of the peers' current endpoints only.
func TestAttackFriendTURNPermits(t *testing.T) {
	srv := testTURNServer(t)
	r := newFroutesRig(t)
	d := r.desk
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := relay.DialTURN(ctx, relay.TURNClientConfig{Server: srv.Addr(), Username: "glow", Password: "secret", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.runTURN(c) }() // as keepTURN does, until desk closes

	const rounds, eps = 20, 16
	var last []netip.AddrPort
	for round := range rounds {
		info := &member.NodeInfo{Node: r.evil.cert.Node, Seq: uint64(100 + round)}
		for i := range eps {
			info.Endpoints = append(info.Endpoints, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 3, byte(round), byte(1 + i)}), 9))
		}
		last = info.Endpoints
		member.SignInfo(r.evil.keys.Sign, info)
		d.mu.Lock()
		d.handleRecordsLocked(d.paths.peers[r.evil.cert.Node], []recordMsg{{member.KindInfo, info.Marshal()}}, time.Now())
		if i := d.mem.store.Info(r.evil.cert.Node); i == nil || i.Seq != info.Seq {
			d.mu.Unlock()
			t.Fatalf("desk did not take evil's NodeInfo %d", info.Seq)
		}
		// The candidates desk probes are the current endpoints' (probing
		// gives up on the old ones in its own time).
		d.paths.peers[r.evil.cert.Node].cands = map[netip.AddrPort]*candidate{}
		d.permitTURNLocked()
		d.mu.Unlock()
	}
	// The barrier: the last rotation's addresses are permitted. Then the
	// allocation should permit evil's current 16 endpoints (and whatever
	// else desk knows: nothing here), not every rotation's.
	waitFor(t, 10*time.Second, "the last rotation's endpoints permitted", func() bool {
		for _, ep := range last {
			if !c.Permitted(ep.Addr()) {
				return false
			}
		}
		return true
	})
	t.Logf("after %d rotations of %d endpoints: %d addresses permitted", rounds, eps, c.Permits())
	if n := c.Permits(); n > 2*eps {
		t.Errorf("%d addresses permitted (and renewed every 2 minutes) after %d rotations of a friend's %d endpoints, want at most %d", n, rounds, eps, 2*eps)
	}
}
