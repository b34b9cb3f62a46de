package link

// TCP stream links: a Handshake over a TCP connection with Nagle off, since
// every flush is a batch of packets that should leave at once.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// MaxPendingHandshakes bounds the handshakes a server runs at once; a
// connection beyond it is closed at once, so a flood of idle connections
// cannot pin memory and goroutines.
const MaxPendingHandshakes = 64

// DialTCP connects to addr ("host:port") and runs Handshake over it; ctx
// bounds both.
func DialTCP(ctx context.Context, addr string, self Identity, verify Verify) (*Stream, error) {
	var d net.Dialer
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
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("link: listen tcp %s: %w", addr, err)
	}
	return ln, nil
}

// ServeTCP accepts connections on ln, runs Handshake on each in its own
// goroutine (at most MaxPendingHandshakes at once), and hands every
// authenticated Stream to accept, which then owns it. accept should return
// promptly (start a goroutine for a long-lived reader).
//
// ServeTCP returns when ctx is done (it then closes ln) or ln fails, after
// every handshake and accept call it started has returned. A ctx that ends
// returns nil.
func ServeTCP(ctx context.Context, ln net.Listener, self Identity, verify Verify, accept func(*Stream)) error {
	if verify == nil || accept == nil {
		return errors.New("link: ServeTCP: nil verify or accept")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	sem := make(chan struct{}, MaxPendingHandshakes)
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("link: accept on %v: %w", ln.Addr(), err)
		}
		backoff = 0
		select {
		case sem <- struct{}{}:
		default:
			c.Close()
			continue
		}
		tuneTCP(c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Handshake(ctx, c, self, verify)
			<-sem
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
