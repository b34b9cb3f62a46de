package link

// PacketBind: a wireguard-go conn.Bind over any net.PacketConn, so that
// wireguard-go devices run over an injected network (natlab, a filter, a
// real UDP socket) in tests and tools.
//
// Receive path (one ReceiveFunc, called by wireguard-go's one receive
// goroutine for this Bind):
//
//	ReadFrom / ReadBatch ─► packets[i] (wireguard-go's buffers) ─► eps[i] = *StdNetEndpoint
//
// For a *net.UDPConn the read is one recvmmsg of up to len(packets)
// (golang.org/x/net's ReadBatch); any other PacketConn reads one datagram
// per call, which the conn.ReceiveFunc contract allows. Send writes each
// buffer in turn with WriteTo; wireguard-go owns all buffers throughout.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"
)

// packetBatch is PacketBind's BatchSize.
const packetBatch = 16

// NewPacketBind returns a conn.Bind whose Open calls listen(port) for its
// socket. Endpoints are *conn.StdNetEndpoint (ParseEndpoint takes
// "ip:port"). Close closes the socket, after which the ReceiveFunc returns
// net.ErrClosed; Open may then be called again. SetMark does nothing.
func NewPacketBind(listen func(port uint16) (net.PacketConn, error)) conn.Bind {
	return &packetBind{listen: listen}
}

type packetBind struct {
	listen func(port uint16) (net.PacketConn, error)

	mu   sync.Mutex // guards sock
	sock *bindSocket
}

// bindSocket is one Open's socket; closed tells a read error caused by
// Close (net.ErrClosed) from a real one.
type bindSocket struct {
	pc     net.PacketConn
	batch  batchReader // nil: one ReadFrom per receive
	msgs   []ipv4.Message
	closed atomic.Bool
}

type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

func (b *packetBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sock != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	pc, err := b.listen(port)
	if err != nil {
		return nil, 0, fmt.Errorf("link: PacketBind: listen on port %d: %w", port, err)
	}
	local, err := netip.ParseAddrPort(pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, 0, fmt.Errorf("link: PacketBind: local address %v: %w", pc.LocalAddr(), err)
	}
	s := &bindSocket{pc: pc}
	if uc, ok := pc.(*net.UDPConn); ok {
		if local.Addr().Is4() {
			s.batch = ipv4.NewPacketConn(uc)
		} else {
			s.batch = ipv6.NewPacketConn(uc)
		}
		s.msgs = make([]ipv4.Message, packetBatch)
		for i := range s.msgs {
			s.msgs[i].Buffers = make([][]byte, 1)
		}
	}
	b.sock = s
	return []conn.ReceiveFunc{s.receive}, local.Port(), nil
}

func (s *bindSocket) receive(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	if s.batch == nil {
		n, addr, err := s.pc.ReadFrom(packets[0])
		if err != nil {
			return 0, s.readErr(err)
		}
		ap, err := addrPortOf(addr)
		if err != nil {
			return 0, err
		}
		sizes[0], eps[0] = n, &conn.StdNetEndpoint{AddrPort: ap}
		return 1, nil
	}
	msgs := s.msgs[:min(len(packets), len(s.msgs))]
	for i := range msgs {
		msgs[i].Buffers[0] = packets[i]
		msgs[i].N, msgs[i].Addr = 0, nil
	}
	n, err := s.batch.ReadBatch(msgs, 0)
	if err != nil {
		return 0, s.readErr(err)
	}
	for i := range n {
		ap, err := addrPortOf(msgs[i].Addr)
		if err != nil {
			sizes[i], eps[i] = 0, &conn.StdNetEndpoint{} // a zero size is skipped by the caller
			continue
		}
		sizes[i], eps[i] = msgs[i].N, &conn.StdNetEndpoint{AddrPort: ap}
	}
	return n, nil
}

func (s *bindSocket) readErr(err error) error {
	if s.closed.Load() || errors.Is(err, net.ErrClosed) {
		return net.ErrClosed
	}
	return err
}

func addrPortOf(a net.Addr) (netip.AddrPort, error) {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
		return ap, errors.New("link: PacketBind: datagram without a source address")
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return ap, fmt.Errorf("link: PacketBind: source address %v: %w", a, err)
		}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func (b *packetBind) Close() error {
	b.mu.Lock()
	s := b.sock
	b.sock = nil
	b.mu.Unlock()
	if s == nil {
		return nil
	}
	s.closed.Store(true)
	return s.pc.Close()
}

func (b *packetBind) SetMark(uint32) error { return nil }

func (b *packetBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	se, ok := ep.(*conn.StdNetEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	b.mu.Lock()
	s := b.sock
	b.mu.Unlock()
	if s == nil {
		return net.ErrClosed
	}
	to := net.UDPAddrFromAddrPort(se.AddrPort)
	for _, buf := range bufs {
		if _, err := s.pc.WriteTo(buf, to); err != nil {
			return err
		}
	}
	return nil
}

func (b *packetBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("link: PacketBind: endpoint %q: %w", s, err)
	}
	return &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

func (b *packetBind) BatchSize() int { return packetBatch }
