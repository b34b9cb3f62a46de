package overlay

// Benchmarks of the packet path and of record checks (STYLE habit 15, issue
// 7). They report; nothing here asserts a speed.
//
//	go test -run '^$' -bench . -benchmem ./overlay/
//
// The Bind benchmarks run the real Send and ReceiveFunc around an inner
// conn.Bind that only counts (countingBind), so they measure glow's own
// per-batch cost: path lookup, classification, relay headers, forwarding
// decisions. BenchmarkThroughput runs whole nodes (wireguard-go, netstacks)
// in this process: over loopback sockets, and over the NAT lab directly and
// through one relay node.

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"glow/internal/wire"
	"glow/nat/natlab"
	"glow/overlay/member/membertest"
	"glow/relay"
)

// benchBatch is the batch size of the Bind benchmarks: a typical GSO/GRO
// batch of wireguard-go (conn.IdealBatchSize is 128).
const benchBatch = 64

// wgPacketLen is a full-size WireGuard transport packet for the overlay MTU:
// 16 bytes of header, the padded plaintext, 16 bytes of tag.
const wgPacketLen = 16 + MTU + 16

// countingBind is an inner conn.Bind that sends nowhere and counts; its
// Open gives receive functions that block until Close.
type countingBind struct {
	pkts, bytes, sends atomic.Uint64

	mu     sync.Mutex
	closed chan struct{}
}

var _ conn.Bind = (*countingBind)(nil)

func (c *countingBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	done := make(chan struct{})
	c.closed = done
	recv := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		<-done
		return 0, net.ErrClosed
	}
	if port == 0 {
		port = 1
	}
	return []conn.ReceiveFunc{recv}, port, nil
}

func (c *countingBind) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != nil {
		close(c.closed)
		c.closed = nil
	}
	return nil
}

func (c *countingBind) SetMark(uint32) error { return nil }
func (c *countingBind) BatchSize() int       { return conn.IdealBatchSize }

func (c *countingBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	c.sends.Add(1)
	c.pkts.Add(uint64(len(bufs)))
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	c.bytes.Add(uint64(n))
	return nil
}

func (c *countingBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &conn.StdNetEndpoint{AddrPort: ap}, nil
}

func randomNodeID(tb testing.TB) wire.NodeID {
	var id wire.NodeID
	if _, err := rand.Read(id[:]); err != nil {
		tb.Fatal(err)
	}
	return id
}

// wgTransport fills b with a WireGuard transport message header (type 4).
func wgTransport(b []byte) []byte {
	b[0], b[1], b[2], b[3] = 4, 0, 0, 0
	return b
}

// benchBind is a Bind for node self over a countingBind, with limits no
// benchmark reaches; its relay trusts nodes as members of self's user
// once they are passed to trustAll.
func benchBind(tb testing.TB) (*Bind, *countingBind, wire.NodeID) {
	inner := &countingBind{}
	self := randomNodeID(tb)
	fwd := relay.New(relay.Limits{PacketsPerSecond: 1e15, BytesPerSecond: 1e18, Burst: time.Second})
	return NewBind(inner, self, fwd, newCtlQueues()), inner, self
}

// trustAll makes ids members of the Bind's user, for its relay.
func trustAll(b *Bind, ids ...wire.NodeID) {
	m := relay.Members{}
	for _, id := range ids {
		m[id.Short()] = relay.Own
	}
	b.fwd.SetMembers(b.self, m)
}

func batchOf(n, size int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = wgTransport(make([]byte, size))
	}
	return bufs
}

