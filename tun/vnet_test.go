package tun

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
)

// refCsum is RFC 1071 word by word: the reference csum is checked against.
func refCsum(b []byte, initial uint16) uint16 {
	s := uint32(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestCsum(t *testing.T) {
	// RFC 1071's worked IPv4 header: checksum b861.
	hdr := []byte{0x45, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0, 0xc7}
	if got := ^csum(hdr, 0); got != 0xb861 {
		t.Errorf("IPv4 header checksum %#x, want 0xb861", got)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		init := uint16(r.Uint32())
		for _, off := range []int{0, 1} { // unaligned too
			if n < off {
				continue
			}
			if got, want := csum(b[off:], init), refCsum(b[off:], init); got != want && !(got == 0xffff && want == 0 || got == 0 && want == 0xffff) {
				t.Fatalf("csum(len %d, off %d, init %#x) = %#x, want %#x", n, off, init, got, want)
			}
		}
	}
}

// pktSpec describes a TCP or UDP packet for the tests.
type pktSpec struct {
	v6      bool
	udp     bool
	seq     uint32
	flags   uint8
	ttl     uint8
	id      uint16
	opts    []byte // TCP options (a multiple of 4 bytes)
	sport   uint16
	payload []byte
}

// build returns the packet, with correct lengths and checksums.
func (s pktSpec) build() []byte {
	l4 := 20
	if s.v6 {
		l4 = 40
	}
	th := 20 + len(s.opts)
	if s.udp {
		th = udpHdrLen
	}
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	sport := s.sport
	if sport == 0 {
		sport = 40000
	}
	p := make([]byte, l4+th+len(s.payload))
	proto := uint8(protoTCP)
	if s.udp {
		proto = protoUDP
	}
	if s.v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		p[6], p[7] = proto, ttl
		copy(p[8:], []byte{0xfd, 0x7a, 15: 1})
		copy(p[24:], []byte{0xfd, 0x7a, 15: 2})
	} else {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], s.id)
		p[6] = 0x40 // DF
		p[8], p[9] = ttl, proto
		copy(p[12:], []byte{100, 64, 0, 1, 100, 64, 0, 2})
		binary.BigEndian.PutUint16(p[10:], ^csum(p[:20], 0))
	}
	binary.BigEndian.PutUint16(p[l4:], sport)
	binary.BigEndian.PutUint16(p[l4+2:], 5201)
	csumAt := l4 + udpCsumOffset
	if s.udp {
		binary.BigEndian.PutUint16(p[l4+4:], uint16(len(p)-l4))
	} else {
		binary.BigEndian.PutUint32(p[l4+4:], s.seq)
		p[l4+12] = byte(th/4) << 4
		p[l4+13] = s.flags
		binary.BigEndian.PutUint16(p[l4+14:], 512)
		copy(p[l4+20:], s.opts)
		csumAt = l4 + tcpCsumOffset
	}
	copy(p[l4+th:], s.payload)
	c := ^csum(p[l4:], pseudoSum(p, s.v6, proto, len(p)-l4))
	if s.udp && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(p[csumAt:], c)
	return p
}

// checkPacket fails unless p's IPv4 header checksum and transport checksum
// are right and its length fields match len(p).
func checkPacket(t *testing.T, p []byte) {
	t.Helper()
	v6 := p[0]>>4 == 6
	l4, proto := 40, p[6]
	if v6 {
		if int(binary.BigEndian.Uint16(p[4:])) != len(p)-40 {
			t.Fatalf("IPv6 payload length %d, packet %d", binary.BigEndian.Uint16(p[4:]), len(p))
		}
	} else {
		l4, proto = int(p[0]&0xf)*4, p[9]
		if int(binary.BigEndian.Uint16(p[2:])) != len(p) {
			t.Fatalf("IPv4 total length %d, packet %d", binary.BigEndian.Uint16(p[2:]), len(p))
		}
		if csum(p[:l4], 0) != 0xffff {
			t.Fatalf("bad IPv4 header checksum")
		}
	}
	if proto == protoUDP && int(binary.BigEndian.Uint16(p[l4+4:])) != len(p)-l4 {
		t.Fatalf("UDP length %d, want %d", binary.BigEndian.Uint16(p[l4+4:]), len(p)-l4)
	}
	if csum(p[l4:], pseudoSum(p, v6, proto, len(p)-l4)) != 0xffff {
		t.Fatalf("bad transport checksum")
	}
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// superPacket returns s as the kernel hands a GSO packet over: the
// transport checksum field holds the pseudo-header sum only, and hdrLen is
// the whole packet (which gsoSplit must not trust).
func superPacket(s pktSpec, gsoSize int) ([]byte, vnetHdr) {
	p := s.build()
	l4 := 20
	gso := uint8(gsoTCPv4)
	if s.v6 {
		l4, gso = 40, gsoTCPv6
	}
	off := tcpCsumOffset
	proto := uint8(protoTCP)
	if s.udp {
		gso, off, proto = gsoUDPL4, udpCsumOffset, protoUDP
	}
	binary.BigEndian.PutUint16(p[l4+off:], pseudoSum(p, s.v6, proto, len(p)-l4))
	return p, vnetHdr{flags: vnetFlagNeedsCsum, gsoType: gso, hdrLen: uint16(len(p)), gsoSize: uint16(gsoSize),
		csumStart: uint16(l4), csumOffset: uint16(off)}
}

func newBufs(n, offset int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, offset+maxPacket)
	}
	return bufs, make([]int, n)
}

