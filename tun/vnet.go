package tun

// The virtio-net header a Linux TUN device opened with IFF_VNET_HDR puts
// before every packet, and the two offloads it makes possible:
//
//   - read side (the kernel hands glow TCP or UDP "super-packets" of up to
//     64 KiB, one header for all): gsoSplit cuts one into the MTU-sized
//     segments WireGuard encrypts, with the headers and checksums each needs;
//   - write side (glow hands the kernel what WireGuard decrypted): groTable
//     merges consecutive segments of one TCP or UDP flow back into a
//     super-packet, so the kernel's stack sees one packet where the peer's
//     sent dozens.
//
// wireguard-go does the same inside its NativeTun (tun/offload_linux.go),
// unexported; glow's rawTUN (rawtun_linux.go) needs it around its own system
// calls. The rules are the kernel's: segmentation as tcp_gso_segment and
// __udp_gso_segment do it, merging only what the kernel's GRO would merge
// (tools/testing/selftests/net/gro.c), packets whose checksums are wrong
// left alone for the kernel to drop.
//
// Everything here is pure: bytes in, bytes out, no system calls.

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"slices"
)

// vnetHdrLen is the size of struct virtio_net_hdr (no num_buffers: TUN
// does not use the mergeable-buffers layout).
const vnetHdrLen = 10

// virtio_net_hdr flags and GSO types (linux/virtio_net.h).
const (
	vnetFlagNeedsCsum = 1 // the checksum at csumStart+csumOffset is to be completed

	gsoNone   = 0
	gsoTCPv4  = 1
	gsoTCPv6  = 4
	gsoUDPL4  = 5
	gsoECNBit = 0x80
)

// vnetHdr is struct virtio_net_hdr. Its 16-bit fields are in the host's
// byte order (a TUN device's legacy virtio header).
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	_ = b[vnetHdrLen-1]
	h.flags, h.gsoType = b[0], b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h *vnetHdr) encode(b []byte) {
	_ = b[vnetHdrLen-1]
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// IP and transport header facts.
const (
	protoTCP = 6
	protoUDP = 17

	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpCWR = 0x80

	tcpCsumOffset = 16
	udpCsumOffset = 6
	udpHdrLen     = 8

	maxPacket = 65535
)

// Internet checksums (RFC 1071). Sums are kept as folded 16-bit values in
// network byte order; the loop adds the data as host-order 64-bit words,
// which gives the same ones' complement sum, byte-swapped on a
// little-endian host (RFC 1071 §2(B)).

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// csum adds b to the ones' complement sum initial and returns the folded
// sum (not complemented).
func csum(b []byte, initial uint16) uint16 {
	var ac, carry uint64
	if littleEndian {
		ac = uint64(bits.ReverseBytes16(initial))
	} else {
		ac = uint64(initial)
	}
	for len(b) >= 32 {
		ac, carry = bits.Add64(ac, binary.NativeEndian.Uint64(b[0:]), 0)
		ac, carry = bits.Add64(ac, binary.NativeEndian.Uint64(b[8:]), carry)
		ac, carry = bits.Add64(ac, binary.NativeEndian.Uint64(b[16:]), carry)
		ac, carry = bits.Add64(ac, binary.NativeEndian.Uint64(b[24:]), carry)
		ac += carry
		b = b[32:]
	}
	for len(b) >= 8 {
		ac, carry = bits.Add64(ac, binary.NativeEndian.Uint64(b), 0)
		ac += carry
		b = b[8:]
	}
	if len(b) >= 4 {
		ac, carry = bits.Add64(ac, uint64(binary.NativeEndian.Uint32(b)), 0)
		ac += carry
		b = b[4:]
	}
	if len(b) >= 2 {
		ac, carry = bits.Add64(ac, uint64(binary.NativeEndian.Uint16(b)), 0)
		ac += carry
		b = b[2:]
	}
	if len(b) == 1 {
		// The last byte is the high half of a 16-bit word padded with zero.
		last := uint64(b[0])
		if !littleEndian {
			last <<= 8
		}
		ac, carry = bits.Add64(ac, last, 0)
		ac += carry
	}
	// Fold 64 -> 16 bits; each step's carry is added back in.
	ac = (ac >> 32) + (ac & 0xffffffff)
	ac = (ac >> 32) + (ac & 0xffffffff)
	ac = (ac >> 16) + (ac & 0xffff)
	ac = (ac >> 16) + (ac & 0xffff)
	s := uint16(ac)
	if littleEndian {
		s = bits.ReverseBytes16(s)
	}
	return s
}

// csumAdd16 is the ones' complement sum of a and b.
func csumAdd16(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s + s>>16)
}

