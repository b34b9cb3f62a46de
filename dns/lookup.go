package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// ErrNoHost is the error of Lookup for a name that does not exist
// (NXDOMAIN) or has no address.
var ErrNoHost = errors.New("no such host")

// Lookup resolves name to addresses by asking the resolver at server,
// over UDP connections from dial: A first, then AAAA when there is no A.
// It is the stub resolver of a userspace node's proxy, which has no
// resolver of its own to ask while an exit node is in use: it asks the
// exit node's, through the tunnel. Each query has its own socket and a
// random id, and the reply must match both id and question; ctx bounds
// the whole lookup (no deadline: 5 s).
func Lookup(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), server netip.AddrPort, name string) ([]netip.Addr, error) {
	if _, ok := dns.IsDomainName(name); !ok || name == "" {
		return nil, fmt.Errorf("dns: %q is not a domain name", name)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	var out []netip.Addr
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r, err := lookupOne(ctx, dial, server, dns.Fqdn(name), qt)
		if err != nil {
			return nil, err
		}
		switch r.Rcode {
		case dns.RcodeSuccess:
		case dns.RcodeNameError:
			return nil, fmt.Errorf("%s: %w", name, ErrNoHost)
		default:
			return nil, fmt.Errorf("dns: %s %s at %v: %s", name, dns.TypeToString[qt], server, dns.RcodeToString[r.Rcode])
		}
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					out = append(out, a)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA.To16()); ok {
					out = append(out, a.Unmap())
				}
			}
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, fmt.Errorf("%s: %w", name, ErrNoHost)
}

// lookupOne sends one query and reads its reply.
func lookupOne(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), server netip.AddrPort, fqdn string, qt uint16) (*dns.Msg, error) {
	c, err := dial(ctx, "udp", server.String())
	if err != nil {
		return nil, fmt.Errorf("dns: %v: %w", server, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	q := new(dns.Msg).SetQuestion(fqdn, qt)
	wire, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	if _, err := c.Write(wire); err != nil {
		return nil, fmt.Errorf("dns: %v: %w", server, err)
	}
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("dns: %v: no reply: %w", server, ctx.Err())
			}
			return nil, fmt.Errorf("dns: %v: %w", server, err)
		}
		r, err := parseReply(buf[:n], q.Id, q.Question[0])
		if err == errIDMismatch || err == errShort {
			continue // stray or spoofed datagram: keep waiting
		}
		if err != nil {
			return nil, fmt.Errorf("dns: %v: %w", server, err)
		}
		return r, nil
	}
}
