package link

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"glow/internal/leaktest"
)

func TestGate(t *testing.T) {
	leaktest.Check(t)
	g := NewGate(3, 2)
	a := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}
	a2 := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 2} // same address, other port
	b := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 1}
	c := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 3), Port: 1}
	r1, ok1 := g.Admit(a)
	_, ok2 := g.Admit(a2)
	_, ok3 := g.Admit(a)
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("per source: admitted %v %v %v, want true true false", ok1, ok2, ok3)
	}
	_, okb := g.Admit(b)
	_, okc := g.Admit(c)
	if !okb || okc {
		t.Fatalf("total: admitted %v %v, want true false", okb, okc)
	}
	r1()
	r1() // a second release counts nothing
	if g.Pending() != 2 {
		t.Fatalf("pending %d after one release, want 2", g.Pending())
	}
	if _, ok := g.Admit(c); !ok {
		t.Fatal("a released slot is not reused")
	}
	if _, ok := g.Admit(a); ok {
		t.Fatal("admitted past the total")
	}
}

// failingListener fails its first k Accepts, then is closed.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, errors.New("accept failed")
	}
	return l.Listener.Accept()
}

func TestAcceptRetries(t *testing.T) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: ln}
	fl.fails.Store(3)
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	logged := 0
	c, err := Accept(t.Context(), fl, func(string, ...any) { logged++ })
	if err != nil {
		t.Fatalf("Accept after 3 failures: %v", err)
	}
	c.Close()
	if logged != 3 {
		t.Errorf("%d failures logged, want 3", logged)
	}
	ln.Close()
	if _, err := Accept(t.Context(), fl, nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener: %v, want net.ErrClosed", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	fl.fails.Store(1)
	if _, err := Accept(ctx, fl, nil); err == nil {
		t.Error("Accept with a done ctx returned no error")
	}
}
