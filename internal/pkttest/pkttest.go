// Package pkttest builds IP packets for tests: IPv4 and IPv6 carrying TCP,
// UDP, ICMP echo and ICMP errors that embed another packet, plus IPv4
// fragments and IPv6 packets with extension or fragment headers.
//
// Use it wherever a test needs a packet on the wire format a TUN device
// reads or writes:
//
//	src := netip.MustParseAddrPort("100.64.0.2:40000")
//	dst := netip.MustParseAddrPort("100.64.0.1:8080")
//	syn := pkttest.TCP(src, dst, pkttest.SYN, nil)
//	ping := pkttest.Echo(src.Addr(), dst.Addr(), false, 7, 1)
//	unreach := pkttest.Unreachable(dst.Addr(), src.Addr(), syn)
//	frags := pkttest.FragmentIPv4(pkttest.UDP(src, dst, make([]byte, 3000)), 1200, 42)
//
// The family (IPv4 or IPv6) follows the source address. Every builder returns
// a fresh slice the caller owns, with correct IPv4 header and transport
// checksums, so the packets are also acceptable to a real or userspace
// network stack. The package is stdlib-only and has no state; it panics on
// nonsensical arguments (mixed families, bad fragment sizes) because a test
// that asks for them is wrong.
package pkttest

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers used by the builders.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58

	// IPv6 extension header types accepted by InsertIPv6Ext.
	HopByHop = 0
	Routing  = 43
	Fragment = 44
	DestOpts = 60
)

// TCPFlags are the flag bits of a TCP header.
type TCPFlags uint8

// TCP flag bits.
const (
	FIN TCPFlags = 0x01
	SYN TCPFlags = 0x02
	RST TCPFlags = 0x04
	PSH TCPFlags = 0x08
	ACK TCPFlags = 0x10
)

// ICMP types used by the builders.
const (
	ICMPv4EchoReply       = 0
	ICMPv4Unreachable     = 3
	ICMPv4EchoRequest     = 8
	ICMPv4TimeExceeded    = 11
	ICMPv6Unreachable     = 1
	ICMPv6PacketTooBig    = 2
	ICMPv6TimeExceeded    = 3
	ICMPv6EchoRequest     = 128
	ICMPv6EchoReply       = 129
	icmpv4PortUnreachable = 3
	icmpv6PortUnreachable = 4
)

// IP wraps payload in an IPv4 or IPv6 header (chosen by src) with protocol
// proto. It does not touch the payload, so transport checksums are the
// caller's business; see TCP, UDP and Echo for complete packets.
func IP(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	checkFamilies(src, dst)
	if src.Is4() {
		b := make([]byte, 20+len(payload))
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(b[4:], 1) // identification
		b[8] = 64
		b[9] = proto
		s, d := src.As4(), dst.As4()
		copy(b[12:16], s[:])
		copy(b[16:20], d[:])
		binary.BigEndian.PutUint16(b[10:], Checksum(b[:20], 0))
		copy(b[20:], payload)
		return b
	}
	b := make([]byte, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = proto
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	copy(b[40:], payload)
	return b
}

// TCP builds a TCP segment with the given flags and payload.
func TCP(src, dst netip.AddrPort, flags TCPFlags, payload []byte) []byte {
	t := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], 1000) // seq
	if flags&ACK != 0 {
		binary.BigEndian.PutUint32(t[8:], 2000)
	}
	t[12] = 5 << 4
	t[13] = uint8(flags)
	binary.BigEndian.PutUint16(t[14:], 65535)
	copy(t[20:], payload)
	binary.BigEndian.PutUint16(t[16:], transportChecksum(src.Addr(), dst.Addr(), ProtoTCP, t))
	return IP(src.Addr(), dst.Addr(), ProtoTCP, t)
}

// UDP builds a UDP datagram.
func UDP(src, dst netip.AddrPort, payload []byte) []byte {
	u := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	c := transportChecksum(src.Addr(), dst.Addr(), ProtoUDP, u)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return IP(src.Addr(), dst.Addr(), ProtoUDP, u)
}

// Echo builds an ICMP (IPv4) or ICMPv6 echo request, or an echo reply when
// reply is set.
func Echo(src, dst netip.Addr, reply bool, id, seq uint16) []byte {
	typ := uint8(ICMPv4EchoRequest)
	switch {
	case src.Is4() && reply:
		typ = ICMPv4EchoReply
	case !src.Is4() && reply:
		typ = ICMPv6EchoReply
	case !src.Is4():
		typ = ICMPv6EchoRequest
	}
	var rest [4]byte
	binary.BigEndian.PutUint16(rest[0:], id)
	binary.BigEndian.PutUint16(rest[2:], seq)
	return ICMP(src, dst, typ, 0, rest, []byte("pkttest"))
}

// ICMP builds an ICMP or ICMPv6 message (family from src) with the given
// type, code, the four bytes after the checksum, and a body.
func ICMP(src, dst netip.Addr, typ, code uint8, rest [4]byte, body []byte) []byte {
	m := make([]byte, 8+len(body))
	m[0], m[1] = typ, code
	copy(m[4:8], rest[:])
	copy(m[8:], body)
	if src.Is4() {
		binary.BigEndian.PutUint16(m[2:], Checksum(m, 0))
		return IP(src, dst, ProtoICMP, m)
	}
	binary.BigEndian.PutUint16(m[2:], transportChecksum(src, dst, ProtoICMPv6, m))
	return IP(src, dst, ProtoICMPv6, m)
}

