package policy

import (
	"encoding/binary"
	"net/netip"
)

// packet is what the filter needs to know of an IP packet. decode fills it
// without allocating; it lives on the caller's stack.
type packet struct {
	v6       bool
	frag     bool   // part of a fragmented datagram
	fragOff  uint16 // fragment offset in 8-byte units; > 0 for later fragments
	fragNH   uint8  // protocol as the fragment header names it (key of the datagram)
	fragID   uint32
	proto    uint8 // upper-layer protocol
	src, dst [16]byte
	sport    uint16 // for ICMP echo: the identifier, in both ports
	dport    uint16
	tcpFlags uint8
	icmpType uint8
	l4       []byte // upper-layer header onwards
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10

	maxExtHeaders = 8 // IPv6 extension headers walked before giving up
)

// decode parses b. An embedded packet (the one quoted in an ICMP error) may
// be cut short: then its length field is not checked and only the first 8
// bytes of the upper layer, which hold the ports, are needed.
func (p *packet) decode(b []byte, embedded bool) bool {
	if len(b) == 0 {
		return false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return false
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:]))
		if ihl < 20 || len(b) < ihl {
			return false
		}
		switch {
		case total >= ihl && total <= len(b):
			b = b[:total]
		case !embedded:
			return false
		}
		copy(p.src[:4], b[12:16])
		copy(p.dst[:4], b[16:20])
		p.proto = b[9]
		fo := binary.BigEndian.Uint16(b[6:])
		p.fragOff = fo & 0x1fff
		p.frag = fo&0x3fff != 0
		p.fragID = uint32(binary.BigEndian.Uint16(b[4:]))
		p.fragNH = p.proto
		p.l4 = b[ihl:]
		if p.fragOff != 0 {
			// RFC 1858: an offset of 8 bytes can only serve to overwrite
			// the TCP flags of the first fragment.
			return !(p.fragOff == 1 && p.proto == ipProtoTCP)
		}
	case 6:
		if len(b) < 40 {
			return false
		}
		p.v6 = true
		switch total := 40 + int(binary.BigEndian.Uint16(b[4:])); {
		case total <= len(b):
			b = b[:total]
		case !embedded:
			return false
		}
		copy(p.src[:], b[8:24])
		copy(p.dst[:], b[24:40])
		nh, off := b[6], 40
	walk:
		for i := 0; ; i++ {
			if i == maxExtHeaders {
				return false
			}
			switch nh {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(b) < off+8 {
					return false
				}
				nh, off = b[off], off+(int(b[off+1])+1)*8
				if off > len(b) {
					return false
				}
			case 44: // fragment
				if len(b) < off+8 {
					return false
				}
				fo := binary.BigEndian.Uint16(b[off+2:])
				p.fragOff = fo >> 3
				p.frag = fo&0xfff9 != 0 // an atomic fragment (offset 0, M clear) is whole
				p.fragID = binary.BigEndian.Uint32(b[off+4:])
				nh, off = b[off], off+8
				p.fragNH = nh
				if p.fragOff != 0 {
					p.proto = nh
					p.l4 = b[off:]
					return true
				}
			default:
				break walk
			}
		}
		p.proto = nh
		p.l4 = b[off:]
		if !p.frag {
			p.fragNH = nh
		}
	default:
		return false
	}
	return p.decodeL4(embedded)
}

func (p *packet) decodeL4(embedded bool) bool {
	l4 := p.l4
	switch {
	case p.proto == ipProtoTCP:
		if len(l4) < 20 && !(embedded && len(l4) >= 8) {
			return false
		}
		p.sport = binary.BigEndian.Uint16(l4[0:])
		p.dport = binary.BigEndian.Uint16(l4[2:])
		if len(l4) >= 14 {
			p.tcpFlags = l4[13]
		}
	case p.proto == ipProtoUDP:
		if len(l4) < 8 {
			return false
		}
		p.sport = binary.BigEndian.Uint16(l4[0:])
		p.dport = binary.BigEndian.Uint16(l4[2:])
	case p.isICMP():
		if len(l4) < 8 {
			return false
		}
		p.icmpType = l4[0]
		if k := p.icmpKind(); k == icmpEchoRequest || k == icmpEchoReply {
			id := binary.BigEndian.Uint16(l4[4:])
			p.sport, p.dport = id, id
		}
	}
	return true
}

func (p *packet) isICMP() bool {
	return p.proto == ipProtoICMP && !p.v6 || p.proto == ipProtoICMPv6 && p.v6
}

type icmpKind uint8

const (
	icmpOther icmpKind = iota
	icmpEchoRequest
	icmpEchoReply
	icmpError
)

func (p *packet) icmpKind() icmpKind {
	if p.v6 {
		switch p.icmpType {
		case 128:
			return icmpEchoRequest
		case 129:
			return icmpEchoReply
		case 1, 2, 3, 4: // unreachable, too big, time exceeded, parameter problem
			return icmpError
		}
		return icmpOther
	}
	switch p.icmpType {
	case 8:
		return icmpEchoRequest
	case 0:
		return icmpEchoReply
	case 3, 4, 5, 11, 12: // unreachable, quench, redirect, time exceeded, parameter problem
		return icmpError
	}
	return icmpOther
}

func (p *packet) srcAddr() netip.Addr { return addrOf(p.v6, &p.src) }
func (p *packet) dstAddr() netip.Addr { return addrOf(p.v6, &p.dst) }

func addrOf(v6 bool, a *[16]byte) netip.Addr {
	if v6 {
		return netip.AddrFrom16(*a)
	}
	return netip.AddrFrom4([4]byte(a[:4]))
}

// flowKey identifies a flow from this node's side, so that both directions
// of it have the same key.
type flowKey struct {
	local, remote [16]byte
	lport, rport  uint16
	proto         uint8
	v6            bool
}

// key returns the flow key of p; inbound says whether p arrives at this
// node (its destination is local) or leaves it.
func (p *packet) key(inbound bool) flowKey {
	if inbound {
		return flowKey{local: p.dst, remote: p.src, lport: p.dport, rport: p.sport, proto: p.proto, v6: p.v6}
	}
	return flowKey{local: p.src, remote: p.dst, lport: p.sport, rport: p.dport, proto: p.proto, v6: p.v6}
}

// fragKey identifies the datagram a fragment belongs to.
type fragKey struct {
	src, dst [16]byte
	id       uint32
	proto    uint8
	v6       bool
}

func (p *packet) fragKey() fragKey {
	return fragKey{src: p.src, dst: p.dst, id: p.fragID, proto: p.fragNH, v6: p.v6}
}