// pseudoSum is the sum of the TCP/UDP pseudo-header of pkt (an IPv4 or
// IPv6 packet: its addresses), for protocol proto and transport length n.
func pseudoSum(pkt []byte, v6 bool, proto uint8, n int) uint16 {
	var s uint16
	if v6 {
		s = csum(pkt[8:40], 0)
	} else {
		s = csum(pkt[12:20], 0)
	}
	return csumAdd16(csumAdd16(s, uint16(proto)), uint16(n))
}

// errBadGSO is a super-packet gsoSplit cannot cut (the kernel never makes
// one; the read is dropped and counted).
var errBadGSO = errors.New("tun: malformed GSO packet")

// errTooManySegments: a super-packet with more segments than buffers.
var errTooManySegments = errors.New("tun: GSO packet has more segments than buffers")

// completeCsum finishes a checksum the kernel left partial
// (VIRTIO_NET_HDR_F_NEEDS_CSUM without GSO): the field holds the
// pseudo-header sum, to which the sum of everything from start on is added.
func completeCsum(pkt []byte, start, off uint16) bool {
	at := int(start) + int(off)
	if int(start) > len(pkt) || at+2 > len(pkt) {
		return false
	}
	initial := binary.BigEndian.Uint16(pkt[at:])
	pkt[at], pkt[at+1] = 0, 0
	binary.BigEndian.PutUint16(pkt[at:], ^csum(pkt[start:], initial))
	return true
}

