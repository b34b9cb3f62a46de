package tun

// The proxy's path for one client connection, in order:
//
//  1. accept (ServeSOCKS5's loop; one goroutine per connection after this)
//  2. sniff: peek the first byte; 0x05 is SOCKS5, an ASCII capital letter
//     is an HTTP request line
//  3. handshake (socks5.go or proxy_http.go) under HandshakeTimeout, reading
//     at most maxHandshakeBytes through one bufio.Reader
//  4. connect: Resolve (optional), then Dial under DialTimeout; the reply
//     tells the client the outcome
//  5. relay: two io.Copy, one per direction, each half-closing its
//     destination at EOF; an error in either closes both connections.
//     Bytes the client sent early and the bufio.Reader holds go first.
//
// Every connection goroutine belongs to ServeSOCKS5, which waits for all of
// them; cancelling its ctx closes every connection.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ErrNotAllowed may be returned (wrapped) by ProxyConfig.Dial to refuse a
// target by policy; the client then gets SOCKS reply 0x02 ("connection not
// allowed by ruleset") or HTTP 403.
var ErrNotAllowed = errors.New("tun: connection not allowed by policy")

// ProxyConfig configures ServeSOCKS5. The zero value proxies to the host's
// own network stack.
type ProxyConfig struct {
	// Dial connects to the target, with network "tcp" and addr "host:port".
	// host is an IP literal, or a name when Resolve is nil. nil means a
	// net.Dialer. Errors wrapping syscall.ECONNREFUSED, ENETUNREACH,
	// EHOSTUNREACH, a timeout, or ErrNotAllowed give the matching reply code
	// (userspace.Stack.DialContext returns such errors).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Resolve turns a domain-name target into an address (for example via
	// glow's own names). nil passes names to Dial unresolved.
	Resolve func(ctx context.Context, host string) (netip.Addr, error)
	// Logf logs one line per failed connection; nil discards.
	Logf func(format string, args ...any)
	// HandshakeTimeout bounds reading the client's greeting and request, and
	// writing the reply; 0 means 10s.
	HandshakeTimeout time.Duration
	// DialTimeout bounds Resolve plus Dial; 0 means 30s.
	DialTimeout time.Duration
	// User and Password, when User is not empty, are required of every
	// client: SOCKS5 username/password authentication (RFC 1929) or, for
	// HTTP CONNECT, a Proxy-Authorization: Basic header. Without them,
	// anyone who can connect to the listener may use the proxy: on a
	// loopback address that is every user of the machine.
	User, Password string
}

// maxHandshakeBytes bounds what a client may send before its request is
// complete (a SOCKS5 request is at most 520 bytes; this leaves room for
// HTTP CONNECT headers).
const maxHandshakeBytes = 64 << 10

type proxy struct {
	dial             func(ctx context.Context, network, addr string) (net.Conn, error)
	resolve          func(ctx context.Context, host string) (netip.Addr, error)
	logf             func(format string, args ...any)
	handshakeTimeout time.Duration
	dialTimeout      time.Duration
	creds            *credentials // nil: no authentication
}

func newProxy(cfg ProxyConfig) *proxy {
	p := &proxy{
		dial:             cfg.Dial,
		resolve:          cfg.Resolve,
		logf:             cfg.Logf,
		handshakeTimeout: cfg.HandshakeTimeout,
		dialTimeout:      cfg.DialTimeout,
	}
	if cfg.User != "" {
		p.creds = &credentials{user: cfg.User, pass: cfg.Password}
	}
	if p.dial == nil {
		p.dial = (&net.Dialer{}).DialContext
	}
	if p.logf == nil {
		p.logf = func(string, ...any) {}
	}
	if p.handshakeTimeout <= 0 {
		p.handshakeTimeout = 10 * time.Second
	}
	if p.dialTimeout <= 0 {
		p.dialTimeout = 30 * time.Second
	}
	return p
}

