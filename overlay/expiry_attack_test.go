package overlay

import (
	"testing"
	"testing/synctest"
	"time"

	"glow/overlay/member"
)

// TestAttackExpiredPeer: b's certificate expires and no admin renews it (the
// network has none). b keeps sending: pings to a over WireGuard, control
// packets. Once b's certificate is past its expiry and the grace for clock
// skew, a and c must refuse it within seconds: no packet of b's arrives at a,
// none of a's at b, a and c hold no record of b to gossip, and b says that
// its certificate expired. (Before runtime expiry, a took every one of b's
// pings to the end.)
func TestAttackExpiredPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const life = 2 * time.Minute
		net := bubbleNetSpec(t, netSpec{noAdmin: true, life: map[string]time.Duration{"b": life}}, "a", "b", "c")
		net.dumpOnFailure(t)
		a, b, c := net.nodes[0], net.nodes[1], net.nodes[2]
		expires := b.Cert().NotAfter
		bubbleWait(t, time.Minute, "direct paths between all three", net.allDirect)
		stop := make(chan struct{})
		defer close(stop)
		// a's stream starts 250 ms after b's: two streams started in the
		// same instant stay in phase on the fake clock, and the WireGuard
		// initiations both ends send in the same instant refuse each other
		// for good (see TestBubbleAdminAway).
		fromB := net.stream(1, 0, 500*time.Millisecond, stop)
		time.Sleep(250 * time.Millisecond)
		toB := net.stream(0, 1, 500*time.Millisecond, stop)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("pings arrived: b->a %d, a->b %d", len(fromB()), len(toB()))
			}
		})
		bubbleWait(t, time.Minute, "b's pings at a", func() bool { return len(fromB()) >= 4 && len(toB()) >= 4 })
		holdWGPeers(net.nodes) // b's WireGuard peer is about to go
		// Refused within seconds of the expiry and its grace.
		cutoff := expires.Add(member.ExpiryGrace(life) + 10*time.Second)
		time.Sleep(time.Until(cutoff))
		before := len(fromB())
		time.Sleep(time.Minute)
		after := 0
		for _, at := range fromB() {
			if at.After(cutoff) {
				after++
			}
		}
		toAfter := 0
		for _, at := range toB() {
			if at.After(cutoff) {
				toAfter++
			}
		}
		t.Logf("b's pings at a: %d before the expiry, %d in the minute after it; a's pings at b after it: %d", before, after, toAfter)
		if after > 0 || toAfter > 0 {
			t.Errorf("b's certificate expired at %v, and a still took %d of its pings and b %d of a's in the minute after", expires, after, toAfter)
		}
		for _, n := range []*Node{a, c} {
			if _, ok := peerStatus(n, "b"); ok {
				t.Errorf("%s still lists b as a peer after its certificate expired", n.Cert().Name)
			}
			n.mu.Lock()
			held := n.mem.store.Cert(b.ID()) != nil || n.mem.store.Info(b.ID()) != nil
			n.mu.Unlock()
			if held {
				t.Errorf("%s still holds (and gossips) b's records after its certificate expired", n.Cert().Name)
			}
		}
		if s := b.Status().Self; s.Warning == "" {
			t.Errorf("b's status does not say that its certificate expired: %+v", s)
		}
	})
}
