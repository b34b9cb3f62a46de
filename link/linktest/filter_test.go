package linktest_test

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"glow/internal/leaktest"
	"glow/link"
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

func loopbackListen(port uint16) (net.PacketConn, error) {
	return net.ListenPacket("udp4", "127.0.0.1:"+strconv.Itoa(int(port)))
}

// TestFilterBind runs the filter over two PacketBinds on loopback: blocked
// packets are dropped and counted on send and on receive.
func TestFilterBind(t *testing.T) {
	leaktest.Check(t)
	ip := netip.MustParseAddr("127.0.0.1")
	f := linktest.NewFilter()
	innerA := link.NewPacketBind(loopbackListen)
	a, b := f.Wrap(innerA, ip), f.Wrap(link.NewPacketBind(loopbackListen), ip)
	if _, _, err := a.Open(0); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fns, pb, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Local() != netip.AddrPortFrom(ip, pb) {
		t.Fatalf("local %v, port %d", b.Local(), pb)
	}
	epB, _ := a.ParseEndpoint(b.Local().String())
	type rx struct {
		s   string
		err error
	}
	got := make(chan rx, 1)
	recv := func() {
		packets, sizes, eps := make([][]byte, b.BatchSize()), make([]int, b.BatchSize()), make([]conn.Endpoint, b.BatchSize())
		for i := range packets {
			packets[i] = make([]byte, 100)
		}
		n, err := fns[0](packets, sizes, eps)
		for i := range n {
			if sizes[i] > 0 {
				got <- rx{string(packets[i][:sizes[i]]), err}
				return
			}
		}
		got <- rx{"", err}
	}

	a.Block(a.Local(), b.Local())
	if err := a.Send([][]byte{[]byte("dropped")}, epB); err != nil {
		t.Fatal(err)
	}
	if f.Dropped() != 1 {
		t.Errorf("dropped %d", f.Dropped())
	}
	a.Unblock(b.Local(), a.Local())
	if err := a.Send([][]byte{[]byte("passes")}, epB); err != nil {
		t.Fatal(err)
	}
	go recv()
	if r := <-got; r.s != "passes" || r.err != nil {
		t.Errorf("got %q %v", r.s, r.err)
	}

	// The receive side filters too (here: packets sent around a's filter).
	b.BlockAll(a.Local())
	go recv()
	innerA.Send([][]byte{[]byte("dropped on receive")}, epB)
	deadline := time.Now().Add(5 * time.Second)
	for f.Dropped() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d, want 2", f.Dropped())
		}
		time.Sleep(time.Millisecond)
	}
	b.UnblockAll(a.Local())
	innerA.Send([][]byte{[]byte("after")}, epB)
	if r := <-got; r.s != "after" || r.err != nil {
		t.Errorf("got %q %v", r.s, r.err)
	}
}
