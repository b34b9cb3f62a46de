package natlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Ephemeral ports handed out for ListenPacket(0), as on Linux.
const (
	firstEphemeralPort = 32768
	lastEphemeralPort  = 60999
)

// maxDatagram is the largest UDP payload a Conn sends.
const maxDatagram = 65535

// Host is a machine with one address, on the Internet or on a gateway's
// LAN. It is safe for concurrent use.
type Host struct {
	seg *segment   // immutable
	ip  netip.Addr // immutable

	sent            atomic.Uint64
	received        atomic.Uint64
	droppedFull     atomic.Uint64
	droppedNoSocket atomic.Uint64

	mu       sync.Mutex // guards the following
	conns    map[uint16]*Conn
	nextPort uint16
}

// HostStats counts a host's packets.
type HostStats struct {
	Sent             uint64
	Received         uint64 // queued at one of its sockets
	DroppedQueueFull uint64 // the socket's receive queue was full
	DroppedNoSocket  uint64 // nothing listening on the destination port
}

// Addr returns the host's address.
func (h *Host) Addr() netip.Addr { return h.ip }

// Stats returns a snapshot of the host's counters.
func (h *Host) Stats() HostStats {
	return HostStats{
		Sent:             h.sent.Load(),
		Received:         h.received.Load(),
		DroppedQueueFull: h.droppedFull.Load(),
		DroppedNoSocket:  h.droppedNoSocket.Load(),
	}
}

// ListenPacket opens a UDP socket on port, or on a free ephemeral port if
// port is 0.
func (h *Host) ListenPacket(port uint16) (*Conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if port == 0 {
		for range lastEphemeralPort - firstEphemeralPort + 1 {
			p := h.nextPort
			h.nextPort++
			if h.nextPort > lastEphemeralPort {
				h.nextPort = firstEphemeralPort
			}
			if h.conns[p] == nil {
				port = p
				break
			}
		}
		if port == 0 {
			return nil, fmt.Errorf("natlab: %v: no free ephemeral port", h.ip)
		}
	}
	if h.conns[port] != nil {
		return nil, fmt.Errorf("natlab: listen udp %v: address already in use", netip.AddrPortFrom(h.ip, port))
	}
	c := &Conn{
		host:   h,
		local:  netip.AddrPortFrom(h.ip, port),
		queue:  make(chan *packet, h.seg.in.cfg.QueueLen),
		closed: make(chan struct{}),
	}
	c.rd.init()
	c.wd.init()
	h.conns[port] = c
	return c, nil
}

// Listen is ListenPacket in the shape of net.ListenConfig.ListenPacket, so
// that h.Listen can stand in for it: network is "udp", "udp4" or "udp6",
// address is ":PORT" or "HOST:PORT" with the host's own address.
func (h *Host) Listen(ctx context.Context, network, address string) (net.PacketConn, error) {
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return nil, fmt.Errorf("natlab: listen %s: only UDP is simulated", network)
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("natlab: listen %s %q: %w", network, address, err)
	}
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil || (!a.IsUnspecified() && a.Unmap() != h.ip) {
			return nil, fmt.Errorf("natlab: listen %s %q: not an address of host %v", network, address, h.ip)
		}
	}
	port, err := net.LookupPort(network, portStr)
	if err != nil {
		return nil, fmt.Errorf("natlab: listen %s %q: %w", network, address, err)
	}
	return h.ListenPacket(uint16(port))
}

// receive queues p at the socket bound to p.dst's port.
func (h *Host) receive(p *packet) {
	h.mu.Lock()
	c := h.conns[p.dst.Port()]
	h.mu.Unlock()
	in := h.seg.in
	if c == nil {
		h.droppedNoSocket.Add(1)
		if in.tracing() {
			in.logf("%v -> %v: dropped, port unreachable", p.src, p.dst)
		}
		return
	}
	select {
	case <-c.closed:
		h.droppedNoSocket.Add(1)
	case c.queue <- p:
		h.received.Add(1)
		in.delivered.Add(1)
		if in.tracing() {
			in.logf("%v -> %v: delivered, %d bytes", p.src, p.dst, len(p.data))
		}
	default:
		h.droppedFull.Add(1)
		if in.tracing() {
			in.logf("%v -> %v: dropped, receive queue full", p.src, p.dst)
		}
	}
}

func (h *Host) unbind(c *Conn) {
	h.mu.Lock()
	if h.conns[c.local.Port()] == c {
		delete(h.conns, c.local.Port())
	}
	h.mu.Unlock()
}

