package overlay

// The receive path, run by wireguard-go's receive goroutines (one per socket
// family), each with its own batch of up to BatchSize buffers:
//
//	inner ReceiveFunc (recvmmsg + GRO split)  fills bufs, sizes, eps
//	-> classify each datagram by its first bytes (wire.Classify)
//	   WireGuard:       source address -> peer Endpoint (byAddr, lock-free);
//	                    unknown source -> size 0 (dropped, counted)
//	   glow / STUN:     copied out to the control loop (bounded channel,
//	                    dropped and counted when full); size 0
//	-> wireguard-go decrypts what is left with a non-zero size
//
// Buffers belong to wireguard-go; only control datagrams are copied.

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/conn"

	"glow/internal/wire"
)

func (b *Bind) makeReceive(inner conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := inner(bufs, sizes, eps)
		if n == 0 {
			return n, err
		}
		addrs := *b.byAddr.Load()
		for i := 0; i < n; i++ {
			if sizes[i] == 0 {
				continue
			}
			from := srcAddr(eps[i])
			pkt := bufs[i][:sizes[i]]
			switch k := wire.Classify(pkt); k {
			case wire.KindWireGuard:
				if e := addrs[from]; e != nil {
					eps[i] = e
					continue
				}
				b.dropUnknownSrc.Add(1)
				b.mu.Lock()
				f := b.unknown
				b.mu.Unlock()
				if f != nil {
					f(from)
				}
				sizes[i] = 0
			case wire.KindControl, wire.KindBeacon, wire.KindSTUN, wire.KindRelay:
				select {
				case b.ctl <- inbound{kind: k, buf: append([]byte(nil), pkt...), from: from}:
				default:
					b.dropCtlFull.Add(1)
				}
				sizes[i] = 0
			default:
				b.dropUnknownKind.Add(1)
				sizes[i] = 0
			}
		}
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
