package link

// Accepting stream links on a port anyone can reach. A server holds a
// connection for free until it authenticates (the Handshake), so the
// connections not yet authenticated are bounded in total and per source
// address (Gate), each has a deadline, and a failing Accept (EMFILE under a
// flood, ECONNABORTED, anything) is retried with a backoff, as net/http's
// Server does, instead of ending the server.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// MaxPendingPerSource bounds the connections from one IP address that a
// server holds before they authenticate.
const MaxPendingPerSource = 8

// Gate bounds connections that have not authenticated yet: at most total at
// once, at most perSource from one IP address. The zero Gate admits
// nothing; use NewGate. It is safe for concurrent use.
type Gate struct {
	total, perSource int

	mu   sync.Mutex // guards the following
	n    int
	from map[netip.Addr]int
}

// NewGate returns a Gate for total connections, perSource per address.
func NewGate(total, perSource int) *Gate {
	return &Gate{total: total, perSource: perSource, from: map[netip.Addr]int{}}
}

// Admit takes a slot for a connection from remote. When ok, release gives
// it back; release may be called any number of times (the first counts).
func (g *Gate) Admit(remote net.Addr) (release func(), ok bool) {
	var a netip.Addr
	if ta, isTCP := remote.(*net.TCPAddr); isTCP {
		a = ta.AddrPort().Addr().Unmap()
	} else if ap, err := netip.ParseAddrPort(remote.String()); err == nil {
		a = ap.Addr().Unmap()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n >= g.total || g.from[a] >= g.perSource {
		return nil, false
	}
	g.n++
	g.from[a]++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.n--
			if g.from[a]--; g.from[a] <= 0 {
				delete(g.from, a)
			}
		})
	}, true
}

// Pending returns the connections admitted and not released.
func (g *Gate) Pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// GatedConn is a connection that holds a Gate slot until it is closed or
// Release is called (once it has authenticated).
type GatedConn struct {
	net.Conn
	release func()
}

// NewGatedConn ties release to c's Close.
func NewGatedConn(c net.Conn, release func()) *GatedConn {
	return &GatedConn{Conn: c, release: release}
}

// Release gives the slot back without closing the connection.
func (c *GatedConn) Release() { c.release() }

// Close closes the connection and gives its slot back.
func (c *GatedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// Accept returns ln's next connection. It retries a failing Accept with a
// backoff from 5 ms doubling to 1 s, like net/http's Server, and returns an
// error only when ctx is done or ln is closed (net.ErrClosed). logf, if not
// nil, hears of each failure.
func Accept(ctx context.Context, ln net.Listener, logf func(string, ...any)) (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		if logf != nil {
			logf("link: accept on %v: %v; retrying in %v", ln.Addr(), err, backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}
