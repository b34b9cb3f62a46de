package tun

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"

	"glow/internal/leaktest"
	"glow/tun/tuntest"
	"glow/tun/userspace"
)

var (
	addrA4 = netip.MustParseAddr("100.64.0.1")
	addrA6 = netip.MustParseAddr("fd7a:676c:6f77::1")
	addrB4 = netip.MustParseAddr("100.64.0.2")
	addrB6 = netip.MustParseAddr("fd7a:676c:6f77::2")
)

// newNetstackPair returns two netstacks joined back to back in memory.
func newNetstackPair(t *testing.T) (a, b *userspace.Stack, ca, cb *tuntest.Counting) {
	t.Helper()
	a, err := userspace.Open([]netip.Addr{addrA4, addrA6}, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err = userspace.Open([]netip.Addr{addrB4, addrB6}, 0)
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	ca, cb = tuntest.NewCounting(a.Device()), tuntest.NewCounting(b.Device())
	wait := tuntest.Pipe(ca, cb)
	t.Cleanup(func() {
		a.Close()
		b.Close()
		wait()
	})
	return a, b, ca, cb
}

// serveEcho echoes every connection accepted on ln, half-closing at EOF.
// At the end of the test it closes the connections still open: their
// peers' last FIN or RST may have been lost (a TUN's queue drops under
// load, and nothing resends a RST), and an echo blocked on a full window
// would wait forever.
func serveEcho(t *testing.T, ln net.Listener) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
				c.(interface{ CloseWrite() error }).CloseWrite()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// startProxy serves cfg on 127.0.0.1 until the test ends, and checks that
// ServeSOCKS5 returns nil then.
func startProxy(t *testing.T, cfg ProxyConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logf = t.Logf
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeSOCKS5(ctx, ln, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeSOCKS5 = %v, want nil after cancel", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("ServeSOCKS5 did not return after cancel")
		}
	})
	return ln.Addr().String()
}

// socksDial performs a raw SOCKS5 CONNECT (or cmd) and returns the reply
// code and the connection, positioned after the reply.
func socksDial(t *testing.T, proxyAddr string, cmd, atyp byte, addr []byte, port uint16) (byte, *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte{5, 1, 0, 5, cmd, 0, atyp}
	if atyp == socksAtypDomain {
		msg = append(msg, byte(len(addr)))
	}
	msg = append(msg, addr...)
	msg = binary.BigEndian.AppendUint16(msg, port)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr != [2]byte{5, 0} {
		t.Fatalf("method selection = %x, %v", hdr, err)
	}
	var rep [4]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	n := map[byte]int{1: 4, 4: 16}[rep[3]]
	if n == 0 {
		t.Fatalf("reply address type %#x", rep[3])
	}
	if _, err := io.ReadFull(c, make([]byte, n+2)); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	c.SetDeadline(time.Time{})
	return rep[1], c.(*net.TCPConn)
}

