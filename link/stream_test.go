package link_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"glow/internal/leaktest"
	"glow/internal/wire"
	"glow/link"
	"glow/link/linktest"
)

// helperEnv makes the test binary, re-executed by DialCommand, serve one
// link over its stdin/stdout instead of running tests: the stand-in for
// `ssh host glow link stdio`.
const helperEnv = "GLOW_LINKTEST_STDIO"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(stdioHelper(mode))
	}
	os.Exit(m.Run())
}

// stdioHelper serves one link: it echoes every datagram back until EOF.
func stdioHelper(mode string) int {
	if mode == "fail" {
		fmt.Fprintln(os.Stderr, "helper: permission denied (publickey)")
		return 255
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := link.Handshake(ctx, link.StdioStream(os.Stdin, os.Stdout), linktest.NewIdentity("helper"), linktest.AcceptAll)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	buf := make([]byte, link.MaxDatagram)
	for {
		n, err := s.ReadDatagram(buf)
		if err != nil {
			return 0
		}
		if err := s.WriteDatagrams([][]byte{buf[:n]}); err != nil {
			return 0
		}
	}
}

type result struct {
	s   *link.Stream
	err error
}

// handshakePair runs Handshake on both ends of a pipe at once.
func handshakePair(ctx context.Context, a, b io.ReadWriteCloser, ida, idb link.Identity, va, vb link.Verify) (result, result) {
	ch := make(chan result, 1)
	go func() {
		s, err := link.Handshake(ctx, b, idb, vb)
		ch <- result{s, err}
	}()
	s, err := link.Handshake(ctx, a, ida, va)
	return result{s, err}, <-ch
}

func TestHandshakePipe(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ida, idb := linktest.NewIdentity("cert-a"), linktest.NewIdentity("cert-b")
	a, b := linktest.Pipe()
	ra, rb := handshakePair(ctx, a, b, ida, idb, linktest.Expect(idb.ID()), linktest.Expect(ida.ID()))
	if ra.err != nil || rb.err != nil {
		t.Fatalf("handshake: %v / %v", ra.err, rb.err)
	}
	defer ra.s.Close()
	defer rb.s.Close()
	if ra.s.Peer() != idb.ID() || rb.s.Peer() != ida.ID() {
		t.Errorf("peers: %v %v", ra.s.Peer(), rb.s.Peer())
	}
	if string(ra.s.PeerCert()) != "cert-b" || string(rb.s.PeerCert()) != "cert-a" {
		t.Errorf("certs: %q %q", ra.s.PeerCert(), rb.s.PeerCert())
	}
	// Both ways over the unbuffered pipe.
	go ra.s.WriteDatagrams([][]byte{[]byte("ping"), {}})
	buf := make([]byte, 100)
	for _, want := range []string{"ping", ""} {
		n, err := rb.s.ReadDatagram(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, want)
		}
	}
	wrote := make(chan error, 1)
	go func() { wrote <- rb.s.WriteDatagrams([][]byte{[]byte("pong")}) }()
	if n, err := ra.s.ReadDatagram(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if st := rb.s.Stats(); st.DatagramsIn != 2 || st.BytesIn != 4 || st.DatagramsOut != 1 || st.BytesOut != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestHandshakeRefused(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ida, idb := linktest.NewIdentity("a"), linktest.NewIdentity("b")
	refuse := errors.New("not a member")
	a, b := linktest.Pipe()
	ra, rb := handshakePair(ctx, a, b, ida, idb,
		func(wire.NodeID, []byte) error { return refuse }, linktest.AcceptAll)
	if !errors.Is(ra.err, refuse) {
		t.Errorf("refusing side: %v", ra.err)
	}
	if rb.err == nil {
		// b completed (its verify accepted); the link must be dead.
		if _, err := rb.s.ReadDatagram(make([]byte, 10)); err == nil {
			t.Error("refused link still carries data")
		}
		rb.s.Close()
	}
}

func TestHandshakeSelf(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id := linktest.NewIdentity("a")
	a, b := linktest.Pipe()
	ra, rb := handshakePair(ctx, a, b, id, id, linktest.AcceptAll, linktest.AcceptAll)
	if !errors.Is(ra.err, link.ErrSelfLink) || !errors.Is(rb.err, link.ErrSelfLink) {
		t.Errorf("got %v / %v, want ErrSelfLink", ra.err, rb.err)
	}
}

// hello builds a raw hello as the wire carries it.
func hello(nonce byte, id link.Identity, cert []byte) []byte {
	var b bytes.Buffer
	b.WriteString("GLK1")
	b.Write(bytes.Repeat([]byte{nonce}, 32))
	b.Write(id.Sign.Public().(ed25519.PublicKey))
	b.Write([]byte{byte(len(cert) >> 8), byte(len(cert))})
	b.Write(cert)
	return b.Bytes()
}

// rawPeer plays a scripted peer: it writes out, then ends the stream (or,
// with hold, keeps it open until the handshake under test gives up).
func rawPeer(t *testing.T, out []byte, hold ...bool) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a, b := linktest.Pipe()
	go func() {
		go io.Copy(io.Discard, b)
		b.Write(out)
		if len(hold) == 0 {
			b.Close()
		}
	}()
	_, err := link.Handshake(ctx, a, linktest.NewIdentity("me"), linktest.AcceptAll)
	b.Close()
	if err == nil {
		t.Fatal("handshake with a scripted peer succeeded")
	}
	return err
}

func TestHandshakeRejects(t *testing.T) {
	leaktest.Check(t)
	other := linktest.NewIdentity("other")
	good := hello(7, other, []byte("c"))

	if err := rawPeer(t, []byte("HTTP/1.1 200 OK\r\n\r\n"+strings.Repeat("x", 100))); !errors.Is(err, link.ErrBadMagic) {
		t.Errorf("wrong magic: %v", err)
	}
	for _, n := range []int{0, 3, 10, len(good) - 1} {
		if err := rawPeer(t, good[:n]); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("hello truncated to %d: %v", n, err)
		}
	}
	big := hello(7, other, make([]byte, link.MaxCertLen+1))
	if err := rawPeer(t, big); !errors.Is(err, wire.ErrTooLong) {
		t.Errorf("oversize cert: %v", err)
	}
	// A hello without a signature, then a signature that is garbage.
	if err := rawPeer(t, append(bytes.Clone(good), make([]byte, 64)...), true); !errors.Is(err, link.ErrBadSignature) {
		t.Errorf("bad signature: %v", err)
	}
}

