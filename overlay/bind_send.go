package overlay

// The send path, run by wireguard-go's per-peer send goroutine with a batch
// of encrypted packets for one peer (and by the control loop for single
// control datagrams):
//
//	Endpoint (node identity) -> current path (one atomic load)
//	-> direct: the inner bind's Send (sendmmsg + UDP GSO) to the peer
//	-> stream: written to the peer's stream link (TCP, WebSocket, ssh)
//	-> turn:   a peer that reaches us at our TURN relayed address gets its
//	           answers through the allocation, one WriteTo per packet
//	-> relay:  each packet sent behind the path's fixed relay header: over
//	           UDP the kernel gathers header and packet (udpbind's
//	           SendPrefixed; equal-size frames stay GSO-able), else each is
//	           copied behind it into pooled scratch buffers, then one inner
//	           Send to the next hop or one stream write
//	-> none:   dropped, counted; wireguard-go retries its handshake later
//
// No lock per packet, and no copy but on a relay path over a stream link,
// TURN or a bind other than udpbind. A batch of
// WireGuard packets is counted by its path kind for metrics (traffic.go):
// one sum over the batch and two atomic adds.

import (
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"glow/internal/wire"
)

// prefixSender is an inner bind that sends each packet behind a prefix
// without copying (link/udpbind on Linux: the kernel gathers the two).
type prefixSender interface {
	SendPrefixed(prefix []byte, bufs [][]byte, ep conn.Endpoint) error
}

// sendScratch holds the relay frames of one Send call, laid out back to
// back in one buffer, where the inner bind is no prefixSender or the next
// hop is a stream link or a TURN allocation. conn.StdNetBind (tests, other
// platforms) builds its GSO batch by appending the following frames to the
// first one's slice, and since each frame's slice keeps the capacity up to
// the end of mem, that writes every frame onto itself: equal-size relay
// frames leave in one sendmmsg entry as UDP GSO segments.
type sendScratch struct {
	bufs [][]byte
	mem  []byte
}

func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.out.done(dataPackets(bufs))
	e, ok := ep.(*Endpoint)
	if !ok {
		r, roamed := ep.(*deviceRoam)
		if !roamed {
			return b.inner.Send(bufs, ep)
		}
		e = b.roamDevice(r) // wireguard-go took an authenticated packet of a device from r's address (devicewg.go)
	}
	p := e.path.Load()
	if p == nil {
		b.sendNoPath.Add(uint64(len(bufs)))
		if last := bufs[len(bufs)-1]; len(last) > 0 && (last[0] == 1 || last[0] == 2) && wire.Classify(last) == wire.KindWireGuard {
			h := append([]byte(nil), last...) // a handshake initiation or response: hold it
			e.held.Store(&h)
		}
		return errNoPath
	}
	if wire.Classify(bufs[0]) == wire.KindWireGuard {
		now := time.Now().UnixNano()
		if e.touch(p, now) {
			b.ctl.trafficResumed()
		}
		b.lastData.Store(now)
		if !p.relay && p.stream == nil && p.turn == nil && now-e.directIn.Load() > int64(suspectAfter) {
			b.reportSilence(e, now) // failover.go
		}
		b.traffic.sent(p, bufs)
		if last := bufs[len(bufs)-1]; last[0] == 1 || last[0] == 2 {
			h := append([]byte(nil), last...) // handshakes are rare: keep one for a path change
			e.recentHS.Store(&h)
			e.recentHSAt.Store(now)
			b.noteDeviceIndex(e, last) // devicewg.go
		}
	}
	if !p.relay {
		switch {
		case p.stream != nil:
			return p.stream.WriteDatagrams(bufs)
		case p.turn != nil:
			return turnSend(p, bufs)
		}
		return b.inner.Send(bufs, p.ep)
	}
	if b.gather != nil && p.stream == nil && p.turn == nil {
		return b.gather.SendPrefixed(p.hdr[:], bufs, p.ep) // no copy: the kernel gathers header and packet
	}
	s, _ := b.scratch.Get().(*sendScratch)
	if s == nil {
		s = &sendScratch{}
	}
	need := 0
	for _, pkt := range bufs {
		need += wire.RelayHeaderLen + len(pkt)
	}
	if cap(s.mem) < need {
		s.mem = make([]byte, max(need, len(bufs)*(wire.RelayHeaderLen+MTU+128)))
	}
	mem := s.mem[:cap(s.mem)]
	s.bufs = s.bufs[:0]
	off := 0
	for _, pkt := range bufs {
		n := copy(mem[off:], p.hdr[:])
		n += copy(mem[off+n:], pkt)
		s.bufs = append(s.bufs, mem[off:off+n])
		off += n
	}
	var err error
	switch {
	case p.stream != nil:
		err = p.stream.WriteDatagrams(s.bufs)
	case p.turn != nil:
		err = turnSend(p, s.bufs)
	default:
		err = b.inner.Send(s.bufs, p.ep)
	}
	b.scratch.Put(s)
	return err
}

// isData reports whether datagram p, n bytes long, is a WireGuard transport
// packet with a payload (keepalives are 32 bytes): one that came from or
// goes to the TUN.
func isData(p []byte, n int) bool { return n > 32 && p[0] == 4 }

// dataPackets counts the packets with a payload in bufs.
func dataPackets(bufs [][]byte) int {
	k := 0
	for _, p := range bufs {
		if isData(p, len(p)) {
			k++
		}
	}
	return k
}

// turnSend writes each packet through the path's TURN allocation: the peer
// sent to our relayed address and expects the answers from there.
func turnSend(p *path, bufs [][]byte) error {
	for _, b := range bufs {
		if err := p.turn.WriteTo(b, p.addr); err != nil {
			return err
		}
	}
	return nil
}
