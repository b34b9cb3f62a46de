//go:build linux && (amd64 || arm64)

package udpbind

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"

	"glow/internal/leaktest"
)

// opened opens b on any port and closes it when the test ends.
func opened(t *testing.T, b conn.Bind) ([]conn.ReceiveFunc, uint16) {
	t.Helper()
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return fns, port
}

// recvN reads with fn until it has n datagrams, bounded in reads and
// time; it returns their bytes and sources.
func recvN(t *testing.T, fn conn.ReceiveFunc, n int) ([][]byte, []netip.AddrPort) {
	t.Helper()
	type result struct {
		got  [][]byte
		from []netip.AddrPort
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		bufs := make([][]byte, batchSize)
		for i := range bufs {
			bufs[i] = make([]byte, 1<<16)
		}
		sizes := make([]int, batchSize)
		eps := make([]conn.Endpoint, batchSize)
		for reads := 0; len(r.got) < n && reads < 10*n+10; reads++ {
			k, err := fn(bufs, sizes, eps)
			if err != nil {
				r.err = err
				break
			}
			for i := range k {
				r.got = append(r.got, bytes.Clone(bufs[i][:sizes[i]]))
				ap, _ := netip.ParseAddrPort(eps[i].DstToString())
				r.from = append(r.from, ap)
			}
		}
		done <- r
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("receive after %d of %d datagrams: %v", len(r.got), n, r.err)
		}
		return r.got, r.from
	case <-time.After(10 * time.Second):
		t.Fatalf("received fewer than %d datagrams in 10 s", n)
		return nil, nil
	}
}

// payloads makes datagrams of the given lengths, each marked with its index.
func payloads(lens []int) [][]byte {
	out := make([][]byte, len(lens))
	for i, l := range lens {
		out[i] = make([]byte, l)
		for j := range out[i] {
			out[i][j] = byte(i*31 + j)
		}
		if l >= 2 {
			binary.BigEndian.PutUint16(out[i], uint16(i))
		}
	}
	return out
}

func loopbacks(t *testing.T) []netip.Addr {
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err == nil {
		c.Close()
		addrs = append(addrs, netip.IPv6Loopback())
	} else {
		t.Logf("no IPv6 loopback: %v", err)
	}
	return addrs
}

// TestRoundTrip sends batches the way WireGuard and the relay do (full
// runs of one size, short tails, mixed sizes, one datagram, 200 at once)
// over loopback, where the kernel hands GSO sends to GRO sockets whole,
// so coalesce and split both run; every datagram arrives, in order, with
// its bytes and its sender's address. Each batch goes again behind a relay
// header (SendPrefixed: two iovecs a datagram, GSO segments of header and
// packet), and must arrive as header+packet.
func TestRoundTrip(t *testing.T) {
	leaktest.Check(t)
	for _, lo := range loopbacks(t) {
		t.Run(lo.String(), func(t *testing.T) {
			a, b := New(), New()
			_, portA := opened(t, a)
			fnsB, portB := opened(t, b)
			fnB := fnsB[0]
			if lo.Is6() {
				fnB = fnsB[len(fnsB)-1]
			}
			ep, err := a.ParseEndpoint(netip.AddrPortFrom(lo, portB).String())
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			random := make([]int, 100)
			for i := range random {
				random[i] = 1 + rng.IntN(1400)
			}
			for _, c := range []struct {
				name string
				lens []int
			}{
				{"one", []int{148}},
				{"full run", rep(1452, batchSize)},
				{"short tails", append(append(rep(1452, 10), 700), append(rep(1452, 70), 60)...)},
				{"random", random},
				{"more than a batch", rep(1000, 200)},
			} {
				// As Send, then behind a relay header (SendPrefixed).
				for _, prefix := range [][]byte{nil, []byte("\x80relay\x01\x02")} {
					sent := payloads(c.lens)
					var err error
					if prefix == nil {
						err = a.Send(sent, ep)
					} else {
						err = a.(*Bind).SendPrefixed(prefix, sent, ep)
					}
					if err != nil {
						t.Fatalf("%s: send behind %q: %v", c.name, prefix, err)
					}
					got, from := recvN(t, fnB, len(sent))
					if len(got) != len(sent) {
						t.Fatalf("%s: %d datagrams arrived, %d sent", c.name, len(got), len(sent))
					}
					for i := range sent {
						if want := append(bytes.Clone(prefix), sent[i]...); !bytes.Equal(got[i], want) {
							t.Fatalf("%s: datagram %d behind %q: %d bytes arrived, differ from the %d sent", c.name, i, prefix, len(got[i]), len(want))
						}
						if from[i] != netip.AddrPortFrom(lo, portA) {
							t.Fatalf("%s: datagram %d from %v, want %v", c.name, i, from[i], netip.AddrPortFrom(lo, portA))
						}
					}
				}
			}
		})
	}
}

