package linktest_test

import (
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/conn/bindtest"

	"glow/link/linktest"
)

func TestFilterRules(t *testing.T) {
	f := linktest.NewFilter()
	a := netip.MustParseAddrPort("10.0.0.1:1000")
	b := netip.MustParseAddrPort("10.0.0.2:2000")
	c := netip.MustParseAddrPort("10.0.0.3:3000")
	if f.Blocked(a, b) {
		t.Fatal("empty filter blocks")
	}
	f.Block(a, b)
	if !f.Blocked(a, b) || !f.Blocked(b, a) || f.Blocked(a, c) {
		t.Error("Block(a, b)")
	}
	f.Unblock(b, a)
	if f.Blocked(a, b) {
		t.Error("Unblock")
	}
	f.BlockAll(netip.AddrPortFrom(c.Addr(), 0)) // every port of c's IP
	if !f.Blocked(a, c) || !f.Blocked(netip.MustParseAddrPort("10.0.0.3:9"), b) || f.Blocked(a, b) {
		t.Error("BlockAll wildcard")
	}
	f.Reset()
	if f.Blocked(a, c) {
		t.Error("Reset")
	}
}

// TestFilterBind runs the filter over wireguard-go's in-memory channel
// binds: blocked sends are dropped and counted, unblocked ones arrive.
func TestFilterBind(t *testing.T) {
	inner := bindtest.NewChannelBinds()
	ip := netip.MustParseAddr("127.0.0.1")
	f := linktest.NewFilter()
	a, b := f.Wrap(inner[0], ip), f.Wrap(inner[1], ip)
	_, pa, err := a.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fns, pb, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Local().Port() != pa || b.Local().Port() != pb {
		t.Fatalf("locals %v %v", a.Local(), b.Local())
	}
	epB, _ := a.ParseEndpoint(b.Local().String())
	recv := func() string {
		packets, sizes, eps := [][]byte{make([]byte, 100)}, []int{0}, []conn.Endpoint{nil}
		n, err := fns[0](packets, sizes, eps)
		if err != nil || n != 1 {
			t.Fatalf("receive: %d %v", n, err)
		}
		return string(packets[0][:sizes[0]])
	}
	a.Block(a.Local(), b.Local())
	if err := a.Send([][]byte{[]byte("dropped")}, epB); err != nil {
		t.Fatal(err)
	}
	if f.Dropped() != 1 {
		t.Errorf("dropped %d", f.Dropped())
	}
	a.Unblock(a.Local(), b.Local())
	if err := a.Send([][]byte{[]byte("passes")}, epB); err != nil {
		t.Fatal(err)
	}
	if got := recv(); got != "passes" {
		t.Errorf("got %q", got)
	}

	// The receive side filters too (here: packets sent around a's filter).
	b.BlockAll(a.Local())
	got := make(chan string, 1)
	go func() { got <- recv() }()
	inner[0].Send([][]byte{[]byte("dropped on receive")}, epB)
	for f.Dropped() != 2 {
		time.Sleep(time.Millisecond)
	}
	b.UnblockAll(a.Local())
	inner[0].Send([][]byte{[]byte("after")}, epB)
	if g := <-got; g != "after" {
		t.Errorf("got %q", g)
	}
}
