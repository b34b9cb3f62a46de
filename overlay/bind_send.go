package overlay

// The send path, run by wireguard-go's per-peer send goroutine with a batch
// of encrypted packets for one peer:
//
//	Endpoint (node identity) -> current path (atomic load)
//	-> direct: the inner bind's Send (sendmmsg + UDP GSO) to the path's address
//	-> none:   dropped, counted; wireguard-go retries its handshake later
//
// No lock and no allocation per packet; the buffers stay wireguard-go's.

import "golang.zx2c4.com/wireguard/conn"

func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return b.inner.Send(bufs, ep)
	}
	p := e.path.Load()
	if p == nil {
		b.sendNoPath.Add(uint64(len(bufs)))
		return errNoPath
	}
	return b.inner.Send(bufs, p.ep)
}