// gsoSplit cuts the super-packet pkt, described by h (a TCP or UDP GSO
// type), into segments of at most h.gsoSize payload bytes, writing segment
// i at out[i][offset:] and its length in sizes[i], and returns how many
// there are. Every segment gets the headers of pkt with its own lengths,
// IPv4 ID (the first's plus i), TCP sequence number (FIN and PSH only on the
// last segment, CWR only on the first) and complete checksums. h.hdrLen is
// not trusted (the kernel may set it to the whole linear part): the header
// length is read from the transport header at h.csumStart.
func gsoSplit(pkt []byte, h vnetHdr, out [][]byte, sizes []int, offset int) (int, error) {
	if len(pkt) < 20 || h.gsoSize == 0 {
		return 0, errBadGSO
	}
	v6 := pkt[0]>>4 == 6
	h.gsoType &^= gsoECNBit // ECN: CWR only on the first segment, as done below
	switch {
	case pkt[0]>>4 == 4 && (h.gsoType == gsoTCPv4 || h.gsoType == gsoUDPL4):
	case v6 && (h.gsoType == gsoTCPv6 || h.gsoType == gsoUDPL4):
	default:
		return 0, errBadGSO
	}
	l4 := int(h.csumStart) // where the transport header starts
	ipHdrLen := 40
	if !v6 {
		ipHdrLen = int(pkt[0]&0xf) * 4
	}
	if ipHdrLen < 20 || l4 < ipHdrLen || l4+udpHdrLen > len(pkt) {
		return 0, errBadGSO
	}
	tcp := h.gsoType != gsoUDPL4
	var proto uint8 = protoUDP
	csumAt := l4 + udpCsumOffset
	hdrLen := l4 + udpHdrLen
	if tcp {
		if l4+20 > len(pkt) {
			return 0, errBadGSO
		}
		proto = protoTCP
		csumAt = l4 + tcpCsumOffset
		hdrLen = l4 + int(pkt[l4+12]>>4)*4
		if hdrLen < l4+20 {
			return 0, errBadGSO
		}
	}
	if hdrLen > len(pkt) || int(h.csumStart)+int(h.csumOffset) != csumAt {
		return 0, errBadGSO
	}
	payload := len(pkt) - hdrLen
	seg := int(h.gsoSize)
	n := (payload + seg - 1) / seg
	if payload == 0 {
		n = 1
	}
	if n > len(out) || n > len(sizes) {
		return 0, errTooManySegments
	}
	var seq uint32
	var id uint16
	if tcp {
		seq = binary.BigEndian.Uint32(pkt[l4+4:])
	}
	if !v6 {
		id = binary.BigEndian.Uint16(pkt[4:])
	}
	for i := range n {
		start := hdrLen + i*seg
		end := min(start+seg, len(pkt))
		total := hdrLen + end - start
		o := out[i][offset:]
		if len(o) < total {
			return 0, errTooManySegments
		}
		o = o[:total]
		copy(o, pkt[:hdrLen])
		copy(o[hdrLen:], pkt[start:end])
		if v6 {
			binary.BigEndian.PutUint16(o[4:], uint16(total-40))
		} else {
			binary.BigEndian.PutUint16(o[2:], uint16(total))
			binary.BigEndian.PutUint16(o[4:], id+uint16(i))
			o[10], o[11] = 0, 0
			binary.BigEndian.PutUint16(o[10:], ^csum(o[:ipHdrLen], 0))
		}
		if tcp {
			binary.BigEndian.PutUint32(o[l4+4:], seq+uint32(i*seg))
			if i < n-1 {
				o[l4+13] &^= tcpFIN | tcpPSH
			}
			if i > 0 {
				o[l4+13] &^= tcpCWR
			}
		} else {
			binary.BigEndian.PutUint16(o[l4+4:], uint16(total-l4))
		}
		o[csumAt], o[csumAt+1] = 0, 0
		s := csum(o[l4:], pseudoSum(o, v6, proto, total-l4))
		c := ^s
		if !tcp && c == 0 {
			c = 0xffff // UDP sends a computed zero as all ones
		}
		binary.BigEndian.PutUint16(o[csumAt:], c)
		sizes[i] = total
	}
	return n, nil
}

// groTable merges, within one batch of packets to be written, consecutive
// segments of a TCP flow (and, with UDP GSO, equal-sized datagrams of a
// UDP flow) into super-packets. A zero groTable is ready; reset between
// batches is done by coalesce itself. Not safe for concurrent use.
type groTable struct {
	flows map[flowKey]int // flow -> index in items of its latest item
	items []groItem
	kind  []uint8 // per packet of the batch: 0 written as is, 1 item head, 2 merged away
}

// flowKey names a TCP or UDP flow.
type flowKey struct {
	src, dst     [16]byte
	sport, dport uint16
	proto        uint8
	v6           bool
}

// groItem is a packet of the batch that others may be appended to.
type groItem struct {
	idx      int    // in the batch
	l4       int    // transport header offset (the IP header's length)
	hdrLen   int    // l4 + transport header length
	gsoSize  int    // payload length of the first segment
	segs     int    // segments in it so far
	nextSeq  uint32 // TCP: the sequence number the next segment must carry
	short    bool   // its last segment was shorter than gsoSize: nothing may follow
	psh      bool   // TCP: its last segment had PSH: nothing may follow
	udp      bool
	v6       bool
	firstHdr []byte // first packet's headers, for the field comparisons
}

