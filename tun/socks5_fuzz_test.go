package tun

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// memConn is a net.Conn over fixed input: Read drains in then returns EOF,
// Write appends to out. It never blocks, so a handshake over it cannot hang.
type memConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)         { return c.in.Read(p) }
func (c *memConn) Write(p []byte) (int, error)        { return c.out.Write(p) }
func (c *memConn) Close() error                       { return nil }
func (c *memConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

// FuzzSOCKSHandshake feeds random client bytes to a whole proxy connection
// (sniffing, SOCKS5 or HTTP handshake, connect, relay) and to the bare
// SOCKS5 parser: no panic, no hang, and every reply is well formed.
func FuzzSOCKSHandshake(f *testing.F) {
	for _, seed := range [][]byte{
		{5, 1, 0, 5, 1, 0, 1, 100, 64, 0, 2, 0, 7, 'h', 'i'},
		{5, 1, 0, 5, 1, 0, 4, 0xfd, 0x7a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 22},
		append(append([]byte{5, 2, 2, 0, 5, 1, 0, 3, 12}, "b.alice.glow"...), 0, 80),
		{5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80},
		{5, 1, 0, 5, 1, 0, 9},
		{5, 1, 2},
		append(append(append([]byte{5, 1, 2, 1, 5}, "alice"...), 6), append([]byte("s3cret"), 5, 1, 0, 1, 100, 64, 0, 2, 0, 7)...),
		append(append(append([]byte{5, 2, 0, 2, 1, 5}, "alice"...), 5), "wrong"...),
		{5, 255},
		{5},
		[]byte("CONNECT nas.glow:22 HTTP/1.1\r\nHost: nas.glow:22\r\n\r\nSSH-2.0"),
		[]byte("GET / HTTP/1.0\r\n\r\n"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// The bare parser.
		c := &memConn{in: bytes.NewReader(in)}
		req, err := socksHandshake(c.in, &c.out, nil)
		if err == nil {
			if req.host == "" || (!validHost(req.host)) {
				t.Fatalf("accepted request with host %q", req.host)
			}
			if out := c.out.Bytes(); !bytes.Equal(out, []byte{5, 0}) {
				t.Fatalf("success wrote %x, want method selection only", out)
			}
		} else if out := c.out.Bytes(); len(out) > 0 {
			checkSOCKSOutput(t, out)
		}

		// The bare parser with credentials required.
		c = &memConn{in: bytes.NewReader(in)}
		req, err = socksHandshake(c.in, &c.out, &credentials{user: "alice", pass: "s3cret"})
		if err == nil {
			if !bytes.Contains(in, []byte("alice")) || !bytes.Contains(in, []byte("s3cret")) {
				t.Fatalf("accepted a client that never sent the credentials: %x", in)
			}
			if out := c.out.Bytes(); !bytes.Equal(out, []byte{5, 2, 1, 0}) {
				t.Fatalf("success with credentials wrote %x, want method 2 and auth success only", out)
			}
		} else if out := c.out.Bytes(); len(out) > 0 {
			checkSOCKSAuthOutput(t, out)
		}

		// The whole connection, with a target that is an empty memConn.
		p := newProxy(ProxyConfig{
			Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if _, _, err := net.SplitHostPort(addr); err != nil {
					t.Errorf("Dial got bad address %q", addr)
				}
				if len(addr)%3 == 0 {
					return nil, os.ErrDeadlineExceeded
				}
				return &memConn{in: bytes.NewReader(nil)}, nil
			},
		})
		c = &memConn{in: bytes.NewReader(in)}
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.serveConn(context.Background(), c)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("serveConn hung")
		}
		if len(in) > 0 && in[0] == socksVersion && c.out.Len() > 0 {
			checkSOCKSOutput(t, c.out.Bytes())
		}
	})
}

// checkSOCKSOutput checks that out is a method selection, optionally
// followed by one well-formed reply.
func checkSOCKSOutput(t *testing.T, out []byte) {
	t.Helper()
	if len(out) < 2 || out[0] != 5 || (out[1] != 0 && out[1] != 0xff) {
		t.Fatalf("bad method selection %x", out)
	}
	rest := out[2:]
	if out[1] == 0xff || len(rest) == 0 {
		if len(rest) != 0 {
			t.Fatalf("bytes after refusing all methods: %x", out)
		}
		return
	}
	if len(rest) < 4 || rest[0] != 5 || rest[1] > socksAddrTypeNotSupport || rest[2] != 0 {
		t.Fatalf("bad reply %x", rest)
	}
	n := map[byte]int{1: 4, 4: 16}[rest[3]]
	if n == 0 || len(rest) < 4+n+2 {
		t.Fatalf("bad reply address %x", rest)
	}
	if rest[1] != socksSucceeded && len(rest) != 4+n+2 {
		t.Fatalf("bytes after an error reply: %x", rest)
	}
}

// checkSOCKSAuthOutput checks what a handshake that requires credentials
// wrote before failing: a refusal of every method, or the choice of
// username/password, its failure status, or its success and one reply.
func checkSOCKSAuthOutput(t *testing.T, out []byte) {
	t.Helper()
	switch {
	case bytes.Equal(out, []byte{5, 0xff}), bytes.Equal(out, []byte{5, 2}),
		bytes.Equal(out, []byte{5, 2, 1, 1}), bytes.Equal(out, []byte{5, 2, 1, 0}):
	case len(out) > 4 && bytes.Equal(out[:4], []byte{5, 2, 1, 0}):
		checkSOCKSOutput(t, append([]byte{5, 0}, out[4:]...))
	default:
		t.Fatalf("bad output with credentials required: %x", out)
	}
}

var _ io.ReadWriter = (*memConn)(nil)
