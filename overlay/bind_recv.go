package overlay

// The receive path, run by wireguard-go's receive goroutines (one per socket
// family), each with its own batch of up to BatchSize buffers:
//
//	inner ReceiveFunc (recvmmsg + GRO split)  fills bufs, sizes, eps
//	-> classify each datagram by its first bytes (wire.Classify)
//	   WireGuard:  source address -> peer Endpoint (byAddr, lock-free);
//	               unknown source -> size 0 (dropped, counted)
//	   relay frame for this node: header stripped in place; the inner
//	               datagram is handled as above with the frame's source as
//	               its peer (WireGuard) or sent on to the control loop
//	   relay frame for another node: relay.Forwarder decides (trust, rate);
//	               hop limit decremented in place; sent on to the next hop
//	               in runs of frames for the same next hop (one sendmmsg/GSO
//	               write per run); size 0
//	   glow / STUN: copied out to the control loop (bounded channel,
//	               dropped and counted when full); size 0
//	-> wireguard-go decrypts what is left with a non-zero size
//
// Buffers belong to wireguard-go. Frames are forwarded from them before the
// ReceiveFunc returns; only control datagrams are copied.

import (
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"glow/internal/wire"
	"glow/relay"
)

func (b *Bind) makeReceive(inner conn.ReceiveFunc) conn.ReceiveFunc {
	// Owned by this receive goroutine: the run of frames being forwarded.
	var run [][]byte
	var runEP conn.Endpoint
	flush := func() {
		if len(run) > 0 {
			b.inner.Send(run, runEP)
			run = run[:0]
		}
	}
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := inner(bufs, sizes, eps)
		if n == 0 {
			return n, err
		}
		addrs := *b.byAddr.Load()
		var now time.Time
		for i := 0; i < n; i++ {
			if sizes[i] == 0 {
				continue
			}
			from := srcAddr(eps[i])
			pkt := bufs[i][:sizes[i]]
			k := wire.Classify(pkt)
			if k == wire.KindWireGuard {
				if e := addrs[from]; e != nil {
					eps[i] = e
					continue
				}
				b.dropUnknownSrc.Add(1)
				sizes[i] = 0
				continue
			}
			var via wire.NodeID
			if k == wire.KindRelay {
				hops, src, dst, _ := wire.ParseRelayHeader(pkt)
				shorts := *b.byShort.Load()
				if dst != b.self {
					sizes[i] = 0
					if now.IsZero() {
						now = time.Now()
					}
					if b.fwd.Allow(src, dst, hops, len(pkt), now) != relay.Forward {
						continue
					}
					e := shorts[dst]
					var p *path
					if e != nil {
						p = e.path.Load()
					}
					if p == nil {
						b.dropRelayNoPath.Add(1)
						continue
					}
					pkt[4] = hops - 1
					e.touch(p, now.UnixNano())
					if runEP != p.ep {
						flush()
						runEP = p.ep
					}
					run = append(run, pkt)
					continue
				}
				e := shorts[src]
				if e == nil {
					b.dropRelayNoPeer.Add(1)
					sizes[i] = 0
					continue
				}
				inner := pkt[wire.RelayHeaderLen:]
				if k = wire.Classify(inner); k == wire.KindWireGuard {
					sizes[i] = copy(bufs[i], inner)
					eps[i] = e
					continue
				}
				pkt, from, via = inner, netip.AddrPort{}, e.ID
			}
			switch k {
			case wire.KindControl, wire.KindBeacon, wire.KindSTUN:
				select {
				case b.ctl <- inbound{kind: k, buf: append([]byte(nil), pkt...), from: from, via: via}:
				default:
					b.dropCtlFull.Add(1)
				}
			default:
				b.dropUnknownKind.Add(1)
			}
			sizes[i] = 0
		}
		flush()
		return n, err
	}
}

// srcAddr returns the address a datagram came from.
func srcAddr(ep conn.Endpoint) netip.AddrPort {
	if e, ok := ep.(*conn.StdNetEndpoint); ok {
		return netip.AddrPortFrom(e.Addr().Unmap(), e.Port())
	}
	ap, _ := netip.ParseAddrPort(ep.DstToString())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
