package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	"glow/internal/leaktest"
)

// TestErrorCodes: Errorf's errors and errors wrapping a sentinel have the
// code callers branch on, and keep what %w wrapped.
func TestErrorCodes(t *testing.T) {
	err := fmt.Errorf("outer: %w", Errorf(CodeUnavailable, "ping: %w", context.DeadlineExceeded))
	if CodeOf(err) != CodeUnavailable || !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v: code %q, Is unavailable %v, Is deadline %v", err, CodeOf(err), errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded))
	}
	if err := fmt.Errorf("%w %q", ErrNoSuchPeer, "x"); CodeOf(err) != CodeNoSuchPeer {
		t.Errorf("%v: code %q, want %q", err, CodeOf(err), CodeNoSuchPeer)
	}
	if c := CodeOf(errors.New("plain")); c != "" {
		t.Errorf("a plain error has code %q", c)
	}
	if errors.Is(Errorf(CodeNotAdmin, "x"), ErrNotFound) {
		t.Error("a not-admin error Is ErrNotFound")
	}
}

// TestClientDecodesErrors: the client turns an error body into an *Error
// with its code; a body without one (a daemon older than codes) gets the
// code its HTTP status meant; an unknown code is kept but matches no
// sentinel.
func TestClientDecodesErrors(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	ln, err := net.Listen("unix", SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/ping", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error":"no such peer \"x\""}`)
	})
	mux.HandleFunc("/v1/invite", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":"not admin","code":"not-admin"}`)
	})
	mux.HandleFunc("/v1/links", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprint(w, `{"error":"from the future","code":"brand-new"}`)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c := NewClient(dir)
	_, err = c.Ping("x")
	if !errors.Is(err, ErrNoSuchPeer) || err.Error() != `no such peer "x"` {
		t.Errorf("old daemon's 404: %q (code %q), want no-such-peer with its message", err, CodeOf(err))
	}
	_, err = c.Invite(1, 1)
	if !errors.Is(err, ErrNotAdmin) || err.Error() != "not admin" {
		t.Errorf("not-admin body: %q (code %q)", err, CodeOf(err))
	}
	_, err = c.Links()
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != "brand-new" || ae.Message != "from the future" {
		t.Errorf("unknown code: %#v", err)
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			t.Errorf("an unknown code Is %v", s.err)
		}
	}
	if _, err := NewClient(t.TempDir()).Status(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("no daemon: %v, want ErrNotRunning", err)
	}
}