// groCandidate classifies p (an IP packet) for merging: it returns its
// flow, the transport header's offset, the length of all its headers, and
// whether it may be merged at all. A candidate has exact IP lengths, no
// IPv4 options and no fragmentation, no IPv6 extension headers, TCP flags
// ACK or ACK|PSH only (UDP only withUDP), and a non-empty payload whose
// checksum is right.
func groCandidate(p []byte, withUDP bool) (key flowKey, l4, hdrLen int, ok bool) {
	if len(p) < 20 || len(p) > maxPacket {
		return key, 0, 0, false
	}
	switch p[0] >> 4 {
	case 4:
		l4 = 20 // the kernel's GRO takes no IPv4 options either
		if p[0] != 0x45 || int(binary.BigEndian.Uint16(p[2:])) != len(p) ||
			binary.BigEndian.Uint16(p[6:])&0x3fff != 0 { // MF or a fragment offset
			return key, 0, 0, false
		}
		key.proto = p[9]
		copy(key.src[:], p[12:16])
		copy(key.dst[:], p[16:20])
	case 6:
		l4 = 40
		if len(p) < 40 || int(binary.BigEndian.Uint16(p[4:])) != len(p)-40 {
			return key, 0, 0, false
		}
		key.proto, key.v6 = p[6], true
		copy(key.src[:], p[8:24])
		copy(key.dst[:], p[24:40])
	default:
		return key, 0, 0, false
	}
	switch key.proto {
	case protoTCP:
		if l4+20 > len(p) {
			return key, 0, 0, false
		}
		hdrLen = l4 + int(p[l4+12]>>4)*4
		if hdrLen < l4+20 || hdrLen >= len(p) {
			return key, 0, 0, false // bad header, or no payload
		}
		if f := p[l4+13]; f != tcpACK && f != tcpACK|tcpPSH {
			return key, 0, 0, false
		}
	case protoUDP:
		hdrLen = l4 + udpHdrLen
		if !withUDP || hdrLen >= len(p) || int(binary.BigEndian.Uint16(p[l4+4:])) != len(p)-l4 {
			return key, 0, 0, false
		}
	default:
		return key, 0, 0, false
	}
	key.sport = binary.BigEndian.Uint16(p[l4:])
	key.dport = binary.BigEndian.Uint16(p[l4+2:])
	if csum(p[l4:], pseudoSum(p, key.v6, key.proto, len(p)-l4)) != 0xffff {
		return key, 0, 0, false // a wrong checksum: the kernel drops it, glow does not merge it
	}
	return key, l4, hdrLen, true
}

// sameHeaders reports whether p may join the item whose first packet's
// headers are a: the IP fields the kernel's GRO compares (IPv4 TOS, DF,
// TTL; IPv6 traffic class, hop limit) and, for TCP, the header length and
// options.
func sameHeaders(p []byte, it *groItem, hdrLen int) bool {
	a := it.firstHdr
	if hdrLen != it.hdrLen {
		return false
	}
	if it.v6 {
		if p[0] != a[0] || p[1]>>4 != a[1]>>4 || p[7] != a[7] {
			return false
		}
	} else if p[1] != a[1] || p[6]>>5 != a[6]>>5 || p[8] != a[8] {
		return false
	}
	if !it.udp && hdrLen > it.l4+20 && string(p[it.l4+20:hdrLen]) != string(a[it.l4+20:hdrLen]) {
		return false // different TCP options (timestamps differ from one millisecond to the next)
	}
	return true
}