func TestGSOSplit(t *testing.T) {
	const offset = 16
	for _, tc := range []struct {
		name string
		s    pktSpec
		gso  int
		want int
	}{
		{"tcp4", pktSpec{seq: 1000, flags: tcpACK | tcpPSH | tcpFIN | tcpCWR, id: 65534, payload: payload(5000, 1)}, 1348, 4},
		{"tcp6 options", pktSpec{v6: true, seq: 0xfffff000, flags: tcpACK | tcpPSH, opts: []byte{1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8}, payload: payload(4096, 2)}, 1024, 4},
		{"udp4", pktSpec{udp: true, payload: payload(3000, 3)}, 1200, 3},
		{"udp6", pktSpec{udp: true, v6: true, payload: payload(2400, 4)}, 1200, 2},
		{"tcp4 one segment", pktSpec{flags: tcpACK, payload: payload(100, 5)}, 1348, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt, h := superPacket(tc.s, tc.gso)
			bufs, sizes := newBufs(8, offset)
			n, err := gsoSplit(pkt, h, bufs, sizes, offset)
			if err != nil || n != tc.want {
				t.Fatalf("gsoSplit = %d, %v; want %d segments", n, err, tc.want)
			}
			var got []byte
			l4 := 20
			if tc.s.v6 {
				l4 = 40
			}
			hdrLen := l4 + udpHdrLen
			if !tc.s.udp {
				hdrLen = l4 + 20 + len(tc.s.opts)
			}
			for i := range n {
				seg := bufs[i][offset : offset+sizes[i]]
				checkPacket(t, seg)
				if i < n-1 && sizes[i]-hdrLen != tc.gso {
					t.Errorf("segment %d carries %d bytes, want %d", i, sizes[i]-hdrLen, tc.gso)
				}
				got = append(got, seg[hdrLen:]...)
				if !tc.s.v6 {
					if id := binary.BigEndian.Uint16(seg[4:]); id != tc.s.id+uint16(i) {
						t.Errorf("segment %d IPv4 ID %d, want %d", i, id, tc.s.id+uint16(i))
					}
				}
				if tc.s.udp {
					continue
				}
				if seq := binary.BigEndian.Uint32(seg[l4+4:]); seq != tc.s.seq+uint32(i*tc.gso) {
					t.Errorf("segment %d seq %d, want %d", i, seq, tc.s.seq+uint32(i*tc.gso))
				}
				flags := seg[l4+13]
				wantFlags := tc.s.flags
				if i < n-1 {
					wantFlags &^= tcpFIN | tcpPSH
				}
				if i > 0 {
					wantFlags &^= tcpCWR
				}
				if flags != wantFlags {
					t.Errorf("segment %d flags %#x, want %#x", i, flags, wantFlags)
				}
				if !bytes.Equal(seg[l4+20:hdrLen], tc.s.opts) {
					t.Errorf("segment %d options %x", i, seg[l4+20:hdrLen])
				}
			}
			if !bytes.Equal(got, tc.s.payload) {
				t.Errorf("payloads differ after the split")
			}
		})
	}
}

