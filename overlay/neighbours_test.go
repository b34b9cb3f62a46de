package overlay

import (
	"net/netip"
	"testing"

	"glow/internal/wire"
	"glow/overlay/member"
)

// checkNeighbours fails unless pathState.nbrs holds exactly the peers a
// full scan finds with a neighbour path (what floodLocked once walked all
// peers for). The caller holds n.mu.
func checkNeighbours(t *testing.T, n *Node, step string) {
	t.Helper()
	want := 0
	for id, p := range n.paths.peers {
		if p.path().neighbour() {
			want++
			if n.paths.nbrs[id] != p {
				t.Errorf("%s: %s has a %v path but is not in the neighbour index", step, p.cert.Name, p.path().kind)
			}
		}
	}
	for id, p := range n.paths.nbrs {
		if n.paths.peers[id] != p {
			t.Errorf("%s: the neighbour index holds %s, which is not (or no longer) the peer of its node", step, p.cert.Name)
		} else if !p.path().neighbour() {
			t.Errorf("%s: the neighbour index holds %s, whose path is %v", step, p.cert.Name, p.path().kind)
		}
	}
	if len(n.paths.nbrs) != want {
		t.Errorf("%s: %d peers in the neighbour index, %d by a full scan", step, len(n.paths.nbrs), want)
	}
}

// TestNeighbourIndex: the neighbour index follows every change of a peer's
// path (a pong's direct path, a stream link attached and detached, a
// direct path lost, a relay route, a peer removed, replaced or revoked)
// and so matches a full scan of the peers after each.
func TestNeighbourIndex(t *testing.T) {
	r := newClockRig(t, "b", "c", "d", "e", "f")
	n := r.n
	check := func(step string) {
		t.Helper()
		r.locked(func() { checkNeighbours(t, n, step) })
	}
	addr := func(i byte) netip.AddrPort { return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, i}), 4000) }
	check("start")

	r.direct("b", addr(2))
	r.direct("d", addr(4))
	r.direct("e", addr(5))
	check("direct paths to b, d, e")
	sc, _ := r.streamTo("c")
	sd, _ := r.streamTo("d")
	check("stream links to c and d")

	r.publishInfo("b", "a", "f")
	r.publishInfo("f", "b")
	r.locked(func() { n.computeRoutesLocked(r.now) })
	r.locked(func() {
		if k := r.peer("f").path().kind; k != pathRelay {
			t.Fatalf("f's path is %v, want relay via b", k)
		}
	})
	check("f relayed via b")

	r.locked(func() {
		n.lostPathLocked(r.peer("d"), r.now) // its stream link carries on
		n.lostPathLocked(r.peer("b"), r.now) // none left: f has no route either
	})
	check("direct paths to b and d lost")
	r.locked(func() { n.detachStreamLocked(r.peer("d"), sd, r.now) })
	check("d's stream link detached")

	// A peer removed, then its node added again (a new peer): the old
	// peer's stream reader detaching late leaves the new one alone.
	oldC := r.peers["c"].cert
	var gone *peer
	r.locked(func() {
		gone = r.peer("c")
		n.removePeerLocked(oldC.Node)
	})
	check("c removed")
	r.locked(func() { n.addPeerLocked(oldC, r.now) })
	r.direct("c", addr(3))
	r.locked(func() { n.detachStreamLocked(gone, sc, r.now) })
	check("c added again with a direct path, its old stream detached")
	r.locked(func() {
		if n.paths.nbrs[oldC.Node] != r.peer("c") {
			t.Errorf("the old peer's detach took the new peer of c out of the index")
		}
	})

	// e revoked: the list arrives from neighbour c, as gossip brings it.
	d := &member.UserDoc{Kind: member.KindRevoked, Version: 1, Body: member.FormatRevoked([]wire.NodeID{r.peers["e"].cert.Node})}
	if err := member.SignUserDoc(r.user, d); err != nil {
		t.Fatal(err)
	}
	r.locked(func() { n.handleRecordsLocked(r.peer("c"), []recordMsg{{member.KindRevoked, d.Marshal()}}, r.now) })
	r.locked(func() {
		if n.paths.peers[r.peers["e"].cert.Node] != nil {
			t.Fatal("e is still a peer after its revocation")
		}
	})
	check("e revoked")
}
