package overlay

// The receive path, run by wireguard-go's receive goroutines: one per UDP
// socket family, plus one for the stream links. Each has its own batch of up
// to BatchSize buffers and its own rx state:
//
//	inner ReceiveFunc (recvmmsg + GRO split), or the streams' channel
//	-> classify each datagram by its first bytes (wire.Classify)
//	   WireGuard:  its peer is the stream's, or (UDP) found by source address
//	               (byAddr, lock-free); an unknown source gives size 0
//	               (dropped, counted)
//	   relay frame: taken only from an authenticated neighbour: the
//	               stream's peer, or (UDP) the peer whose proven address
//	               it came from (byAddr); from anyone else dropped, counted
//	   relay frame for this node: relay.Forwarder.Accept checks that the
//	               neighbour may send it (its source, or a relay trusted
//	               for that source); header stripped in place; the inner
//	               datagram is handled as above with the frame's source as
//	               its peer (WireGuard) or sent on to the control loop
//	   relay frame for another node: relay.Forwarder.Allow decides (the
//	               same check, trust, rate; the frames after it with the
//	               same header spend a rate credit taken once, given
//	               back at the batch's end); hop limit decremented in
//	               place; grouped by next hop over the batch and sent on,
//	               one sendmmsg/GSO write per next hop; size 0
//	   glow / STUN: copied out to the control loop: known peers' control
//	               to one bounded queue, the rest rate limited per source
//	               to another (ctlqueue.go); dropped and counted when
//	               full; size 0
//	-> wireguard-go decrypts what is left with a non-zero size
//
// Buffers belong to wireguard-go. Frames are forwarded from them before the
// ReceiveFunc returns; only control datagrams are copied.

import (
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"glow/internal/wire"
	"glow/link/udpbind"
	"glow/relay"
)

// rx is one receive goroutine's state.
type rx struct {
	b     *Bind
	timer *time.Timer // for b.in.wait
	runs  []fwdRun    // frames of this batch to forward, grouped by next hop
	now   time.Time   // of this batch, read once when needed
	// The neighbour that the last relay frame of this batch came from (UDP),
	// and its address: the frames of a batch mostly share one sender.
	nbAddr netip.AddrPort
	nb     *Endpoint
	// The last relay frame for this node that Accept passed in this batch:
	// the next from the same neighbour, source and hop limit passes too,
	// and its peer is not looked up again.
	accNB   *Endpoint
	accSrc  wire.ShortID
	accHops uint8
	accE    *Endpoint // the peer accSrc names (nil: none)
	// Likewise the last frame for another node that Allow let through: the
	// next with the same header from the same neighbour meets only its
	// source's rate limit, from a credit taken for the rest of the batch
	// (relay.Credit) and given back when the batch ends.
	fwdNB          *Endpoint
	fwdSrc, fwdDst wire.ShortID
	fwdHops        uint8
	fwdE           *Endpoint // the peer fwdDst names (nil: none)
	credit         relay.Credit
	// The endpoint whose path this batch last touched (Endpoint.touch):
	// once a batch is enough, its time is the batch's.
	touched *Endpoint
	// udpKind is how a WireGuard datagram with a source address came: UDP
	// (direct), or through a TURN allocation (the streams' goroutine).
	udpKind trafficKind
	heard   *Endpoint // the last peer whose directIn this batch set
	traffic rxTraffic // this batch's WireGuard traffic (traffic.go)
}

// batch starts a receive batch: what was read once per batch is stale.
func (r *rx) batch() {
	r.now, r.nbAddr, r.nb, r.accNB, r.fwdNB, r.touched, r.heard = time.Time{}, netip.AddrPort{}, nil, nil, nil, nil, nil
}

// clock returns the batch's time, read once.
func (r *rx) clock() time.Time {
	if r.now.IsZero() {
		r.now = time.Now()
	}
	return r.now
}

// fwdRun is the frames of one batch that go to one next hop (UDP).
type fwdRun struct {
	ep   conn.Endpoint
	bufs [][]byte
}