// Unreachable builds a port-unreachable error from src to dst that embeds
// orig, the packet that provoked it (normally sent by dst). The embedded
// packet is cut to what RFC 792 and RFC 4443 require to be quoted at most.
func Unreachable(src, dst netip.Addr, orig []byte) []byte {
	if src.Is4() {
		return ICMPError(src, dst, ICMPv4Unreachable, icmpv4PortUnreachable, orig)
	}
	return ICMPError(src, dst, ICMPv6Unreachable, icmpv6PortUnreachable, orig)
}

// ICMPError builds an ICMP error message of type typ and code that embeds
// orig (truncated to 548 bytes for IPv4 and 1232 for IPv6).
func ICMPError(src, dst netip.Addr, typ, code uint8, orig []byte) []byte {
	limit := 548
	if !src.Is4() {
		limit = 1232
	}
	if len(orig) > limit {
		orig = orig[:limit]
	}
	return ICMP(src, dst, typ, code, [4]byte{}, orig)
}

// FragmentIPv4 splits an IPv4 packet into fragments whose payloads are at
// most size bytes (size is rounded down to a multiple of 8), all carrying
// identification id. A packet that fits is still returned as one fragment
// with its id set and no flags, i.e. not fragmented.
func FragmentIPv4(pkt []byte, size int, id uint16) [][]byte {
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	hdr, payload := pkt[:ihl], pkt[ihl:total]
	size &^= 7
	if size <= 0 {
		panic("pkttest: fragment size below 8")
	}
	var out [][]byte
	for off := 0; off < len(payload) || off == 0; off += size {
		end := min(off+size, len(payload))
		f := make([]byte, ihl+end-off)
		copy(f, hdr)
		copy(f[ihl:], payload[off:end])
		binary.BigEndian.PutUint16(f[2:], uint16(len(f)))
		binary.BigEndian.PutUint16(f[4:], id)
		fo := uint16(off / 8)
		if end < len(payload) {
			fo |= 0x2000 // more fragments
		}
		binary.BigEndian.PutUint16(f[6:], fo)
		f[10], f[11] = 0, 0
		binary.BigEndian.PutUint16(f[10:], Checksum(f[:ihl], 0))
		out = append(out, f)
		if end == len(payload) {
			break
		}
	}
	return out
}

// FragmentIPv6 splits an IPv6 packet (without extension headers) into
// fragments whose fragmentable parts are at most size bytes (rounded down to
// a multiple of 8), each with a fragment header carrying id.
func FragmentIPv6(pkt []byte, size int, id uint32) [][]byte {
	nh := pkt[6]
	payload := pkt[40 : 40+int(binary.BigEndian.Uint16(pkt[4:]))]
	size &^= 7
	if size <= 0 {
		panic("pkttest: fragment size below 8")
	}
	var out [][]byte
	for off := 0; ; off += size {
		end := min(off+size, len(payload))
		f := make([]byte, 48+end-off)
		copy(f, pkt[:40])
		f[6] = Fragment
		binary.BigEndian.PutUint16(f[4:], uint16(8+end-off))
		f[40] = nh
		fo := uint16(off/8) << 3
		if end < len(payload) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(f[42:], fo)
		binary.BigEndian.PutUint32(f[44:], id)
		copy(f[48:], payload[off:end])
		out = append(out, f)
		if end == len(payload) {
			break
		}
	}
	return out
}

// InsertIPv6Ext returns a copy of the IPv6 packet pkt with an empty 8-byte
// extension header of type typ (HopByHop, Routing or DestOpts) placed
// directly after the fixed header.
func InsertIPv6Ext(pkt []byte, typ uint8) []byte {
	out := make([]byte, len(pkt)+8)
	copy(out, pkt[:40])
	out[40] = pkt[6] // the new header's next header is the old first one
	out[41] = 0      // length in 8-byte units, not counting the first 8
	if typ == Routing {
		out[42] = 4 // segment routing type with segments left 0
	} else {
		out[42] = 1 // PadN option of 4 bytes
		out[43] = 4
	}
	copy(out[48:], pkt[40:])
	out[6] = typ
	binary.BigEndian.PutUint16(out[4:], binary.BigEndian.Uint16(pkt[4:])+8)
	return out
}

// Checksum returns the Internet checksum (RFC 1071) of b, starting from the
// partial sum initial.
func Checksum(b []byte, initial uint32) uint16 {
	s := initial
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func transportChecksum(src, dst netip.Addr, proto uint8, seg []byte) uint16 {
	checkFamilies(src, dst)
	var s uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		add(a[:])
		add(b[:])
	} else {
		a, b := src.As16(), dst.As16()
		add(a[:])
		add(b[:])
	}
	s += uint32(proto) + uint32(len(seg))
	return Checksum(seg, s)
}

func checkFamilies(src, dst netip.Addr) {
	if src.Is4() != dst.Is4() || !src.IsValid() || !dst.IsValid() {
		panic("pkttest: source and destination must be valid addresses of one family")
	}
}