// TestHandshakeReplay records a real handshake between A and B, then
// replays A's hello and signature to B in a new handshake: B's fresh nonce
// makes the old signature worthless.
func TestHandshakeReplay(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ida, idb := linktest.NewIdentity("a"), linktest.NewIdentity("b")

	// Record what A sends: hello and signature.
	a, mid := net.Pipe()
	mid2, b := net.Pipe()
	var rec bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(io.MultiWriter(mid2, &rec), mid); mid2.Close() }()
	go func() { defer wg.Done(); io.Copy(mid, mid2); mid.Close() }()
	ra, rb := handshakePair(ctx, a, b, ida, idb, linktest.AcceptAll, linktest.AcceptAll)
	if ra.err != nil || rb.err != nil {
		t.Fatalf("recorded handshake: %v / %v", ra.err, rb.err)
	}
	ra.s.Close()
	rb.s.Close()
	wg.Wait()
	recorded := rec.Bytes()

	// Replay A's bytes to B.
	x, y := linktest.Pipe()
	go func() {
		go io.Copy(io.Discard, x)
		x.Write(recorded)
	}()
	_, err := link.Handshake(ctx, y, idb, linktest.AcceptAll)
	x.Close()
	if !errors.Is(err, link.ErrBadSignature) {
		t.Errorf("replayed hello: %v, want ErrBadSignature", err)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	a, b := linktest.Pipe()
	defer b.Close()
	go io.Copy(io.Discard, b) // reads, never answers
	done := make(chan error, 1)
	go func() {
		_, err := link.Handshake(ctx, a, linktest.NewIdentity("a"), linktest.AcceptAll)
		done <- err
	}()
	// A bound on a failing test (a handshake that ignores ctx), not a
	// timed assertion.
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want deadline exceeded", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Handshake still running 30 s after its 100 ms deadline")
	}
}