// ServeSOCKS5 serves SOCKS5 (RFC 1928, CONNECT only; no authentication, or
// RFC 1929 username/password with cfg.User) and HTTP CONNECT on ln until ctx
// is done or ln fails.
//
// ServeSOCKS5 owns ln and closes it. When it returns, every connection it
// accepted has been closed and every goroutine it started has exited. It
// returns nil when ctx is done, else the error from Accept (which wraps
// net.ErrClosed if ln was closed by someone else).
func ServeSOCKS5(ctx context.Context, ln net.Listener, cfg ProxyConfig) error {
	p := newProxy(cfg)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // runs before wg.Wait: closes every connection
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() { // EMFILE and the like
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.logf("proxy: accept: %v; retrying in %v", err, backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-ctx.Done():
					return nil
				}
			}
			return fmt.Errorf("tun: proxy accept: %w", err)
		}
		backoff = 0
		wg.Go(func() { p.serveConn(ctx, c) })
	}
}

// serveConn runs stages 2 to 5 for one client connection and closes it.
func (p *proxy) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	c.SetDeadline(time.Now().Add(p.handshakeTimeout))
	lr := &io.LimitedReader{R: c, N: maxHandshakeBytes}
	br := bufio.NewReaderSize(lr, 4096)
	first, err := br.Peek(1)
	if err != nil {
		return
	}
	var target net.Conn
	switch b := first[0]; {
	case b == socksVersion:
		target, err = p.socks(ctx, br, c)
	case 'A' <= b && b <= 'Z':
		target, err = p.httpConnect(ctx, br, c)
	default:
		err = fmt.Errorf("unknown protocol (first byte %#02x)", b)
	}
	if err != nil {
		p.logf("proxy: %v: %v", c.RemoteAddr(), err)
		return
	}
	defer target.Close()
	stopTarget := context.AfterFunc(ctx, func() { target.Close() })
	defer stopTarget()

	c.SetDeadline(time.Time{})
	lr.N = math.MaxInt64
	relay(c, br, target)
}

// connect resolves (if configured) and dials host:port under DialTimeout.
// c's deadline is lifted for the dial and set again for the reply.
func (p *proxy) connect(ctx context.Context, c net.Conn, host string, port uint16) (net.Conn, error) {
	c.SetDeadline(time.Time{})
	defer c.SetDeadline(time.Now().Add(p.handshakeTimeout))
	ctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
	defer cancel()
	if _, err := netip.ParseAddr(host); err != nil && p.resolve != nil {
		ip, err := p.resolve(ctx, host)
		if err != nil {
			return nil, &resolveError{host: host, err: err}
		}
		host = ip.String()
	}
	t, err := p.dial(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
	if err != nil {
		return nil, err
	}
	return t, nil
}

type resolveError struct {
	host string
	err  error
}

func (e *resolveError) Error() string { return fmt.Sprintf("resolve %q: %v", e.host, e.err) }
func (e *resolveError) Unwrap() error { return e.err }

// relay copies both ways between the client (read through cr, which holds
// any bytes buffered during the handshake) and the target, until both
// directions reach EOF or either fails.
func relay(client net.Conn, cr io.Reader, target net.Conn) {
	var wg sync.WaitGroup
	wg.Go(func() { copyHalf(target, cr, client) })
	copyHalf(client, target, target)
	wg.Wait()
}

// copyHalf copies src into dst, then half-closes dst. On an error other
// than EOF it closes both dst and srcConn, which ends the other direction.
func copyHalf(dst net.Conn, src io.Reader, srcConn net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		srcConn.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
}

// Dial outcomes a proxy reply distinguishes.
const (
	outcomeFailure = iota
	outcomeNotAllowed
	outcomeNetUnreachable
	outcomeHostUnreachable
	outcomeRefused
	outcomeTimeout
)

func dialOutcome(err error) int {
	var re *resolveError
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case errors.Is(err, ErrNotAllowed):
		return outcomeNotAllowed
	case errors.Is(err, syscall.ECONNREFUSED):
		return outcomeRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return outcomeNetUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN),
		errors.As(err, &re), errors.As(err, &dnsErr):
		return outcomeHostUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return outcomeTimeout
	}
	return outcomeFailure
}
