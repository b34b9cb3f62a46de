package overlay

import (
	"crypto/ecdh"
	"testing"

	"glow/internal/wire"
	"glow/overlay/member"
)

// TestPeerSharedKey: the control box key from our parsed X25519 key is the
// one box.Precompute gives (what the peer computes from its side), for
// real keys and for a low-order point (all zeros: box's key of zeros).
func TestPeerSharedKey(t *testing.T) {
	a, err := member.NewNodeKeys()
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{keys: a}
	if n.ctlECDH, err = ecdh.X25519().NewPrivateKey(a.Ctl[:]); err != nil {
		t.Fatal(err)
	}
	peers := []wire.Key{{}, {1}} // low-order points
	for range 8 {
		b, err := member.NewNodeKeys()
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, b.CtlPublic())
		if got, theirs := *n.peerSharedKey(b.CtlPublic()), *sharedKey(b.Ctl, n.keys.CtlPublic()); got != theirs {
			t.Fatalf("our key %x, the peer's %x", got, theirs)
		}
	}
	for _, p := range peers {
		if got, want := *n.peerSharedKey(p), *sharedKey(a.Ctl, p); got != want {
			t.Errorf("peer %x: key %x, box.Precompute's %x", p[:4], got, want)
		}
	}
}