func TestHandshakeNilVerify(t *testing.T) {
	a, b := linktest.Pipe()
	defer b.Close()
	if _, err := link.Handshake(context.Background(), a, linktest.NewIdentity("a"), nil); err == nil {
		t.Error("nil verify accepted")
	}
}

// exercise sends datagrams of many sizes both ways over a connected pair,
// with concurrent writers, and checks every one arrives intact.
func exercise(t *testing.T, x, y *link.Stream) {
	t.Helper()
	sizes := []int{0, 1, 2, 100, 1280, 1500, 4096, 65534, 65535}
	payload := func(w, i, size int) []byte {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(w*31 + i*7 + j)
		}
		return b
	}
	const writers = 4
	for _, dir := range []struct {
		name string
		w, r *link.Stream
	}{{"forward", x, y}, {"back", y, x}} {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i, size := range sizes {
					// Batches of one and of two, so batches interleave whole.
					p := payload(w, i, size)
					bufs := [][]byte{p}
					if i%2 == 1 {
						bufs = append(bufs, p)
					}
					if err := dir.w.WriteDatagrams(bufs); err != nil {
						t.Errorf("%s: write: %v", dir.name, err)
						return
					}
				}
			}()
		}
		// Per writer, datagrams arrive in order; match each by content.
		want := 0
		for i := range sizes {
			want += 1 + i%2
		}
		want *= writers
		buf := make([]byte, link.MaxDatagram)
		seen := 0
		for seen < want {
			n, err := dir.r.ReadDatagram(buf)
			if err != nil {
				t.Fatalf("%s: read %d of %d: %v", dir.name, seen, want, err)
			}
			found := false
			for w := range writers {
				for i, size := range sizes {
					if size == n && bytes.Equal(buf[:n], payload(w, i, size)) {
						found = true
					}
				}
			}
			if !found {
				t.Fatalf("%s: datagram of %d bytes matches nothing sent", dir.name, n)
			}
			seen++
		}
		wg.Wait()
	}
	if err := x.WriteDatagrams([][]byte{make([]byte, link.MaxDatagram+1)}); !errors.Is(err, link.ErrDatagramSize) {
		t.Errorf("oversize write: %v", err)
	}
	// A frame longer than the reader's buffer is skipped; the next arrives.
	if err := x.WriteDatagrams([][]byte{make([]byte, 200), []byte("after")}); err != nil {
		t.Fatal(err)
	}
	small := make([]byte, 100)
	if _, err := y.ReadDatagram(small); !errors.Is(err, link.ErrFrameTooLarge) {
		t.Errorf("long frame: %v", err)
	}
	if n, err := y.ReadDatagram(small); err != nil || string(small[:n]) != "after" {
		t.Errorf("after long frame: %q %v", small[:n], err)
	}
	// Close unblocks a reader on both ends.
	done := make(chan error, 2)
	go func() { _, err := y.ReadDatagram(small); done <- err }()
	go func() { _, err := x.ReadDatagram(small); done <- err }()
	time.Sleep(20 * time.Millisecond)
	x.Close()
	y.Close()
	for range 2 {
		select {
		case err := <-done:
			if err == nil {
				t.Error("read after Close succeeded")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Close did not unblock a reader")
		}
	}
}

func TestTCP(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ids, idc := linktest.NewIdentity("server"), linktest.NewIdentity("client")
	ln, err := link.ListenTCP(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan *link.Stream, 1)
	serveCtx, stopServe := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- link.ServeTCP(serveCtx, ln, ids, linktest.Expect(idc.ID()), func(s *link.Stream) { accepted <- s })
	}()

	// A client the server refuses does not reach accept.
	stranger := linktest.NewIdentity("stranger")
	if s, err := link.DialTCP(ctx, ln.Addr().String(), stranger, linktest.AcceptAll); err == nil {
		if _, err := s.ReadDatagram(make([]byte, 10)); err == nil {
			t.Error("refused client got data")
		}
		s.Close()
	}

	c, err := link.DialTCP(ctx, ln.Addr().String(), idc, linktest.Expect(ids.ID()))
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s.Peer() != idc.ID() {
		t.Errorf("server sees %v", s.Peer())
	}
	exercise(t, c, s)

	stopServe()
	if err := <-served; err != nil {
		t.Errorf("ServeTCP: %v", err)
	}
	select {
	case s := <-accepted:
		t.Errorf("stranger accepted: %v", s.Peer())
	default:
	}
}

