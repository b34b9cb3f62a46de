package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Forwarding path: a query for a name that is not glow's
//
//	Handle ─► forward: pack once ─► for each upstream in order:
//	    exchange over the client's transport (fresh socket, random id,
//	    per-upstream timeout) ─► TC over UDP? exchange again over TCP
//	─► first answer that is not SERVFAIL/REFUSED, with the client's id
//	─► none: the last SERVFAIL/REFUSED seen, or our own SERVFAIL.
//
// Each exchange dials its own socket, so the source port is random per query
// (with the random id, that is the usual defence against spoofed answers), and
// a slow upstream cannot hold up another query.

var (
	errIDMismatch = errors.New("reply id or question does not match the query")
	errShort      = errors.New("reply shorter than a DNS header")
)

// bufPool holds 64 KiB buffers for upstream replies and incoming queries.
var bufPool = sync.Pool{New: func() any { b := make([]byte, dns.MaxMsgSize); return &b }}

// forward sends req to the upstreams in order and returns the first good
// answer; its id is not yet the client's (finish sets it).
func (s *Server) forward(ctx context.Context, req *dns.Msg, tcp bool) *dns.Msg {
	wire, err := req.Pack()
	if err != nil {
		s.stats.formErr.Add(1)
		m := new(dns.Msg).SetRcodeFormatError(req)
		return m
	}
	q := req.Question[0]
	var fallback *dns.Msg
	ups, _ := s.forwardTo()
	for _, up := range ups {
		if ctx.Err() != nil {
			break
		}
		resp, err := s.exchange(ctx, up, wire, q, tcp)
		if err == nil && resp.Truncated && !tcp {
			resp, err = s.exchange(ctx, up, wire, q, true)
		}
		if err != nil {
			s.stats.upstreamErrors.Add(1)
			s.logf("dns: forward %s %s to %v: %v", q.Name, dns.TypeToString[q.Qtype], up, err)
			continue
		}
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			s.stats.upstreamErrors.Add(1)
			fallback = resp
			continue
		}
		s.stats.forwarded.Add(1)
		return resp
	}
	if fallback != nil {
		s.stats.forwarded.Add(1)
		return fallback
	}
	s.stats.servFail.Add(1)
	return s.reply(req, dns.RcodeServerFailure)
}

// exchange sends the packed query wire to up over UDP or TCP and reads the
// matching reply, within s.timeout.
func (s *Server) exchange(ctx context.Context, up netip.AddrPort, wire []byte, q dns.Question, tcp bool) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	network := "udp"
	if tcp {
		network = "tcp"
	}
	if len(wire) > dns.MaxMsgSize-2 {
		return nil, errors.New("query too large to forward")
	}
	c, err := s.dial(ctx, network, up.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// Close on cancellation too (a deadline alone misses a parent cancel).
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp

	id := uint16(rand.Uint32())
	if tcp {
		// One write: length prefix and message.
		out := buf[:2+len(wire)]
		binary.BigEndian.PutUint16(out, uint16(len(wire)))
		copy(out[2:], wire)
		binary.BigEndian.PutUint16(out[2:], id)
		if _, err := c.Write(out); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, buf[:2]); err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint16(buf))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return nil, err
		}
		resp, err := parseReply(buf[:n], id, q)
		return resp, err
	}
	out := buf[:len(wire)]
	copy(out, wire)
	binary.BigEndian.PutUint16(out, id)
	if _, err := c.Write(out); err != nil {
		return nil, err
	}
	for {
		n, err := c.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("no reply: %w", ctx.Err())
			}
			return nil, err
		}
		resp, err := parseReply(buf[:n], id, q)
		if err == errIDMismatch || err == errShort {
			continue // stray or spoofed datagram: keep waiting
		}
		return resp, err
	}
}

// parseReply unpacks an upstream reply and checks that it answers the query
// (id and question).
func parseReply(b []byte, id uint16, q dns.Question) (*dns.Msg, error) {
	if len(b) < 12 {
		return nil, errShort
	}
	if binary.BigEndian.Uint16(b) != id || b[2]&0x80 == 0 {
		return nil, errIDMismatch
	}
	resp := new(dns.Msg)
	if err := resp.Unpack(b); err != nil {
		if resp.Truncated && len(resp.Question) == 1 {
			// A truncated reply may be cut mid-record; the header is
			// enough to retry over TCP.
			resp.Answer, resp.Ns, resp.Extra = nil, nil, nil
		} else {
			return nil, fmt.Errorf("bad reply: %w", err)
		}
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, q.Name) ||
		resp.Question[0].Qtype != q.Qtype || resp.Question[0].Qclass != q.Qclass {
		return nil, errIDMismatch
	}
	return resp, nil
}
