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
//	-> relay:  each packet copied behind the path's fixed relay header into
//	           pooled scratch buffers, then one inner Send to the next hop
//	           (equal-size frames stay GSO-able), or one stream write
//	-> none:   dropped, counted; wireguard-go retries its handshake later
//
// No lock per packet; the only copies are the relay header's.

import (
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"glow/internal/wire"
)

// sendScratch holds relay frames for one Send call.
type sendScratch struct {
	bufs [][]byte
	mem  [][]byte
}

func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return b.inner.Send(bufs, ep)
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
		e.touch(p, now)
		b.lastData.Store(now)
		if last := bufs[len(bufs)-1]; last[0] == 1 || last[0] == 2 {
			h := append([]byte(nil), last...) // handshakes are rare: keep one for a path change
			e.recentHS.Store(&h)
			e.recentHSAt.Store(now)
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
	s, _ := b.scratch.Get().(*sendScratch)
	if s == nil {
		s = &sendScratch{}
	}
	s.bufs = s.bufs[:0]
	for i, pkt := range bufs {
		if i == len(s.mem) {
			s.mem = append(s.mem, make([]byte, 0, wire.RelayHeaderLen+MTU+128))
		}
		f := append(append(s.mem[i][:0], p.hdr[:]...), pkt...)
		s.mem[i] = f
		s.bufs = append(s.bufs, f)
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
