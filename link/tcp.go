package link

// TCP stream links: a Handshake over a TCP connection with Nagle off, since
// every flush is a batch of packets that should leave at once.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"glow/internal/underlay"
)

// MaxPendingHandshakes bounds the connections a server holds before they
// authenticate (see Gate); a connection beyond it is closed at once, so a
// flood of idle connections cannot pin memory and goroutines.
const MaxPendingHandshakes = 64

// DialTCP connects to addr ("host:port") and runs Handshake over it; ctx
// bounds both.
func DialTCP(ctx context.Context, addr string, self Identity, verify Verify) (*Stream, error) {
	d := net.Dialer{Control: underlay.Control}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("link: tcp %s: %w", addr, err)
	}
	tuneTCP(c)
	s, err := Handshake(ctx, c, self, verify)
	if err != nil {
		return nil, fmt.Errorf("link: tcp %s: %w", addr, err)
	}
	return s, nil
}

// ListenTCP listens on addr ("host:port", port 0 for any) for ServeTCP.
func ListenTCP(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: underlay.Control} // accepted connections inherit the mark
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("link: listen tcp %s: %w", addr, err)
	}
	return ln, nil
}

// ServeTCP accepts connections on ln, runs Handshake on each in its own
// goroutine (at most MaxPendingHandshakes at once, MaxPendingPerSource from
// one address), and hands every authenticated Stream to accept, which then
// owns it. accept should return promptly (start a goroutine for a
// long-lived reader). A failing Accept is retried with a backoff (see
// Accept).
//
// ServeTCP returns when ctx is done (it then closes ln) or ln is closed,
// after every handshake and accept call it started has returned. A ctx
// that ends returns nil.
func ServeTCP(ctx context.Context, ln net.Listener, self Identity, verify Verify, accept func(*Stream)) error {
	if verify == nil || accept == nil {
		return errors.New("link: ServeTCP: nil verify or accept")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	gate := NewGate(MaxPendingHandshakes, MaxPendingPerSource)
	for {
		c, err := Accept(ctx, ln, nil)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("link: accept on %v: %w", ln.Addr(), err)
		}
		release, ok := gate.Admit(c.RemoteAddr())
		if !ok {
			c.Close()
			continue
		}
		tuneTCP(c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Handshake(ctx, c, self, verify)
			release()
			if err != nil {
				return // a failed handshake is the peer's problem; it sees the close
			}
			accept(s)
		}()
	}
}

func tuneTCP(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		tc.SetKeepAlive(true)
		tc.SetKeepAlivePeriod(15 * time.Second)
	}
}
