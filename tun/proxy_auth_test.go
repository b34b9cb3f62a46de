package tun

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"glow/internal/leaktest"
)

// TestAttackProxyWithoutCredentials (issue 12, item 7): the proxy listens on
// loopback, so every local user can reach it; with --socks5-auth it must
// serve only clients that present the credentials. Each client below tries
// to CONNECT; the test counts what the proxy dialled for the ones without
// (or with wrong) credentials, and the replies they got.
func TestAttackProxyWithoutCredentials(t *testing.T) {
	leaktest.Check(t)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, target)
	tport := uint16(target.Addr().(*net.TCPAddr).Port)
	var dials atomic.Int64
	paddr := startProxy(t, ProxyConfig{
		User: "alice", Password: "s3cret",
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	})
	exchange := func(send []byte) []byte {
		t.Helper()
		c, err := net.Dial("tcp", paddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(send)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite() // a served CONNECT then ends with EOF too
		}
		got, _ := io.ReadAll(c)
		return got
	}
	connect := []byte{5, 1, 0, 1, 127, 0, 0, 1, byte(tport >> 8), byte(tport)}
	userpass := func(u, p string) []byte {
		b := append([]byte{1, byte(len(u))}, u...)
		b = append(b, byte(len(p)))
		return append(b, p...)
	}
	httpConnect := func(auth string) []byte {
		h := "CONNECT " + target.Addr().String() + " HTTP/1.1\r\nHost: x\r\n"
		if auth != "" {
			h += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(auth)) + "\r\n"
		}
		return []byte(h + "\r\n")
	}

	attacks := []struct {
		name string
		send []byte
		want []byte // prefix of what the proxy answers
	}{
		{"socks-no-auth-offered", append([]byte{5, 1, 0}, connect...), []byte{5, 0xff}},
		{"socks-wrong-password", append(append([]byte{5, 1, 2}, userpass("alice", "guess")...), connect...), []byte{5, 2, 1, 1}},
		{"socks-wrong-user", append(append([]byte{5, 1, 2}, userpass("bob", "s3cret")...), connect...), []byte{5, 2, 1, 1}},
		{"socks-empty-creds", append(append([]byte{5, 1, 2}, userpass("", "")...), connect...), []byte{5, 2, 1, 1}},
		{"http-no-auth", httpConnect(""), []byte("HTTP/1.1 407 ")},
		{"http-wrong-password", httpConnect("alice:guess"), []byte("HTTP/1.1 407 ")},
	}
	served := 0
	for _, a := range attacks {
		got := exchange(a.send)
		if !bytes.HasPrefix(got, a.want) {
			t.Errorf("%s: proxy answered %q, want prefix %q", a.name, got, a.want)
		}
		if bytes.HasPrefix(got, []byte{5, 0, 5, 0}) || bytes.HasPrefix(got, []byte{5, 2, 1, 0, 5, 0}) || bytes.HasPrefix(got, []byte("HTTP/1.1 200")) {
			served++
		}
	}
	t.Logf("clients without the right credentials: %d of %d served, %d dials", served, len(attacks), dials.Load())
	if served != 0 || dials.Load() != 0 {
		t.Errorf("clients without the right credentials: %d of %d served, %d dials made; want 0", served, len(attacks), dials.Load())
	}

	// The right credentials work, over SOCKS5 and HTTP CONNECT.
	got := exchange(append(append(append([]byte{5, 2, 0, 2}, userpass("alice", "s3cret")...), connect...), "ping"...))
	if !bytes.HasPrefix(got, []byte{5, 2, 1, 0, 5, 0}) || !bytes.HasSuffix(got, []byte("ping")) {
		t.Errorf("SOCKS5 with the credentials: got %q, want success and the echo", got)
	}
	got = exchange(append(httpConnect("alice:s3cret"), "ping"...))
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 200 ")) || !bytes.HasSuffix(got, []byte("ping")) {
		t.Errorf("HTTP CONNECT with the credentials: got %q, want 200 and the echo", got)
	}
	if dials.Load() != 2 {
		t.Errorf("%d dials, want 2 (the two authenticated clients)", dials.Load())
	}
}