func TestWebSocket(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ids, idc := linktest.NewIdentity("server"), linktest.NewIdentity("client")
	accepted := make(chan *link.Stream, 1)
	mux := http.NewServeMux()
	mux.Handle(link.DefaultWSPath, link.WSHandler(ids, linktest.Expect(idc.ID()), func(s *link.Stream) { accepted <- s }))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()

	tg, err := link.ParseURL("ws" + strings.TrimPrefix(srv.URL, "http"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := link.DialWS(ctx, tg.URL.String(), idc, linktest.Expect(ids.ID()), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	exercise(t, c, s)

	// A plain HTTP endpoint is not a link.
	if _, err := link.DialWS(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/nothing", idc, linktest.AcceptAll, nil); err == nil {
		t.Error("dial of a 404 path succeeded")
	}
}

func TestWebSocketTLS(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ids, idc := linktest.NewIdentity("server"), linktest.NewIdentity("client")
	accepted := make(chan *link.Stream, 1)
	srv := httptest.NewUnstartedServer(link.WSHandler(ids, linktest.AcceptAll, func(s *link.Stream) { accepted <- s }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted dial below makes it complain
	srv.StartTLS()
	defer srv.Close()
	url := "wss" + strings.TrimPrefix(srv.URL, "https") + link.DefaultWSPath
	tlsConf := srv.Client().Transport.(*http.Transport).TLSClientConfig
	c, err := link.DialWS(ctx, url, idc, linktest.AcceptAll, tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	go c.WriteDatagrams([][]byte{[]byte("over tls")})
	buf := make([]byte, 100)
	if n, err := s.ReadDatagram(buf); err != nil || string(buf[:n]) != "over tls" {
		t.Errorf("read %q %v", buf[:n], err)
	}
	c.Close()
	s.Close()
	// Without the test CA, the dial fails.
	if _, err := link.DialWS(ctx, url, idc, linktest.AcceptAll, nil); err == nil {
		t.Error("dial with an untrusted certificate succeeded")
	}
}

func TestDialCommand(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(helperEnv, "serve")
	s, err := link.DialCommand(ctx, []string{exe, "-test.run=^$"}, linktest.NewIdentity("me"), linktest.AcceptAll)
	if err != nil {
		t.Fatal(err)
	}
	if string(s.PeerCert()) != "helper" {
		t.Errorf("peer cert %q", s.PeerCert())
	}
	buf := make([]byte, link.MaxDatagram)
	for _, size := range []int{0, 5, 1500, 65535} {
		p := bytes.Repeat([]byte{byte(size)}, size)
		if err := s.WriteDatagrams([][]byte{p}); err != nil {
			t.Fatal(err)
		}
		n, err := s.ReadDatagram(buf)
		if err != nil || !bytes.Equal(buf[:n], p) {
			t.Fatalf("echo of %d bytes: got %d, %v", size, n, err)
		}
	}
	// Close unblocks a reader, kills and waits for the command.
	done := make(chan error, 1)
	go func() { _, err := s.ReadDatagram(buf); done <- err }()
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("read after close succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not unblock the reader")
	}

	// A command that fails before the handshake: its stderr is in the error.
	t.Setenv(helperEnv, "fail")
	_, err = link.DialCommand(ctx, []string{exe, "-test.run=^$"}, linktest.NewIdentity("me"), linktest.AcceptAll)
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("failing command: %v", err)
	}
	if _, err := link.DialCommand(ctx, []string{"/nonexistent/glow"}, linktest.NewIdentity("me"), linktest.AcceptAll); err == nil {
		t.Error("missing command started")
	}
}
