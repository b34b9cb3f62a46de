package udpbind

// Batches as the kernel's UDP offloads see them. Pure, so the same code is
// fuzzed and tested without sockets.

// maxSegments is the most datagrams one GSO send may carry and one GRO read
// may hold (the kernel's UDP_MAX_SEGMENTS and UDP_GRO_CNT_MAX).
const maxSegments = 64

// Largest UDP payloads: beyond them a send fails with EMSGSIZE.
const (
	maxPayload4 = 1<<16 - 1 - 20 - 8
	maxPayload6 = 1<<16 - 1 - 8
)

// group is one message of a send: datagrams bufs[first:first+count]. With
// count > 1 it goes out with UDP GSO and the kernel cuts it at seg bytes.
type group struct {
	first, count int
	seg, bytes   int
	open         bool // a datagram of seg bytes or fewer may join
}

// coalesce appends to gs the messages that send bufs in order, each
// datagram behind a prefix of extra bytes: a run of datagrams of one size,
// which one shorter datagram may end, of at most maxSegments datagrams and
// maxPayload bytes, is one message. Empty datagrams travel alone.
func coalesce(gs []group, bufs [][]byte, extra, maxPayload int) []group {
	for i, b := range bufs {
		l := extra + len(b)
		if n := len(gs); n > 0 {
			g := &gs[n-1]
			if g.open && l > 0 && l <= g.seg && g.count < maxSegments && g.bytes+l <= maxPayload {
				g.count++
				g.bytes += l
				g.open = l == g.seg
				continue
			}
		}
		gs = append(gs, group{first: i, count: 1, seg: l, bytes: l, open: l > 0})
	}
	return gs
}

// split spreads the messages read into bufs[at:at+read], of sizes[i] bytes
// and segment size segs[i] (0: one datagram), over the buffers from index 0
// on, one datagram per buffer, in order, and notes in origin the message
// each datagram came from. It returns how many datagrams it made, and how
// many it dropped for want of a free buffer (a datagram may only go to a
// buffer whose message was already spread). With at >= maxSegments-1 and
// at most maxSegments datagrams a message, nothing is dropped.
func split(bufs [][]byte, sizes, segs, origin []int, at, read int) (n, dropped int) {
	for i := at; i < at+read; i++ {
		size, seg := sizes[i], segs[i]
		if seg <= 0 || seg >= size {
			seg = max(size, 1)
		}
		for off := 0; off < size || (size == 0 && off == 0); off += seg {
			if n > i {
				dropped += (size - off + seg - 1) / seg
				break
			}
			end := min(off+seg, size)
			sizes[n] = copy(bufs[n], bufs[i][off:end])
			origin[n] = i
			n++
			if size == 0 {
				break
			}
		}
	}
	return n, dropped
}