func TestGSOSplitRejects(t *testing.T) {
	const offset = 16
	good, h := superPacket(pktSpec{flags: tcpACK, payload: payload(5000, 1)}, 1000)
	for _, tc := range []struct {
		name string
		mut  func(p []byte, h *vnetHdr) []byte
		err  error
	}{
		{"zero gso size", func(p []byte, h *vnetHdr) []byte { h.gsoSize = 0; return p }, errBadGSO},
		{"v6 type on v4", func(p []byte, h *vnetHdr) []byte { h.gsoType = gsoTCPv6; return p }, errBadGSO},
		{"unknown type", func(p []byte, h *vnetHdr) []byte { h.gsoType = 3; return p }, errBadGSO},
		{"csum start past end", func(p []byte, h *vnetHdr) []byte { h.csumStart = 9000; return p }, errBadGSO},
		{"csum start inside IP header", func(p []byte, h *vnetHdr) []byte { h.csumStart = 10; return p }, errBadGSO},
		{"wrong csum offset", func(p []byte, h *vnetHdr) []byte { h.csumOffset = 6; return p }, errBadGSO},
		{"tcp header length 4", func(p []byte, h *vnetHdr) []byte { p[32] = 1 << 4; return p }, errBadGSO},
		{"truncated", func(p []byte, h *vnetHdr) []byte { return p[:30] }, errBadGSO},
		{"too many segments", func(p []byte, h *vnetHdr) []byte { h.gsoSize = 100; return p }, errTooManySegments},
	} {
		p, hh := append([]byte(nil), good...), h
		p = tc.mut(p, &hh)
		bufs, sizes := newBufs(8, offset)
		if n, err := gsoSplit(p, hh, bufs, sizes, offset); err != tc.err {
			t.Errorf("%s: gsoSplit = %d, %v; want %v", tc.name, n, err, tc.err)
		}
	}
}

// batch puts packets into write buffers as wireguard-go hands them to
// Write: at offset, with room to grow to 64 KiB.
func batch(offset int, pkts ...[]byte) [][]byte {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		b := make([]byte, offset+len(p), offset+maxPacket)
		copy(b[offset:], p)
		bufs[i] = b
	}
	return bufs
}

// unmerge cuts every written packet of a coalesced batch as the kernel
// would (a GSO one through gsoSplit) and returns the packets.
func unmerge(t *testing.T, bufs [][]byte, offset int, toWrite []int) [][]byte {
	t.Helper()
	var out [][]byte
	for _, i := range toWrite {
		var h vnetHdr
		h.decode(bufs[i][offset-vnetHdrLen:])
		p := bufs[i][offset:]
		if h.gsoType == gsoNone {
			if h != (vnetHdr{}) {
				t.Fatalf("packet %d: non-GSO header %+v", i, h)
			}
			out = append(out, p)
			continue
		}
		// The kernel completes the partial checksum the merged packet carries.
		whole := append([]byte(nil), p...)
		if !completeCsum(whole, h.csumStart, h.csumOffset) {
			t.Fatalf("packet %d: checksum fields out of range", i)
		}
		checkPacket(t, whole)
		segs, sizes := newBufs(64, 0)
		n, err := gsoSplit(p, h, segs, sizes, 0)
		if err != nil {
			t.Fatalf("packet %d: gsoSplit of the merged packet: %v", i, err)
		}
		for k := range n {
			checkPacket(t, segs[k][:sizes[k]])
			out = append(out, segs[k][:sizes[k]])
		}
	}
	return out
}

// sameSegments compares packets ignoring the IPv4 ID and header checksum
// (a split numbers IDs from the first) and the transport checksum field
// (0x0000 and 0xffff are the same sum; unmerge checked every segment's).
func sameSegments(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = bytes.Clone(a), bytes.Clone(b)
	for _, p := range [][]byte{a, b} {
		l4, proto := -1, uint8(0)
		switch {
		case len(p) >= 20 && p[0]>>4 == 4:
			p[4], p[5], p[10], p[11] = 0, 0, 0, 0
			l4, proto = int(p[0]&0xf)*4, p[9]
		case len(p) >= 40 && p[0]>>4 == 6:
			l4, proto = 40, p[6]
		}
		at := -1
		switch proto {
		case protoTCP:
			at = l4 + tcpCsumOffset
		case protoUDP:
			at = l4 + udpCsumOffset
		}
		if at >= 0 && at+2 <= len(p) {
			p[at], p[at+1] = 0, 0
		}
	}
	return bytes.Equal(a, b)
}