// checkEcho writes data, half-closes, and expects the same bytes then EOF.
func checkEcho(t *testing.T, c *net.TCPConn, data []byte) {
	t.Helper()
	// Bounded, but loosely: under load a lost segment's retransmission
	// backs off (0.2, 0.4, ... 12.8 s).
	c.SetDeadline(time.Now().Add(45 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if werr := <-errc; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo: got %d bytes, want %d (equal prefix: %v)", len(got), len(data), bytes.HasPrefix(data, got))
	}
}

func TestProxyNetstackEcho(t *testing.T) {
	leaktest.Check(t)
	a, b, ca, cb := newNetstackPair(t)
	ln, err := b.Net().ListenTCPAddrPort(netip.AddrPortFrom(addrB4, 7))
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, ln)
	ln6, err := b.Net().ListenTCPAddrPort(netip.AddrPortFrom(addrB6, 7))
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, ln6)

	paddr := startProxy(t, ProxyConfig{
		Dial: a.DialContext,
		Resolve: func(ctx context.Context, host string) (netip.Addr, error) {
			switch host {
			case "b.alice.glow":
				return addrB4, nil
			case "b6.alice.glow":
				return addrB6, nil
			}
			return netip.Addr{}, fmt.Errorf("no such name %q", host)
		},
	})

	t.Run("x/net/proxy", func(t *testing.T) {
		d, err := xproxy.SOCKS5("tcp", paddr, nil, xproxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range []string{"100.64.0.2:7", "[fd7a:676c:6f77::2]:7", "b.alice.glow:7"} {
			c, err := d.Dial("tcp", target)
			if err != nil {
				t.Fatalf("dial %s: %v", target, err)
			}
			msg := []byte("hello " + target)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("%s: echo %q, %v", target, got, err)
			}
			c.Close()
		}
	})

	big := make([]byte, 1<<20)
	rand.Read(big)
	for _, tc := range []struct {
		name string
		atyp byte
		addr []byte
	}{
		{"ipv4", socksAtypIPv4, addrB4.AsSlice()},
		{"ipv6", socksAtypIPv6, addrB6.AsSlice()},
		{"domain", socksAtypDomain, []byte("b.alice.glow")},
		{"domain-v6", socksAtypDomain, []byte("b6.alice.glow")},
		{"literal-as-domain", socksAtypDomain, []byte("100.64.0.2")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, c := socksDial(t, paddr, socksCmdConnect, tc.atyp, tc.addr, 7)
			if rep != socksSucceeded {
				t.Fatalf("reply %#x, want success", rep)
			}
			checkEcho(t, c, big) // 1 MiB, then half-close both ways
		})
	}

	t.Run("http-connect", func(t *testing.T) {
		c, err := net.Dial("tcp", paddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		// The early "ping" after the headers must reach the target too.
		fmt.Fprintf(c, "CONNECT b.alice.glow:7 HTTP/1.1\r\nHost: b.alice.glow:7\r\n\r\nping")
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200 ") {
			t.Fatalf("status line %q, %v", line, err)
		}
		if l, _ := br.ReadString('\n'); l != "\r\n" {
			t.Fatalf("header end %q", l)
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
			t.Fatalf("echo %q, %v", got, err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		rep, _ := socksDial(t, paddr, socksCmdConnect, socksAtypIPv4, addrB4.AsSlice(), 9)
		if rep != socksConnRefused {
			t.Fatalf("reply %#x, want %#x (connection refused)", rep, socksConnRefused)
		}
	})
	t.Run("unknown-name", func(t *testing.T) {
		rep, _ := socksDial(t, paddr, socksCmdConnect, socksAtypDomain, []byte("nope.glow"), 7)
		if rep != socksHostUnreachable {
			t.Fatalf("reply %#x, want %#x (host unreachable)", rep, socksHostUnreachable)
		}
	})
	t.Run("bind", func(t *testing.T) {
		rep, _ := socksDial(t, paddr, 0x02, socksAtypIPv4, addrB4.AsSlice(), 7)
		if rep != socksCmdNotSupported {
			t.Fatalf("reply %#x, want %#x (command not supported)", rep, socksCmdNotSupported)
		}
	})
	t.Run("udp-associate", func(t *testing.T) {
		rep, _ := socksDial(t, paddr, 0x03, socksAtypIPv4, addrB4.AsSlice(), 7)
		if rep != socksCmdNotSupported {
			t.Fatalf("reply %#x, want %#x (command not supported)", rep, socksCmdNotSupported)
		}
	})

	if ca.Reads.Load() == 0 || cb.Reads.Load() == 0 || ca.Writes.Load() == 0 {
		t.Errorf("counters: a read %d wrote %d, b read %d wrote %d", ca.Reads.Load(), ca.Writes.Load(), cb.Reads.Load(), cb.Writes.Load())
	}
}

func TestProxyRejects(t *testing.T) {
	leaktest.Check(t)
	dialed := make(chan string, 1)
	paddr := startProxy(t, ProxyConfig{
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed <- addr
			return nil, fmt.Errorf("policy: %w", ErrNotAllowed)
		},
	})
	exchange := func(t *testing.T, send []byte, wantPrefix []byte) {
		t.Helper()
		c, err := net.Dial("tcp", paddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(send)
		got, _ := io.ReadAll(c) // the proxy closes after the error reply
		if !bytes.HasPrefix(got, wantPrefix) {
			t.Fatalf("got %q, want prefix %q", got, wantPrefix)
		}
	}
	t.Run("no-acceptable-method", func(t *testing.T) {
		exchange(t, []byte{5, 1, 2}, []byte{5, 0xff})
	})
	t.Run("bad-address-type", func(t *testing.T) {
		exchange(t, []byte{5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, []byte{5, 0, 5, socksAddrTypeNotSupport})
	})
	t.Run("not-allowed-and-unresolved-name", func(t *testing.T) {
		req := append([]byte{5, 1, 0, 5, 1, 0, 3, 8}, "nas.glow"...)
		exchange(t, append(req, 0, 22), []byte{5, 0, 5, socksNotAllowed})
		if got := <-dialed; got != "nas.glow:22" {
			t.Errorf("Dial got %q, want the name passed through", got)
		}
	})
	t.Run("bad-domain", func(t *testing.T) {
		req := append([]byte{5, 1, 0, 5, 1, 0, 3, 5}, "a:b:c"...)
		exchange(t, append(req, 0, 22), []byte{5, 0, 5, socksHostUnreachable})
	})
	t.Run("http-get", func(t *testing.T) {
		exchange(t, []byte("GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n"), []byte("HTTP/1.1 405 "))
	})
	t.Run("http-forbidden", func(t *testing.T) {
		exchange(t, []byte("CONNECT nas.glow:22 HTTP/1.1\r\n\r\n"), []byte("HTTP/1.1 403 "))
		<-dialed
	})
	t.Run("garbage", func(t *testing.T) {
		exchange(t, []byte{0x16, 3, 1}, nil)
	})
}

func TestProxyHandshakeTimeout(t *testing.T) {
	leaktest.Check(t)
	paddr := startProxy(t, ProxyConfig{HandshakeTimeout: 100 * time.Millisecond})
	c, err := net.Dial("tcp", paddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{5, 1}) // and never the method list
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read = %v, want EOF (proxy hung up)", err)
	}
}

// TestProxyCancelClosesRelays checks that ServeSOCKS5 returns, closing a
// connection in the middle of a relay, when its ctx is cancelled.
func TestProxyCancelClosesRelays(t *testing.T) {
	leaktest.Check(t)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeSOCKS5(ctx, ln, ProxyConfig{}) }()
	ap := netip.MustParseAddrPort(target.Addr().String())
	rep, c := socksDial(t, ln.Addr().String(), socksCmdConnect, socksAtypIPv4, ap.Addr().AsSlice(), ap.Port())
	if rep != socksSucceeded {
		t.Fatalf("reply %#x", rep)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeSOCKS5 = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeSOCKS5 did not return")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("relayed connection still open after ServeSOCKS5 returned")
	}
}

func TestProxyListenerClosed(t *testing.T) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ServeSOCKS5(context.Background(), ln, ProxyConfig{}) }()
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ServeSOCKS5 = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeSOCKS5 did not return")
	}
}