// forward queues a frame for next hop ep. A batch through a relay mixes
// both directions of a flow (data one way, acknowledgements the other), so
// frames are grouped by next hop over the whole batch, keeping each hop's
// order, and each group goes out in one write (sendmmsg, GSO).
func (r *rx) forward(ep conn.Endpoint, pkt []byte) {
	for i := range r.runs {
		if r.runs[i].ep == ep {
			r.runs[i].bufs = append(r.runs[i].bufs, pkt)
			return
		}
	}
	if len(r.runs) < cap(r.runs) {
		r.runs = r.runs[:len(r.runs)+1]
		last := &r.runs[len(r.runs)-1]
		last.ep, last.bufs = ep, append(last.bufs[:0], pkt)
		return
	}
	r.runs = append(r.runs, fwdRun{ep: ep, bufs: [][]byte{pkt}})
}

func (r *rx) flush() {
	r.b.fwd.Give(&r.credit)
	for i := range r.runs {
		r.b.inner.Send(r.runs[i].bufs, r.runs[i].ep)
		clear(r.runs[i].bufs)
		r.runs[i].bufs = r.runs[i].bufs[:0]
		r.runs[i].ep = nil
	}
	r.runs = r.runs[:0]
}

// handle processes bufs[i][:sizes[i]], which came from UDP address from or
// (from invalid) over the stream link of peer linkPeer. It leaves sizes[i]
// non-zero, with eps[i] set, only for a WireGuard packet.
func (r *rx) handle(i int, bufs [][]byte, sizes []int, eps []conn.Endpoint, from netip.AddrPort, linkPeer *Endpoint, addrs map[netip.AddrPort]*Endpoint) {
	b := r.b
	pkt := bufs[i][:sizes[i]]
	k := wire.Classify(pkt)
	if k == wire.KindWireGuard {
		e := linkPeer
		if e == nil {
			e = addrs[from]
		}
		if e == nil && pkt[0] == 1 {
			e = b.deviceInitiation(pkt, from) // a device's handshake from a new address (devicewg.go)
		}
		if e == nil && pkt[0] == 4 {
			if r := b.deviceData(pkt, from); r != nil { // a device's data from a new address (devicewg.go)
				eps[i] = r
				return
			}
		}
		if e != nil {
			eps[i] = e
			b.wakeOnInitiation(e, pkt[0])
			if linkPeer != nil {
				r.traffic.add(trafficStream, len(pkt), pkt[0])
			} else {
				r.traffic.add(r.udpKind, len(pkt), pkt[0])
				if r.heard != e && r.udpKind == trafficDirect {
					r.heard = e // once a batch per peer: failover.go
					e.directIn.Store(r.clock().UnixNano())
				}
			}
			return
		}
		b.dropUnknownSrc.Add(1)
		sizes[i] = 0
		return
	}
	sizes[i] = 0
	via := wire.NodeID{}
	if linkPeer != nil {
		via = linkPeer.ID
	}
	if k == wire.KindRelay {
		// The neighbour that sent the frame: its header proves nothing.
		nb := linkPeer
		if nb == nil {
			if r.nb == nil || r.nbAddr != from {
				r.nbAddr, r.nb = from, addrs[from]
			}
			nb = r.nb
		}
		if nb == nil {
			b.dropRelayUnauth.Add(1)
			return
		}
		hops, src, dst, ok := wire.ParseRelayHeader(pkt)
		if !ok {
			b.dropRelayShort.Add(1)
			return
		}
		if dst != b.self {
			if r.now.IsZero() {
				r.now = time.Now()
			}
			if nb == r.fwdNB && src == r.fwdSrc && dst == r.fwdDst && hops == r.fwdHops {
				if b.fwd.Spend(&r.credit, src, len(pkt), len(bufs)-i, r.now) != relay.Forward {
					return
				}
			} else if b.fwd.Allow(nb.ID.Short(), src, dst, hops, len(pkt), r.now) != relay.Forward {
				return
			} else {
				r.fwdNB, r.fwdSrc, r.fwdDst, r.fwdHops = nb, src, dst, hops
				r.fwdE = (*b.byShort.Load())[dst]
			}
			e := r.fwdE
			var p *path
			if e != nil {
				p = e.path.Load()
			}
			if p == nil {
				b.dropRelayNoPath.Add(1)
				return
			}
			pkt[4] = hops - 1
			if len(pkt) > wire.RelayHeaderLen && pkt[wire.RelayHeaderLen] == 4 {
				// WireGuard data: the links it crosses carry traffic and
				// deserve fast heartbeats (relayed control does not count,
				// or every heartbeat would keep every link busy).
				if e != r.touched {
					r.touched = e
					if e.touch(p, r.now.UnixNano()) {
						b.ctl.trafficResumed()
					}
				}
			}
			if p.stream != nil {
				// Forwarded onto a stream link: queued like control, so
				// this receive goroutine never waits on a stream.
				select {
				case p.ctlq <- append([]byte(nil), pkt...):
				default:
					b.dropStreamFull.Add(1)
				}
				return
			}
			r.forward(p.ep, pkt)
			return
		}
		if nb != r.accNB || src != r.accSrc || hops != r.accHops {
			if b.fwd.Accept(nb.ID.Short(), src, hops) != relay.Deliver {
				return
			}
			r.accNB, r.accSrc, r.accHops = nb, src, hops
			r.accE = (*b.byShort.Load())[src]
		}
		e := r.accE
		if e == nil {
			b.dropRelayNoPeer.Add(1)
			return
		}
		inner := pkt[wire.RelayHeaderLen:]
		if k = wire.Classify(inner); k == wire.KindWireGuard {
			sizes[i] = copy(bufs[i], inner)
			eps[i] = e
			r.traffic.add(trafficRelay, sizes[i], bufs[i][0])
			b.wakeOnInitiation(e, bufs[i][0]) // (inner has moved)
			if p := e.path.Load(); p != nil && !p.relay {
				if r.now.IsZero() {
					r.now = time.Now()
				}
				if now := r.now.UnixNano(); now-e.relayedIn.Swap(now) >= int64(activeWindow) {
					b.ctl.trafficResumed()
				}
			}
			return
		}
		pkt, from, via = inner, netip.AddrPort{}, e.ID
	}
	switch k {
	case wire.KindControl, wire.KindBeacon, wire.KindSTUN, wire.KindJoin:
		b.putCtl(k, pkt, from, via, addrs) // to the control loop's queues (ctlqueue.go)
	default:
		b.dropUnknownKind.Add(1)
	}
}

