package wire

// Relay frames carry a datagram (a WireGuard packet, still encrypted end to
// end, or a sealed control packet) from one node to another through others:
//
//	'G' 'L' 'R' Version | hop limit (1) | reserved (3) | source (8) | destination (8) | datagram
//
// Source and destination are ShortIDs. The header has a fixed size so that
// relayed packets of one batch stay equal in size (UDP GSO), and the overlay
// MTU is lowered by exactly RelayHeaderLen.
//
// The header is not authenticated: a relay trusts a frame by the neighbour
// it came from (see package relay), and a sender starts every frame at
// DefaultHopLimit, so a frame that still has it has crossed no relay yet.

// RelayHeaderLen is the size of a relay frame's header.
const RelayHeaderLen = 24

// DefaultHopLimit is the hop limit a relay frame starts with.
const DefaultHopLimit = MaxHopLimit

// MaxHopLimit is the highest hop limit a frame may carry: relays refuse
// frames above it, so no sender buys itself a longer path.
const MaxHopLimit = 8

// ShortID is the first 8 bytes of a NodeID, enough to name a node in frames.
type ShortID [8]byte

// Short returns id's ShortID.
func (id NodeID) Short() ShortID {
	var s ShortID
	copy(s[:], id[:8])
	return s
}

// PutRelayHeader writes a relay header into b[:RelayHeaderLen].
func PutRelayHeader(b []byte, hops uint8, src, dst ShortID) {
	_ = b[RelayHeaderLen-1]
	b[0], b[1], b[2], b[3] = 'G', 'L', 'R', Version
	b[4], b[5], b[6], b[7] = hops, 0, 0, 0
	copy(b[8:16], src[:])
	copy(b[16:24], dst[:])
}

// ParseRelayHeader reads the header of a relay frame.
func ParseRelayHeader(b []byte) (hops uint8, src, dst ShortID, ok bool) {
	if len(b) < RelayHeaderLen || b[0] != 'G' || b[1] != 'L' || b[2] != 'R' || b[3] != Version {
		return 0, src, dst, false
	}
	copy(src[:], b[8:16])
	copy(dst[:], b[16:24])
	return b[4], src, dst, true
}