// BenchmarkBindSend: one Send of a batch of WireGuard packets for one peer,
// on a direct path (handed to the inner bind as is) and on a relay path
// (each packet copied behind the relay header into pooled scratch).
func BenchmarkBindSend(b *testing.B) {
	for _, relayed := range []bool{false, true} {
		name := "direct"
		if relayed {
			name = "relay"
		}
		b.Run(name, func(b *testing.B) {
			bind, inner, _ := benchBind(b)
			peer, via := randomNodeID(b), randomNodeID(b)
			bind.Peer(peer) // added, as the node adds its peers
			bind.Peer(via)
			if err := bind.SetDirect(via, netip.MustParseAddrPort("192.0.2.1:47470")); err != nil {
				b.Fatal(err)
			}
			if relayed {
				if err := bind.SetRelay(peer, via); err != nil {
					b.Fatal(err)
				}
			} else if err := bind.SetDirect(peer, netip.MustParseAddrPort("192.0.2.2:47470")); err != nil {
				b.Fatal(err)
			}
			ep := bind.Peer(peer)
			bufs := batchOf(benchBatch, wgPacketLen)
			b.SetBytes(int64(benchBatch * wgPacketLen))
			b.ReportAllocs()
			for b.Loop() {
				if err := bind.Send(bufs, ep); err != nil {
					b.Fatal(err)
				}
			}
			if got := inner.pkts.Load(); got < uint64(b.N*benchBatch) {
				b.Fatalf("inner bind saw %d packets, want %d", got, b.N*benchBatch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/pkt")
		})
	}
}

// BenchmarkBindReceive: the ReceiveFunc classifying one batch from the
// inner bind: WireGuard packets from a peer's known address (left for
// wireguard-go), relay frames for this node carrying WireGuard (header
// stripped), and relay frames for another node (forwarded in one run to
// the next hop).
func BenchmarkBindReceive(b *testing.B) {
	cases := []struct {
		name string
		fill func(buf []byte, src, dst wire.ShortID) int // writes one datagram, returns its size
		self bool                                        // frames are addressed to this node
	}{
		{"wireguard", func(buf []byte, _, _ wire.ShortID) int {
			wgTransport(buf)
			return wgPacketLen
		}, false},
		{"relay-for-us", func(buf []byte, src, dst wire.ShortID) int {
			wire.PutRelayHeader(buf, wire.DefaultHopLimit, src, dst)
			wgTransport(buf[wire.RelayHeaderLen:])
			return wire.RelayHeaderLen + wgPacketLen
		}, true},
		{"relay-forward", func(buf []byte, src, dst wire.ShortID) int {
			wire.PutRelayHeader(buf, wire.DefaultHopLimit, src, dst)
			wgTransport(buf[wire.RelayHeaderLen:])
			return wire.RelayHeaderLen + wgPacketLen
		}, false},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			bind, inner, self := benchBind(b)
			from, to := randomNodeID(b), randomNodeID(b)
			trustAll(bind, from, to)
			bind.Peer(from)
			bind.Peer(to)
			fromAddr := netip.MustParseAddrPort("192.0.2.1:47470")
			if err := bind.SetDirect(from, fromAddr); err != nil {
				b.Fatal(err)
			}
			if err := bind.SetDirect(to, netip.MustParseAddrPort("192.0.2.2:47470")); err != nil {
				b.Fatal(err)
			}
			dst := to.Short()
			if tc.self {
				dst = self.Short()
			}
			src := &conn.StdNetEndpoint{AddrPort: fromAddr}
			// The fake inner ReceiveFunc fills the whole batch afresh each
			// call: the Bind rewrites sizes, endpoints and hop limits in place.
			fake := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
				// What the last batch left for wireguard-go has left it
				// (decrypted, written to the TUN): else the Bind waits on
				// its in-flight bound, and the benchmark times that wait.
				bind.in.done(int(bind.in.n.Load()))
				for i := range bufs {
					sizes[i] = tc.fill(bufs[i], from.Short(), dst)
					eps[i] = src
				}
				return len(bufs), nil
			}
			recv := bind.makeReceive(fake)
			bufs := make([][]byte, benchBatch)
			for i := range bufs {
				bufs[i] = make([]byte, 1<<16)
			}
			sizes := make([]int, benchBatch)
			eps := make([]conn.Endpoint, benchBatch)
			b.SetBytes(int64(benchBatch * tc.fill(make([]byte, 1<<16), from.Short(), dst)))
			b.ReportAllocs()
			for b.Loop() {
				n, err := recv(bufs, sizes, eps)
				if err != nil || n != benchBatch {
					b.Fatalf("receive: %d, %v", n, err)
				}
			}
			// What the batch came to, checked once (not timed).
			left := 0
			for _, s := range sizes {
				if s > 0 {
					left++
				}
			}
			switch {
			case tc.name == "relay-forward" && (left != 0 || inner.pkts.Load() < uint64(b.N*benchBatch)):
				b.Fatalf("forwarding: %d left for wireguard-go, %d sent", left, inner.pkts.Load())
			case tc.name != "relay-forward" && left != benchBatch:
				b.Fatalf("%d of %d packets left for wireguard-go (counters %+v)", left, benchBatch, bind.Counters())
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/pkt")
		})
	}
}