// TestWithStdNetBind: datagrams go both ways between this Bind and
// wireguard-go's, so a glow node and anything built on wireguard-go's own
// socket code (a plain WireGuard device) read each other's batches.
func TestWithStdNetBind(t *testing.T) {
	leaktest.Check(t)
	ours, std := New(), conn.NewStdNetBind()
	fnsO, portO := opened(t, ours)
	fnsS, portS := opened(t, std)
	lo := netip.MustParseAddr("127.0.0.1")
	sent := payloads(append(rep(1300, 40), 20))
	epS, _ := ours.ParseEndpoint(netip.AddrPortFrom(lo, portS).String())
	if err := ours.Send(sent, epS); err != nil {
		t.Fatal(err)
	}
	if got, _ := recvN(t, fnsS[0], len(sent)); !equalAll(got, sent) {
		t.Fatal("wireguard-go's bind did not receive what this one sent")
	}
	epO, _ := std.ParseEndpoint(netip.AddrPortFrom(lo, portO).String())
	if err := std.Send(sent, epO); err != nil {
		t.Fatal(err)
	}
	got, from := recvN(t, fnsO[0], len(sent))
	if !equalAll(got, sent) || from[0] != netip.AddrPortFrom(lo, portS) {
		t.Fatalf("this bind did not receive what wireguard-go's sent (from %v)", from[0])
	}
}

func equalAll(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestCloseEndsReceive: Close wakes a receive waiting on an idle socket
// with net.ErrClosed (wireguard-go's receive goroutines end on it), and the
// Bind opens again.
func TestCloseEndsReceive(t *testing.T) {
	leaktest.Check(t)
	b := New()
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Fatalf("second Open: %v, want ErrBindAlreadyOpen", err)
	}
	errs := make(chan error, len(fns))
	for _, fn := range fns {
		go func() {
			bufs, sizes, eps := [][]byte{make([]byte, 1500)}, make([]int, 1), make([]conn.Endpoint, 1)
			_, err := fn(bufs, sizes, eps)
			errs <- err
		}()
	}
	time.Sleep(20 * time.Millisecond) // let them reach the netpoller (they end either way)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for range fns {
		select {
		case err := <-errs:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("receive after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("receive still waiting 5 s after Close")
		}
	}
	ep, _ := ParseEndpoint("127.0.0.1:9")
	if err := b.Send([][]byte{{1}}, ep); err == nil {
		t.Fatal("Send on a closed Bind succeeded")
	}
	if _, _, err := b.Open(0); err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	b.Close()
}

// TestTruncatedCounted: a datagram larger than the buffer it is read into
// is dropped and counted, never handed on cut short.
func TestTruncatedCounted(t *testing.T) {
	leaktest.Check(t)
	a, b := New(), New()
	opened(t, a)
	fnsB, portB := opened(t, b)
	ep, _ := ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", portB))
	for _, l := range []int{200, 50} { // one Send each: not coalesced
		if err := a.Send(payloads([]int{l}), ep); err != nil {
			t.Fatal(err)
		}
	}
	b.(*Bind).v4.conn.SetReadDeadline(time.Now().Add(5 * time.Second)) // bounded
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 100)
	}
	sizes, eps := make([]int, batchSize), make([]conn.Endpoint, batchSize)
	var kept []int
	for reads := 0; reads < 20 && len(kept) < 1; reads++ {
		n, err := fnsB[0](bufs, sizes, eps)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if sizes[i] > 0 {
				kept = append(kept, sizes[i])
			}
		}
	}
	if len(kept) != 1 || kept[0] != 50 || b.(*Bind).Drops() != 1 {
		t.Fatalf("kept %v, dropped %d; want [50], 1", kept, b.(*Bind).Drops())
	}
}