func (b *Bind) makeReceive(inner conn.ReceiveFunc) conn.ReceiveFunc {
	r := &rx{b: b}
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		b.in.wait(&r.timer)
		n, err := inner(bufs, sizes, eps)
		if n == 0 {
			return n, err
		}
		addrs := *b.byAddr.Load()
		r.batch()
		for i := 0; i < n; i++ {
			if sizes[i] > 0 {
				r.handle(i, bufs, sizes, eps, srcAddr(eps[i]), nil, addrs)
			}
		}
		r.flush()
		r.traffic.flush(&b.traffic)
		b.in.add(dataIn(bufs[:n], sizes))
		return n, err
	}
}

// makeStreamReceive returns the ReceiveFunc of the stream links and TURN
// allocations: it waits for datagrams their readers deliver (DeliverStream,
// DeliverTURN) and takes as many as are ready, up to the batch size.
func (b *Bind) makeStreamReceive(done <-chan struct{}) conn.ReceiveFunc {
	r := &rx{b: b, udpKind: trafficTURN}
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		b.in.wait(&r.timer)
		var sp streamPkt
		select {
		case sp = <-b.streamIn:
		case <-done:
			return 0, net.ErrClosed
		}
		r.batch()
		n := 0
		for {
			sizes[n] = copy(bufs[n], sp.buf)
			eps[n] = sp.from
			if sp.from == nil { // through TURN: like UDP from the peer's address
				r.handle(n, bufs, sizes, eps, sp.addr, nil, *b.byAddr.Load())
			} else {
				r.handle(n, bufs, sizes, eps, netip.AddrPort{}, sp.from, nil)
			}
			n++
			if n == len(bufs) {
				break
			}
			select {
			case sp = <-b.streamIn:
				continue
			default:
			}
			break
		}
		r.flush()
		r.traffic.flush(&b.traffic)
		b.in.add(dataIn(bufs[:n], sizes))
		return n, nil
	}
}

// dataIn counts the packets with a payload that a receive batch hands to
// wireguard-go (sizes 0 are not handed over).
func dataIn(bufs [][]byte, sizes []int) int {
	k := 0
	for i, p := range bufs {
		if isData(p, sizes[i]) {
			k++
		}
	}
	return k
}

// srcAddr returns the address a datagram came from.
func srcAddr(ep conn.Endpoint) netip.AddrPort {
	if e, ok := ep.(*udpbind.Endpoint); ok {
		return e.AddrPort // unmapped already
	}
	if e, ok := ep.(*conn.StdNetEndpoint); ok {
		return netip.AddrPortFrom(e.Addr().Unmap(), e.Port())
	}
	ap, _ := netip.ParseAddrPort(ep.DstToString())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