// lost returns the indexes of the packets of in that are not among out
// (order across flows may differ after merging, so each is looked for).
func lost(in, out [][]byte) []int {
	var l []int
	for i, p := range in {
		if !slices.ContainsFunc(out, func(q []byte) bool { return sameSegments(p, q) }) {
			l = append(l, i)
		}
	}
	return l
}

func TestGROCoalesce(t *testing.T) {
	const offset = 16
	// at is s with its sequence number advanced by off, its IPv4 ID by i,
	// and size bytes of payload.
	at := func(s pktSpec, i, off, size int) []byte {
		s.seq += uint32(off)
		s.id += uint16(i)
		s.payload = payload(size, byte(i))
		return s.build()
	}
	seg := func(s pktSpec, i, size int) []byte { return at(s, i, i*size, size) }
	tcp4 := pktSpec{seq: 7, flags: tcpACK, id: 100}
	tcp6 := pktSpec{v6: true, seq: 0xffffff00, flags: tcpACK, opts: []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}}
	udp4 := pktSpec{udp: true, id: 9}
	other := pktSpec{sport: 40001, seq: 7, flags: tcpACK}
	flags := func(s pktSpec, f uint8) pktSpec { s.flags = f; return s }
	ttl := func(s pktSpec, t uint8) pktSpec { s.ttl = t; return s }
	opts := func(s pktSpec, b byte) pktSpec { s.opts = []byte{1, 1, 8, 10, 0, 0, 0, b, 0, 0, 0, 2}; return s }
	badCsum := func(p []byte) []byte { p[len(p)-1] ^= 0xff; return p }
	frag := func(p []byte) []byte {
		p[6] |= 0x20 // MF
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^csum(p[:20], 0))
		return p
	}
	var long [][]byte
	for i := range 60 {
		long = append(long, seg(tcp4, i, 1300))
	}
	for _, tc := range []struct {
		name    string
		pkts    [][]byte
		withUDP bool
		written int // packets written after merging
	}{
		{"tcp4 run", [][]byte{seg(tcp4, 0, 1300), seg(tcp4, 1, 1300), seg(tcp4, 2, 1300), at(flags(tcp4, tcpACK|tcpPSH), 3, 3900, 500)}, false, 1},
		{"tcp6 run with options", [][]byte{seg(tcp6, 0, 1200), seg(tcp6, 1, 1200), seg(tcp6, 2, 1200)}, false, 1},
		{"two flows interleaved", [][]byte{seg(tcp4, 0, 1000), seg(other, 0, 1000), seg(tcp4, 1, 1000), seg(other, 1, 1000)}, false, 2},
		{"gap in seq", [][]byte{seg(tcp4, 0, 1000), seg(tcp4, 2, 1000), seg(tcp4, 3, 1000)}, false, 2},
		{"nothing after PSH", [][]byte{seg(tcp4, 0, 1000), seg(flags(tcp4, tcpACK|tcpPSH), 1, 1000), seg(tcp4, 2, 1000)}, false, 2},
		{"nothing after a short one", [][]byte{seg(tcp4, 0, 1000), at(tcp4, 1, 1000, 500), at(tcp4, 2, 1500, 1000)}, false, 2},
		{"FIN, SYN, RST alone", [][]byte{seg(tcp4, 0, 1000), seg(flags(tcp4, tcpACK|tcpFIN), 1, 1000), seg(flags(tcp4, tcpACK|0x02), 2, 1000), seg(flags(tcp4, 0x04), 3, 1000)}, false, 4},
		{"different TTL", [][]byte{seg(tcp4, 0, 1000), seg(ttl(tcp4, 3), 1, 1000)}, false, 2},
		{"different options", [][]byte{seg(tcp6, 0, 1000), seg(opts(tcp6, 9), 1, 1000)}, false, 2},
		// An attack: a peer's segment whose payload does not match its
		// checksum, between good ones. Merged, it would go to the kernel
		// under NEEDS_CSUM, which recomputes the checksum: the corruption
		// would be accepted. Unmerged, the kernel drops it.
		{"attack: bad checksum not laundered", [][]byte{seg(tcp4, 0, 1000), badCsum(seg(tcp4, 1, 1000)), seg(tcp4, 2, 1000)}, false, 3},
		{"fragment", [][]byte{seg(tcp4, 0, 1000), frag(seg(tcp4, 1, 1000))}, false, 2},
		{"larger after smaller", [][]byte{seg(tcp4, 0, 1000), at(tcp4, 1, 1000, 1300)}, false, 2},
		{"udp run", [][]byte{seg(udp4, 0, 1200), seg(udp4, 1, 1200), seg(udp4, 2, 700)}, true, 1},
		{"udp without USO", [][]byte{seg(udp4, 0, 1200), seg(udp4, 1, 1200)}, false, 2},
		{"64 KiB limit", long, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkts := tc.pkts
			bufs := batch(offset, pkts...)
			var g groTable
			toWrite := g.coalesce(bufs, offset, tc.withUDP, nil)
			if len(toWrite) != tc.written {
				t.Errorf("%d packets written, want %d", len(toWrite), tc.written)
			}
			got := unmerge(t, bufs, offset, toWrite)
			if len(got) != len(pkts) {
				t.Fatalf("%d packets after the kernel's split, want %d", len(got), len(pkts))
			}
			for _, i := range lost(pkts, got) {
				t.Errorf("input packet %d is not among the packets the kernel would see", i)
			}
		})
	}
}

