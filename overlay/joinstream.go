package overlay

// Joining over a stream where UDP is blocked. A joiner also dials TCP to
// the link port of the code's endpoints (by default a node's link port is
// its UDP port number) and to the code's stream addresses, and runs a small
// unauthenticated exchange there that carries join-via packets only:
//
//	joiner -> member: "GLJ" 1 (the join-via header, as the magic) | frames
//	member -> joiner: frames
//	frame: length (2, big endian) | packet (link.Frames)
//
// The joiner's frames are join-via packets (joinrelay.go), one a second as
// over UDP; the member's are the inviter's sealed answers. The member takes
// each frame as a join-via datagram from the connection's address, through
// the same per-source limit (ctlqueue.go) and joinRelay bounds, and sends
// the answer (its own, or a joinBack's) down the connection. Such a connection holds its link Gate slot (links.go) for its
// whole life, so the 64-in-all and 8-per-source bounds hold; it lives at
// most joinTimeout and reads at most joinStreamFrames frames of at most
// maxJoinStreamPacket bytes; a frame of another kind ends it. Answers are
// queued without blocking (joinStreamQueue; a full queue drops).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"glow/internal/underlay"
	"glow/internal/wire"
	"glow/link"
	"glow/overlay/member"
)

const (
	joinStreamFrames    = 64   // frames a member reads from one joiner's connection
	maxJoinStreamPacket = 2048 // as the joiner's UDP read buffer
	joinStreamQueue     = 8    // answers queued for one connection
	joinDialTimeout     = 5 * time.Second
)

var joinStreamMagic = wire.Header(wire.KindJoin)

var errJoinStreamKind = errors.New("join stream: not a join-via packet")

// readJoinFrames reads the joiner's side of the exchange after the magic:
// up to joinStreamFrames join-via packets, each handed to fn (which must
// not keep it). It returns at the first error, io.EOF at a clean end.
func readJoinFrames(r io.Reader, fn func([]byte)) error {
	br := bufio.NewReaderSize(r, maxJoinStreamPacket+2)
	buf := make([]byte, maxJoinStreamPacket)
	for i := 0; i < joinStreamFrames; i++ {
		sz, err := link.ReadFrame(br, buf)
		if err != nil {
			return err
		}
		if wire.Classify(buf[:sz]) != wire.KindJoin {
			return errJoinStreamKind
		}
		fn(buf[:sz])
	}
	return fmt.Errorf("join stream: over %d frames", joinStreamFrames)
}

// serveJoinStream runs a member's side for a joiner on c (its magic is
// read); c holds a Gate slot that Close gives back.
func (n *Node) serveJoinStream(c net.Conn, r io.Reader) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(joinTimeout))
	n.serveJoiner(tcpAddrPort(c.RemoteAddr()), func(fn func([]byte)) { readJoinFrames(r, fn) },
		func(pkt []byte) error {
			_, err := c.Write(link.AppendFrame(nil, pkt))
			return err
		}, func() { c.Close() })
}

// serveJoiner runs a member's side of a join exchange with the joiner at
// from, on a connection that read reads (handing each join-via packet to
// its fn, until the connection ends), write writes to, and stop closes
// (from any goroutine, also to end a blocked read or write). Answers for
// from go to write in order, without blocking the control loop.
func (n *Node) serveJoiner(from netip.AddrPort, read func(fn func([]byte)), write func([]byte) error, stop func()) {
	defer context.AfterFunc(n.ctx, stop)()
	if !from.IsValid() {
		return
	}
	q := make(chan []byte, joinStreamQueue)
	b := n.bind
	b.joinMu.Lock()
	if b.joinConns == nil {
		b.joinConns = map[netip.AddrPort]chan<- []byte{}
	}
	if b.joinConns[from] != nil {
		b.joinMu.Unlock()
		return
	}
	b.joinConns[from] = q
	b.joinMu.Unlock()
	writerDone := make(chan struct{})
	end := make(chan struct{})
	go func() {
		defer close(writerDone)
		for {
			select {
			case pkt := <-q:
				if write(pkt) != nil {
					stop()
					return
				}
			case <-end:
				return
			}
		}
	}()
	defer func() {
		b.joinMu.Lock()
		delete(b.joinConns, from)
		b.joinMu.Unlock()
		close(end)
		<-writerDone
	}()
	read(func(pkt []byte) { b.putJoinConn(pkt, from) })
}

var errNoJoinConn = errors.New("the joiner's connection is closed")

// sendJoinConn queues pkt, without blocking, for the joiner connected to
// the link port from addr.
func (b *Bind) sendJoinConn(pkt []byte, addr netip.AddrPort) error {
	b.joinMu.Lock()
	defer b.joinMu.Unlock()
	q := b.joinConns[addr]
	if q == nil {
		return errNoJoinConn
	}
	select {
	case q <- append([]byte(nil), pkt...):
		return nil
	default:
		b.dropStreamFull.Add(1)
		return errStreamFull
	}
}

// putJoinConn puts a join-via packet from the joiner connected from addr
// into the control loop's queue for strangers, through the same per-source
// limit as a datagram (ctlqueue.go).
func (b *Bind) putJoinConn(pkt []byte, from netip.AddrPort) {
	if !b.ctl.lim.allow(sourceKey(from.Addr()), time.Now()) {
		b.dropCtlLimited.Add(1)
		return
	}
	select {
	case b.ctl.other <- inbound{kind: wire.KindJoin, buf: append([]byte(nil), pkt...), from: from, stream: true}:
	default:
		b.dropCtlFull.Add(1)
	}
}

func tcpAddrPort(a net.Addr) netip.AddrPort {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// joinStream is the joiner's side on one TCP address: dial, send a fresh
// request every joinResend, pass what comes back to in, until done.
func (j *joiner) joinStream(addr netip.AddrPort, in chan<- joinDatagram, done <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	dctx, dcancel := context.WithTimeout(ctx, joinDialTimeout)
	d := net.Dialer{Control: underlay.Control}
	c, err := d.DialContext(dctx, "tcp", addr.String())
	dcancel()
	if err != nil {
		return // no link port there: the UDP tries go on
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	j.logf("glow: join: connected to tcp://%v; asking there too", addr)
	go func() {
		t := time.NewTicker(joinResend)
		defer t.Stop()
		b := joinStreamMagic[:]
		for {
			b = link.AppendFrame(b, j.packet())
			if _, err := c.Write(b); err != nil {
				c.Close()
				return
			}
			b = nil
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	br := bufio.NewReader(c)
	for {
		buf := make([]byte, maxJoinStreamPacket)
		sz, err := link.ReadFrame(br, buf)
		if err != nil {
			return
		}
		select {
		case in <- joinDatagram{b: buf[:sz], from: addr}:
		case <-done:
			return
		}
	}
}

// streamTargets are the TCP addresses a joiner tries: the code's stream
// addresses, and, unless the node's UDP is a lab's (Config.ListenPacket),
// the link port of every endpoint in the code.
func (j *joiner) streamTargets() []netip.AddrPort {
	t := append([]netip.AddrPort(nil), j.inv.Streams...)
	if !j.lab {
		t = append(t, j.inv.Endpoints...)
	}
	return t[:min(len(t), member.MaxInviteEndpoints+member.MaxInviteStreams)]
}
