// Package wire holds the few byte-level facts that every glow package shares:
// node identities, the prefixes that tell glow's own packets apart from
// WireGuard and STUN on the one UDP socket, and a small bounds-checked codec
// for the binary records and messages built on top.
//
// It imports only the standard library so that every other package, leaf or
// not, may depend on it without cycles (see deps_test.go at the root).
//
// # Demultiplexing the shared socket
//
// One UDP socket carries four kinds of datagram. They are told apart by their
// first bytes, cheaply enough to run for every packet of a receive batch:
//
//	WireGuard   type 1..4, then three zero bytes
//	glow        'G' 'L' KIND VERSION   (KIND: 'C' control, 'B' beacon, 'R' relay,
//	                                    'J' a joiner's request for a member to pass on)
//	STUN        first two bits zero and the magic cookie 0x2112A442 at byte 4
//
// 'G' (0x47) has its top bits 01, so it never looks like STUN, and it is not a
// WireGuard message type.
package wire

import (
	"crypto/ed25519"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"strings"
)

// Version is the protocol version carried in byte 3 of every glow packet.
const Version = 1

// Kind is what a datagram on the shared socket is.
type Kind uint8

// Kinds of datagram, see the package doc.
const (
	KindUnknown Kind = iota
	KindWireGuard
	KindControl
	KindBeacon
	KindRelay
	KindSTUN
	KindJoin
)

// HeaderLen is the length of the 4-byte prefix of every glow packet.
const HeaderLen = 4

// Header returns the 4-byte prefix for a glow packet of kind k.
func Header(k Kind) [HeaderLen]byte {
	var c byte
	switch k {
	case KindControl:
		c = 'C'
	case KindBeacon:
		c = 'B'
	case KindRelay:
		c = 'R'
	case KindJoin:
		c = 'J'
	default:
		panic("wire: no header for kind")
	}
	return [HeaderLen]byte{'G', 'L', c, Version}
}

// Classify tells what kind of datagram b is. It never allocates.
func Classify(b []byte) Kind {
	if len(b) < 4 {
		return KindUnknown
	}
	switch {
	case b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0:
		return KindWireGuard
	case b[0] == 'G' && b[1] == 'L':
		if b[3] != Version {
			return KindUnknown
		}
		switch b[2] {
		case 'C':
			return KindControl
		case 'B':
			return KindBeacon
		case 'R':
			return KindRelay
		case 'J':
			return KindJoin
		}
		return KindUnknown
	case b[0]&0xC0 == 0 && len(b) >= 20 &&
		b[4] == 0x21 && b[5] == 0x12 && b[6] == 0xA4 && b[7] == 0x42:
		return KindSTUN
	}
	return KindUnknown
}

// NodeID names a node: its ed25519 public signing key.
type NodeID [32]byte

// String is the short form used in logs and status (first 8 bytes, hex).
func (id NodeID) String() string { return hex.EncodeToString(id[:8]) }

// Hex is the full form, used where the identity must round-trip (UAPI endpoints).
func (id NodeID) Hex() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is unset.
func (id NodeID) IsZero() bool { return id == NodeID{} }

// PublicKey returns id as an ed25519 key for signature checks.
func (id NodeID) PublicKey() ed25519.PublicKey { return ed25519.PublicKey(id[:]) }

// ParseNodeID parses the Hex form.
func ParseNodeID(s string) (NodeID, error) {
	var id NodeID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, errors.New("wire: node id must be 64 hex digits")
	}
	copy(id[:], b)
	return id, nil
}

// Key is a 32-byte Curve25519 public key (WireGuard or control sealing key).
type Key [32]byte

// String is the WireGuard-style hex form used in UAPI.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// B32 is lower-case unpadded base32, the alphabet of invite codes.
var B32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// EncodeB32 encodes b in lower-case unpadded base32.
func EncodeB32(b []byte) string { return strings.ToLower(B32.EncodeToString(b)) }

// DecodeB32 decodes lower- or upper-case unpadded base32.
func DecodeB32(s string) ([]byte, error) { return B32.DecodeString(strings.ToUpper(s)) }