// coalesce merges what it can of bufs (each packet at bufs[i][offset:],
// with vnetHdrLen bytes free before it) and writes every packet's virtio
// header. It appends to toWrite the indexes of the packets to write (in
// order) and returns it; merged packets' payloads were appended to their
// item's buffer (bufs[item] is extended within its capacity).
func (g *groTable) coalesce(bufs [][]byte, offset int, withUDP bool, toWrite []int) []int {
	if g.flows == nil {
		g.flows = make(map[flowKey]int)
	}
	clear(g.flows)
	g.items = g.items[:0]
	g.kind = slices.Grow(g.kind[:0], len(bufs))[:len(bufs)]
	clear(g.kind)
	for i := range bufs {
		p := bufs[i][offset:]
		key, l4, hdrLen, ok := groCandidate(p, withUDP)
		if !ok {
			continue
		}
		if j, found := g.flows[key]; found && g.tryAppend(bufs, offset, &g.items[j], p, hdrLen) {
			g.kind[i] = 2
			continue
		}
		it := groItem{idx: i, l4: l4, hdrLen: hdrLen, gsoSize: len(p) - hdrLen, segs: 1,
			udp: key.proto == protoUDP, v6: key.v6, firstHdr: p[:hdrLen:hdrLen]}
		if !it.udp {
			it.nextSeq = binary.BigEndian.Uint32(p[l4+4:]) + uint32(it.gsoSize)
			it.psh = p[l4+13]&tcpPSH != 0
		}
		g.flows[key] = len(g.items)
		g.items = append(g.items, it)
		g.kind[i] = 1
	}
	var zero vnetHdr
	for i, k := range g.kind {
		if k != 2 {
			zero.encode(bufs[i][offset-vnetHdrLen:])
			toWrite = append(toWrite, i)
		}
	}
	for k := range g.items {
		if it := &g.items[k]; it.segs > 1 {
			g.finish(bufs[it.idx][offset-vnetHdrLen:], it)
		}
	}
	return toWrite
}

// tryAppend appends p's payload to item it if p continues it.
func (g *groTable) tryAppend(bufs [][]byte, offset int, it *groItem, p []byte, hdrLen int) bool {
	if it.short || it.psh || !sameHeaders(p, it, hdrLen) {
		return false
	}
	n := len(p) - hdrLen
	if n > it.gsoSize {
		return false
	}
	head := bufs[it.idx]
	if len(head)+n > cap(head) || len(head)-offset+n > maxPacket {
		return false
	}
	if !it.udp {
		if binary.BigEndian.Uint32(p[it.l4+4:]) != it.nextSeq {
			return false
		}
		it.nextSeq += uint32(n)
		if p[it.l4+13]&tcpPSH != 0 {
			it.psh = true
			head[offset+it.l4+13] |= tcpPSH
		}
	} else if it.segs >= 64 { // UDP_MAX_SEGMENTS
		return false
	}
	bufs[it.idx] = append(head, p[hdrLen:]...)
	it.segs++
	it.short = n < it.gsoSize
	return true
}

// finish turns a merged item into a super-packet: IP lengths (and IPv4
// header checksum), UDP length, the pseudo-header sum in the transport
// checksum (the kernel completes it: NEEDS_CSUM) and the virtio header
// (b[:vnetHdrLen], the packet after it).
func (g *groTable) finish(b []byte, it *groItem) {
	p := b[vnetHdrLen:]
	h := vnetHdr{flags: vnetFlagNeedsCsum, hdrLen: uint16(it.hdrLen), gsoSize: uint16(it.gsoSize),
		csumStart: uint16(it.l4)}
	if it.v6 {
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
	} else {
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^csum(p[:it.l4], 0))
	}
	proto := uint8(protoTCP)
	switch {
	case it.udp:
		proto, h.gsoType, h.csumOffset = protoUDP, gsoUDPL4, udpCsumOffset
		binary.BigEndian.PutUint16(p[it.l4+4:], uint16(len(p)-it.l4))
	case it.v6:
		h.gsoType, h.csumOffset = gsoTCPv6, tcpCsumOffset
	default:
		h.gsoType, h.csumOffset = gsoTCPv4, tcpCsumOffset
	}
	binary.BigEndian.PutUint16(p[it.l4+int(h.csumOffset):], pseudoSum(p, it.v6, proto, len(p)-it.l4))
	h.encode(b)
}
