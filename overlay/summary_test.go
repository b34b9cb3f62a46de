package overlay

import (
	"testing"
	"testing/synctest"
	"time"

	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// TestBubbleSummaryRepairs: once two neighbours exchange digest summaries
// (each sent one with its first digest), a record only one of them holds,
// put in its store without the push that would flood it, reaches the other
// through the summaries alone: the other's summary differs in one range,
// the holder answers with its entries there, and the other asks for the
// record.
func TestBubbleSummaryRepairs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := bubbleNet(t, "a", "b")
		a, b := net.nodes[0], net.nodes[1]
		bubbleWait(t, time.Minute, "a direct path", net.allDirect)
		sums := func(n, m *Node) bool {
			n.mu.Lock()
			defer n.mu.Unlock()
			p := n.paths.peers[m.id]
			return p != nil && p.sums
		}
		bubbleWait(t, time.Minute, "summaries both ways", func() bool { return sums(a, b) && sums(b, a) })

		put := time.Now()
		a.mu.Lock()
		_, ghost := membertest.NewCert(t, a.mem.user, "ghost", time.Now())
		isNew, err := a.mem.store.Apply(member.KindCert, ghost.Marshal(), time.Now())
		a.mu.Unlock()
		if !isNew || err != nil {
			t.Fatalf("ghost certificate at a: %v, %v", isNew, err)
		}
		key := member.RecordKey{Kind: member.KindCert, Node: ghost.Node}
		got := bubbleWait(t, 2*time.Minute, "the ghost's certificate at b", func() bool { return heldVersion(b, key) != 0 })
		if !sums(a, b) || !sums(b, a) {
			t.Fatal("a and b went back to full digests")
		}
		t.Logf("b holds the ghost's certificate after %v", got.Sub(put))
	})
}
