package overlay

import (
	"net/netip"
	"testing"

	"glow/internal/wire"
	"glow/link"
)

// TestBindNoZombieEndpoints: only adding a peer makes its endpoint. A call
// that arrives for a peer already removed (or never added), such as a path
// set after a removal or a renewal request to an admin that is no peer,
// must not bring an endpoint back: it would hold a path, an address and a
// short id for a node glow no longer knows.
func TestBindNoZombieEndpoints(t *testing.T) {
	b, _, _ := benchBind(t)
	gone, via, never := randomNodeID(t), randomNodeID(t), randomNodeID(t)
	addr := netip.MustParseAddrPort("127.0.0.1:41641")
	b.Peer(gone)
	b.Peer(via)
	if err := b.SetDirect(via, netip.MustParseAddrPort("127.0.0.2:41641")); err != nil {
		t.Fatal(err)
	}
	b.RemovePeer(gone)

	for _, id := range []wire.NodeID{gone, never} {
		if err := b.SetDirect(id, addr); err == nil {
			t.Errorf("SetDirect for an unknown peer: no error")
		}
		if err := b.SetRelay(id, via); err == nil {
			t.Errorf("SetRelay for an unknown peer: no error")
		}
		b.SetStream(id, &link.Stream{}, make(chan []byte, 1))
		b.ClearPath(id)
		b.Learn(id, addr)
		if err := b.SendToPeer([]byte{1, 2, 3}, id); err == nil {
			t.Errorf("SendToPeer for an unknown peer: no error")
		}
		// WireGuard may apply a configuration queued before the removal.
		if ep, err := b.ParseEndpoint(id.Hex()); err != nil || ep.(*Endpoint).path.Load() != nil {
			t.Errorf("ParseEndpoint for an unknown peer: %v", err)
		}
		b.mu.Lock()
		_, held := b.peers[id]
		byAddr := b.addrs[addr]
		b.mu.Unlock()
		if held || (*b.byShort.Load())[id.Short()] != nil || byAddr != nil {
			t.Errorf("%v: an endpoint came back (peers %v, short id %v, address %v)", id.Short(), held, (*b.byShort.Load())[id.Short()] != nil, byAddr != nil)
		}
	}
	if _, held := b.peers[via]; !held {
		t.Error("the live peer was removed")
	}
}