func TestGROAllocs(t *testing.T) {
	const offset = 16
	var pkts [][]byte
	for i := range 64 {
		pkts = append(pkts, pktSpec{seq: uint32(i * 1300), flags: tcpACK, payload: payload(1300, byte(i))}.build())
	}
	var g groTable
	toWrite := make([]int, 0, 128)
	fresh := func() [][]byte { return batch(offset, pkts...) }
	sets := make([][][]byte, 50)
	for i := range sets {
		sets[i] = fresh()
	}
	g.coalesce(fresh(), offset, true, toWrite[:0]) // warm the table
	i := 0
	if a := testing.AllocsPerRun(len(sets)-1, func() {
		toWrite = g.coalesce(sets[i], offset, true, toWrite[:0])
		i++
	}); a != 0 {
		t.Errorf("coalesce allocates %.1f times per batch", a)
	}
}

func FuzzGSOSplit(f *testing.F) {
	for _, s := range []pktSpec{{flags: tcpACK, payload: payload(3000, 1)}, {v6: true, udp: true, payload: payload(2500, 2)}} {
		p, h := superPacket(s, 1000)
		var hb [vnetHdrLen]byte
		h.encode(hb[:])
		f.Add(append(hb[:], p...))
	}
	bufs, sizes := newBufs(16, 4) // a worker runs one input at a time
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < vnetHdrLen || len(b) > vnetHdrLen+maxPacket {
			return
		}
		var h vnetHdr
		h.decode(b)
		n, err := gsoSplit(b[vnetHdrLen:], h, bufs, sizes, 4)
		if err != nil {
			return
		}
		for i := range n {
			if sizes[i] > maxPacket || sizes[i] < 20 {
				t.Fatalf("segment %d of %d bytes", i, sizes[i])
			}
		}
	})
}

// FuzzGROCoalesce: whatever the batch, merging never panics, and what the
// kernel would cut out of the written packets is the batch again.
func FuzzGROCoalesce(f *testing.F) {
	s := pktSpec{flags: tcpACK}
	var seed []byte
	for i := range 3 {
		s.seq = uint32(i * 100)
		s.payload = payload(100, byte(i))
		p := s.build()
		seed = append(seed, byte(len(p)>>8), byte(len(p)))
		seed = append(seed, p...)
	}
	f.Add(seed, true)
	f.Fuzz(func(t *testing.T, b []byte, withUDP bool) {
		var pkts [][]byte
		for len(b) >= 2 && len(pkts) < 16 {
			n := int(b[0])<<8 | int(b[1])
			b = b[2:]
			if n > len(b) {
				n = len(b)
			}
			if n < 1 {
				break
			}
			pkts = append(pkts, b[:n])
			b = b[n:]
		}
		if len(pkts) == 0 {
			return
		}
		const offset = 16
		bufs := batch(offset, pkts...)
		var g groTable
		toWrite := g.coalesce(bufs, offset, withUDP, nil)
		got := unmerge(t, bufs, offset, toWrite)
		if len(got) != len(pkts) {
			t.Fatalf("%d packets in, %d out of the kernel's split", len(pkts), len(got))
		}
		if l := lost(pkts, got); len(l) > 0 {
			t.Fatalf("input packet %d (%x) lost", l[0], pkts[l[0]])
		}
	})
}