// benchLogf is where benchmark and scale nodes log: nowhere, unless
// GLOW_BENCH_LOG is set (their logs would drown the figures).
func benchLogf(tb testing.TB, name string) func(string, ...any) {
	if os.Getenv("GLOW_BENCH_LOG") == "" {
		return nil
	}
	return func(f string, a ...any) { tb.Logf(time.Now().Format("05.000")+" "+name+": "+f, a...) }
}

// BenchmarkThroughput: one TCP stream between the netstacks of two nodes
// in this process, b.N chunks of 128 KiB, reported as MB/s:
//
//   - loopback: two nodes on real loopback UDP sockets (link/udpbind);
//   - natlab-direct: two nodes on the in-memory NAT lab (PacketBind);
//   - natlab-relay: three nodes on the lab where UDP between the two ends is
//     dropped (the links filter), so every packet goes through the middle
//     node's Bind as a relay frame.
//
// Compare relay with natlab-direct (same substrate) for the cost of a hop.
// Both ends, wireguard-go and gVisor share this process's CPUs, so absolute
// figures are far below a kernel TUN's; bench/ measures those.
func BenchmarkThroughput(b *testing.B) {
	b.Run("loopback", func(b *testing.B) {
		a := testNode(b, "a", func(c *Config) { c.UserName = "bench" })
		code, err := a.Invite(time.Minute, 1)
		if err != nil {
			b.Fatal(err)
		}
		z := testNode(b, "z", func(c *Config) { c.JoinCode = code })
		waitFor(b, 20*time.Second, "a direct to z", func() bool {
			p, ok := peerStatus(a, "z")
			return ok && p.Path == "direct"
		})
		streamBench(b, a, z)
	})
	for _, relayed := range []bool{false, true} {
		name := "natlab-direct"
		if relayed {
			name = "natlab-relay"
		}
		b.Run(name, func(b *testing.B) {
			in := natlab.New(natlab.Config{QueueLen: 1024})
			lk := &links{allowed: map[[2]netip.Addr]bool{}}
			ipA, ipR, ipZ := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.3")
			lk.set(ipA, ipR, true)
			lk.set(ipR, ipZ, true)
			lk.set(ipA, ipZ, !relayed)
			u := membertest.NewUser(b, "bench")
			used := map[netip.Addr]bool{}
			boot := func(ip netip.Addr) []string { return []string{netip.AddrPortFrom(ip, DefaultPort).String()} }
			var a, r, z *Node
			a = labNode(b, in.NewHost(ipA), lk, "a", func(c *Config) { c.StateDir = provision(b, u, "a", used, true) })
			r = labNode(b, in.NewHost(ipR), lk, "r", func(c *Config) {
				c.StateDir, c.Peers = provision(b, u, "r", used, false), boot(ipA)
			})
			z = labNode(b, in.NewHost(ipZ), lk, "z", func(c *Config) {
				c.StateDir, c.Peers = provision(b, u, "z", used, false), boot(ipR)
			})
			_ = r
			waitFor(b, 30*time.Second, "a's path to z", func() bool {
				p, ok := peerStatus(a, "z")
				if relayed {
					return ok && p.Path == "relay" && len(p.Via) == 1 && p.Via[0] == "r"
				}
				return ok && p.Path == "direct"
			})
			streamBench(b, a, z)
		})
	}
}

// streamBench sends b.N chunks from a to a TCP sink on z's overlay IPv4
// address and waits until z has read them all.
func streamBench(b *testing.B, a, z *Node) {
	const chunk = 128 << 10
	ap := netip.AddrPortFrom(z.Cert().IPv4, 7200)
	ln, err := stackNet(z).ListenTCPAddrPort(ap)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		got <- n
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	c, err := a.Userspace().DialContext(ctx, "tcp", ap.String())
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ReportAllocs()
	var sent int64
	for b.Loop() {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			b.Fatalf("after %d bytes: %v", sent, err)
		}
	}
	// The bytes still in flight count: time the drain too.
	b.StartTimer()
	c.Close()
	select {
	case n := <-got:
		if n != sent {
			b.Fatalf("sink read %d of %d bytes", n, sent)
		}
	case <-time.After(30 * time.Second):
		b.Fatal("sink did not finish")
	}
	b.StopTimer()
}
