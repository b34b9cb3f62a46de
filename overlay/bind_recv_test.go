package overlay

import (
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/conn"

	"glow/internal/wire"
	"glow/relay"
)

// FuzzRelayDemux feeds one datagram from a chosen sender through the
// receive path (rx.handle, the demux of relay frames included): nothing
// panics, and a frame is forwarded or handed to wireguard-go only within
// the relay rules (issue 11, item 2). The node knows a and d of its user
// (a and d direct), f1 and f2 of a friend (f1 direct); a datagram comes
// from a's address, f1's, or one no peer has.
func FuzzRelayDemux(f *testing.F) {
	bind, inner, self := benchBind(f)
	a, d, f1, f2 := randomNodeID(f), randomNodeID(f), randomNodeID(f), randomNodeID(f)
	addrOf := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:47470"),   // a
		netip.MustParseAddrPort("192.0.2.3:47470"),   // f1
		netip.MustParseAddrPort("198.51.100.9:4000"), // nobody
	}
	nodeAt := []wire.NodeID{a, f1, {}}
	for _, id := range []wire.NodeID{a, d, f1, f2} {
		bind.Peer(id) // added, as the node adds its peers
	}
	for i, id := range nodeAt[:2] {
		if err := bind.SetDirect(id, addrOf[i]); err != nil {
			f.Fatal(err)
		}
	}
	if err := bind.SetDirect(d, netip.MustParseAddrPort("192.0.2.2:47470")); err != nil {
		f.Fatal(err)
	}
	members := relay.Members{a.Short(): relay.Own, d.Short(): relay.Own, f1.Short(): relay.Friend, f2.Short(): relay.Friend}
	bind.fwd.SetMembers(self.Short(), members)

	frame := func(hops uint8, src, dst wire.NodeID, inner ...byte) []byte {
		b := make([]byte, wire.RelayHeaderLen, wire.RelayHeaderLen+len(inner))
		wire.PutRelayHeader(b, hops, src.Short(), dst.Short())
		return append(b, inner...)
	}
	f.Add(byte(0), frame(8, a, d, 4, 0, 0, 0, 1, 2))
	f.Add(byte(0), frame(8, a, self, 4, 0, 0, 0, 1, 2))
	f.Add(byte(0), frame(7, f2, d, 'G', 'L', 'C', 1))
	f.Add(byte(1), frame(7, f2, self, 1, 0, 0, 0))
	f.Add(byte(1), frame(8, a, d, 4, 0, 0, 0))
	f.Add(byte(2), frame(8, a, d, 4, 0, 0, 0))
	f.Add(byte(0), frame(200, a, d))
	f.Add(byte(0), []byte{'G', 'L', 'R', 1, 8})
	f.Add(byte(2), []byte{4, 0, 0, 0, 9})

	buf := make([]byte, 1<<16)
	f.Fuzz(func(t *testing.T, sender byte, pkt []byte) {
		if len(pkt) == 0 || len(pkt) > len(buf) {
			return
		}
		s := int(sender) % len(addrOf)
		from := &conn.StdNetEndpoint{AddrPort: addrOf[s]}
		recv := bind.makeReceive(func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			bind.in.done(int(bind.in.n.Load()))
			sizes[0] = copy(bufs[0], pkt)
			eps[0] = from
			return 1, nil
		})
		bufs, sizes, eps := [][]byte{buf}, []int{0}, []conn.Endpoint{nil}
		sent := inner.pkts.Load()
		if _, err := recv(bufs, sizes, eps); err != nil {
			t.Fatal(err)
		}
		forwarded := inner.pkts.Load() != sent
		toWG := sizes[0] > 0
		if wire.Classify(pkt) != wire.KindRelay {
			if forwarded {
				t.Fatalf("forwarded a datagram that is no relay frame")
			}
			return
		}
		if !forwarded && !toWG {
			return
		}
		if s == 2 {
			t.Fatalf("took a relay frame from an address of no peer (forwarded %v)", forwarded)
		}
		hops, src, dst, ok := wire.ParseRelayHeader(pkt)
		nb := nodeAt[s].Short()
		switch {
		case !ok:
			t.Fatal("took a frame shorter than its header")
		case hops == 0 || hops > wire.MaxHopLimit:
			t.Fatalf("took a frame with hop limit %d", hops)
		case src == self.Short():
			t.Fatal("took a frame naming this node as its source")
		case nb != src && hops == wire.MaxHopLimit:
			t.Fatal("took a first-hop frame from a neighbour that is not its source")
		case members[nb] == relay.Friend && members[src] != relay.Friend:
			t.Fatal("took a frame of our user's node from a friend's node")
		case forwarded && (dst == self.Short() || members[dst] != relay.Own && members[src] != relay.Own):
			t.Fatalf("forwarded %x -> %x", src, dst)
		case forwarded && buf[4] != hops-1:
			t.Fatalf("forwarded with hop limit %d (was %d)", buf[4], hops)
		case toWG && (dst != self.Short() || wire.Classify(buf[:sizes[0]]) != wire.KindWireGuard):
			t.Fatal("handed wireguard-go something other than a WireGuard packet for this node")
		}
	})
}