// TestSendAllocs: the packet path allocates nothing once warm: a send of a
// batch (plain and behind a prefix) and the receive of it, from one source.
func TestSendAllocs(t *testing.T) {
	a, b := New(), New()
	opened(t, a)
	fnsB, portB := opened(t, b)
	ep, _ := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", portB))
	sent := payloads(rep(1200, 8))
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	sizes, eps := make([]int, batchSize), make([]conn.Endpoint, batchSize)
	b.(*Bind).v4.conn.SetReadDeadline(time.Now().Add(time.Minute)) // bounded
	prefix := []byte("relayhdr")
	cycle := func() {
		if err := a.Send(sent, ep); err != nil {
			t.Fatal(err)
		}
		if err := a.(*Bind).SendPrefixed(prefix, sent, ep); err != nil {
			t.Fatal(err)
		}
		for got, reads := 0, 0; got < 2*len(sent) && reads < 100; reads++ {
			n, err := fnsB[0](bufs, sizes, eps)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	}
	cycle()
	if allocs := testing.AllocsPerRun(50, cycle); allocs != 0 {
		t.Fatalf("%v allocations per send and receive, want 0", allocs)
	}
}

func TestGROSize(t *testing.T) {
	cmsg := func(level, typ int32, data []byte) []byte {
		b := make([]byte, cmsgHdrLen+(len(data)+7)&^7)
		binary.NativeEndian.PutUint64(b, uint64(cmsgHdrLen+len(data)))
		binary.NativeEndian.PutUint32(b[8:], uint32(level))
		binary.NativeEndian.PutUint32(b[12:], uint32(typ))
		copy(b[cmsgHdrLen:], data)
		return b
	}
	gro := binary.NativeEndian.AppendUint32(nil, 1452)
	other := cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{0})
	for _, c := range []struct {
		name string
		oob  []byte
		want int
	}{
		{"none", nil, 0},
		{"gro", cmsg(unix.SOL_UDP, unix.UDP_GRO, gro), 1452},
		{"after another", append(other, cmsg(unix.SOL_UDP, unix.UDP_GRO, gro)...), 1452},
		{"other only", other, 0},
		{"short data", cmsg(unix.SOL_UDP, unix.UDP_GRO, []byte{1, 2}), 0},
		{"length past end", cmsg(unix.SOL_UDP, unix.UDP_GRO, gro)[:18], 0},
		{"header cut", make([]byte, 10), 0},
	} {
		if got := groSize(c.oob); got != c.want {
			t.Errorf("%s: groSize = %d, want %d", c.name, got, c.want)
		}
	}
}

// FuzzGROSize: any control bytes give a size or 0, never a panic.
func FuzzGROSize(f *testing.F) {
	f.Add(make([]byte, 24))
	f.Add([]byte{255, 255, 255, 255, 255, 255, 255, 255, 17, 0, 0, 0, 104, 0, 0, 0})
	f.Fuzz(func(t *testing.T, oob []byte) {
		groSize(oob)
	})
}

func TestKernelAtLeast(t *testing.T) {
	for _, c := range []struct {
		r    string
		want bool
	}{
		{"6.18.44-fc-v1147", true}, {"5.12.0", true}, {"5.11.22-generic", false}, {"5.4", false},
		{"10.0", true}, {"4.19.0", false}, {"", false}, {"x", false}, {"6", true}, {"5", false},
	} {
		if got := kernelAtLeast(c.r, 5, 12); got != c.want {
			t.Errorf("kernelAtLeast(%q, 5, 12) = %v, want %v", c.r, got, c.want)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	ep, err := ParseEndpoint("[::ffff:10.1.2.3]:51820")
	if err != nil || ep.AddrPort != netip.MustParseAddrPort("10.1.2.3:51820") || ep.DstToString() != "10.1.2.3:51820" {
		t.Fatalf("mapped address: %v, %v", ep, err)
	}
	if _, err := ParseEndpoint("nonsense"); err == nil {
		t.Fatal("nonsense parsed")
	}
}
