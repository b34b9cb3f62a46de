package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Query path, UDP (ServeUDP; one read loop per socket):
//
//	read ─► client check (not loopback or overlay: drop, counted)
//	     ─► parse (too short or a response: drop, counted; malformed or
//	over MaxQuerySize: FORMERR built from the header) ─► answer
//	    ├─ glow name ─► finish (EDNS, truncate to the client's size) ─► write,
//	    │   all in the read loop: no goroutine, no blocking
//	    └─ other name ─► a goroutine per query (at most maxForwards, else
//	        drop): forward ─► finish ─► write
//
// The read loop owns rbuf and wbuf; a forwarding goroutine owns its own
// unpacked request and packs its reply into a fresh buffer.
//
// Query path, TCP (ServeTCP; one goroutine per connection, at most
// maxTCPConns): read length-prefixed queries one after another, answer each
// (forwarding over TCP, inline) and write the reply in one writev.

// ServeUDP answers queries arriving on pc until ctx is done or pc fails. It
// owns pc and closes it before returning, after waiting for the forwards it
// started. It returns nil when ctx ended it.
func (s *Server) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer pc.Close()
	defer wg.Wait()
	defer cancel()
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()

	sem := make(chan struct{}, maxForwards)
	rbuf := make([]byte, dns.MaxMsgSize)
	wbuf := make([]byte, dns.MaxMsgSize)
	for {
		n, addr, err := pc.ReadFrom(rbuf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dns: serve udp: %w", err)
		}
		s.stats.queries.Add(1)
		if !s.clientAllowed(addr) {
			continue
		}
		req, raw := s.parse(rbuf[:n])
		if raw != nil {
			s.writeTo(pc, addr, raw)
			continue
		}
		if req == nil {
			continue
		}
		resp, forward := s.answer(req)
		if !forward {
			s.writeMsg(pc, addr, s.finish(req, resp, "udp"), wbuf)
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			s.stats.dropOverload.Add(1)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.writeMsg(pc, addr, s.finish(req, s.forward(ctx, req, false), "udp"), nil)
		}()
	}
}

func (s *Server) writeMsg(pc net.PacketConn, addr net.Addr, resp *dns.Msg, buf []byte) {
	if resp == nil {
		return
	}
	b, err := resp.PackBuffer(buf)
	if err != nil {
		s.stats.dropWrite.Add(1)
		s.logf("dns: pack reply: %v", err)
		return
	}
	s.writeTo(pc, addr, b)
}

func (s *Server) writeTo(pc net.PacketConn, addr net.Addr, b []byte) {
	if _, err := pc.WriteTo(b, addr); err != nil {
		s.stats.dropWrite.Add(1)
	}
}

// parse unpacks one query. It returns the request, or raw bytes to send
// instead (a FORMERR), or neither when the message must be dropped.
func (s *Server) parse(b []byte) (req *dns.Msg, raw []byte) {
	if len(b) < 12 {
		s.stats.dropShort.Add(1)
		return nil, nil
	}
	if b[2]&0x80 != 0 {
		s.stats.dropResponse.Add(1)
		return nil, nil
	}
	if len(b) <= MaxQuerySize {
		req = new(dns.Msg)
		if err := req.Unpack(b); err == nil {
			return req, nil
		}
	}
	s.stats.formErr.Add(1)
	return nil, formErr(b)
}

// formErr builds a FORMERR reply from the header of a query that could not
// be parsed: same id and opcode, no sections.
func formErr(q []byte) []byte {
	out := make([]byte, 12)
	copy(out, q[:2])
	out[2] = 0x80 | q[2]&0x79 // QR, the query's opcode and RD
	out[3] = dns.RcodeFormatError
	return out
}

// ServeTCP answers queries on connections accepted from ln until ctx is done
// or ln fails. It owns ln and closes it, and every connection, before
// returning, after their goroutines have ended. It returns nil when ctx ended
// it.
func (s *Server) ServeTCP(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	sem := make(chan struct{}, maxTCPConns)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("dns: serve tcp: %w", err)
			}
			// Out of file descriptors and the like: back off, go on.
			s.logf("dns: accept: %v", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		if !s.clientAllowed(c.RemoteAddr()) {
			c.Close()
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			s.stats.dropOverload.Add(1)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.serveConn(ctx, c)
		}()
	}
}

// serveConn answers the queries on one TCP connection in order, until the
// client closes it, it idles for tcpIdle, or ctx is done.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	rp, wp := bufPool.Get().(*[]byte), bufPool.Get().(*[]byte)
	defer bufPool.Put(rp)
	defer bufPool.Put(wp)
	rbuf, wbuf := *rp, *wp
	var hdr, whdr [2]byte
	for {
		c.SetReadDeadline(time.Now().Add(tcpIdle))
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(c, rbuf[:n]); err != nil {
			return
		}
		s.stats.queries.Add(1)
		req, out := s.parse(rbuf[:n])
		if req == nil && out == nil {
			return // garbage on a stream: hang up
		}
		if req != nil {
			resp, forward := s.answer(req)
			if forward {
				resp = s.forward(ctx, req, true)
			}
			resp = s.finish(req, resp, "tcp")
			if resp == nil {
				continue
			}
			b, err := resp.PackBuffer(wbuf)
			if err != nil {
				s.stats.dropWrite.Add(1)
				s.logf("dns: pack reply: %v", err)
				return
			}
			out = b
		}
		binary.BigEndian.PutUint16(whdr[:], uint16(len(out)))
		c.SetWriteDeadline(time.Now().Add(tcpIdle))
		bufs := net.Buffers{whdr[:], out}
		if _, err := bufs.WriteTo(c); err != nil {
			s.stats.dropWrite.Add(1)
			return
		}
	}
}

// ListenAndServe listens on UDP and TCP on each of addrs (normally port 53
// of [ServiceV4] and [ServiceV6] once the overlay has put them on its TUN) and
// serves until ctx is done or one listener fails; then it stops them all.
// A zero port picks one, the same for UDP and TCP. The overlay, when it uses
// a userspace network stack, calls ServeUDP and ServeTCP on that stack's
// sockets instead.
func (s *Server) ListenAndServe(ctx context.Context, addrs []netip.AddrPort) error {
	if len(addrs) == 0 {
		return errors.New("dns: ListenAndServe: no addresses")
	}
	var lc net.ListenConfig
	var pcs []net.PacketConn
	var lns []net.Listener
	closeAll := func() {
		for _, pc := range pcs {
			pc.Close()
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, a := range addrs {
		pc, err := lc.ListenPacket(ctx, "udp", a.String())
		if err != nil {
			closeAll()
			return fmt.Errorf("dns: listen udp %v: %w", a, err)
		}
		pcs = append(pcs, pc)
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ta := netip.AddrPortFrom(a.Addr(), uint16(port))
		ln, err := lc.Listen(ctx, "tcp", ta.String())
		if err != nil {
			closeAll()
			return fmt.Errorf("dns: listen tcp %v: %w", ta, err)
		}
		lns = append(lns, ln)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(pcs)+len(lns))
	var wg sync.WaitGroup
	for _, pc := range pcs {
		wg.Go(func() { errc <- s.ServeUDP(ctx, pc) })
	}
	for _, ln := range lns {
		wg.Go(func() { errc <- s.ServeTCP(ctx, ln) })
	}
	var first error
	for range len(pcs) + len(lns) {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	wg.Wait()
	if first == nil {
		return ctx.Err()
	}
	return first
}