// Conn is a UDP socket on a Host. It implements net.PacketConn, plus the
// netip methods of *net.UDPConn. ReadFrom returns a *net.UDPAddr. Writes
// never block: a packet is routed before WriteTo returns, and dropped
// (and counted) where a real network would drop it. After Close, reads
// and writes fail with net.ErrClosed. Safe for concurrent use.
type Conn struct {
	host  *Host          // immutable
	local netip.AddrPort // immutable
	queue chan *packet   // bounded; written by senders, read by ReadFrom

	closeOnce sync.Once
	closed    chan struct{}

	rd, wd deadline
}

var _ net.PacketConn = (*Conn)(nil)

// LocalAddr returns the socket's address as a *net.UDPAddr.
func (c *Conn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.local) }

// LocalAddrPort returns the socket's address.
func (c *Conn) LocalAddrPort() netip.AddrPort { return c.local }

// Queued returns how many datagrams wait in the socket's receive queue.
// Delivery is synchronous, so a test can tell, without a read deadline,
// whether a datagram it just sent has arrived.
func (c *Conn) Queued() int { return len(c.queue) }

// ReadFrom reads one datagram; a datagram longer than b is truncated.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// ReadFromUDPAddrPort reads one datagram; a datagram longer than b is
// truncated.
func (c *Conn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	// Closed and expired win over queued data, as with a real socket.
	select {
	case <-c.closed:
		return 0, netip.AddrPort{}, c.opErr("read", net.ErrClosed)
	case <-c.rd.wait():
		return 0, netip.AddrPort{}, c.opErr("read", os.ErrDeadlineExceeded)
	default:
	}
	select {
	case p := <-c.queue:
		return copy(b, p.data), p.src, nil
	case <-c.closed:
		return 0, netip.AddrPort{}, c.opErr("read", net.ErrClosed)
	case <-c.rd.wait():
		return 0, netip.AddrPort{}, c.opErr("read", os.ErrDeadlineExceeded)
	}
}

// WriteTo sends b to addr, which must be a *net.UDPAddr or print as
// IP:port.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var to netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		to = a.AddrPort()
	case nil:
		return 0, c.opErr("write", errors.New("no destination address"))
	default:
		var err error
		if to, err = netip.ParseAddrPort(a.String()); err != nil {
			return 0, c.opErr("write", fmt.Errorf("unsupported address %v", addr))
		}
	}
	return c.WriteToUDPAddrPort(b, to)
}

// WriteToUDPAddrPort sends b to to. b is copied; the caller keeps it.
func (c *Conn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	select {
	case <-c.closed:
		return 0, c.opErr("write", net.ErrClosed)
	case <-c.wd.wait():
		return 0, c.opErr("write", os.ErrDeadlineExceeded)
	default:
	}
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	if !to.Addr().IsValid() || to.Addr().IsUnspecified() || to.Port() == 0 {
		return 0, c.opErr("write", fmt.Errorf("invalid destination %v", to))
	}
	if to.Addr().Is4() != c.local.Addr().Is4() {
		return 0, c.opErr("write", fmt.Errorf("destination %v: address family differs from %v", to, c.local))
	}
	if len(b) > maxDatagram {
		return 0, c.opErr("write", errors.New("message too long"))
	}
	p := &packet{src: c.local, dst: to, data: append([]byte(nil), b...)}
	c.host.sent.Add(1)
	if c.host.seg.in.tracing() {
		c.host.seg.in.logf("%v -> %v: sent, %d bytes", p.src, p.dst, len(b))
	}
	c.host.seg.send(p)
	return len(b), nil
}

// Close closes the socket; blocked reads return net.ErrClosed and the
// port is free again.
func (c *Conn) Close() error {
	err := c.opErr("close", net.ErrClosed)
	c.closeOnce.Do(func() {
		close(c.closed)
		c.host.unbind(c)
		c.rd.set(time.Time{})
		c.wd.set(time.Time{})
		err = nil
	})
	return err
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { c.rd.set(t); return nil }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { c.wd.set(t); return nil }

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: net.UDPAddrFromAddrPort(c.local), Err: err}
}

// deadline is a settable point in time, exposed as a channel that is
// closed once it has passed (the technique of net.Pipe).
type deadline struct {
	mu     sync.Mutex // guards the following
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes
}

func (d *deadline) init() { d.cancel = make(chan struct{}) }

// set arms the deadline at t; the zero t clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

// wait returns a channel that is closed when the deadline passes.
func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
