package overlay

// TestScaleSim (issue 18): N whole nodes in one testing/synctest bubble, on
// the bubble's clock, so that the figures are the protocol's own times and
// not this machine's CPU shared by N nodes. Each node is a real Node
// (control loop, Store, gossip, routes, wireguard-go) with an in-memory
// TUN over the NAT lab (as bubble_test.go); the lab delays every datagram
// by scaleLatency, and each node reaches only its neighbours in a sparse
// graph (sparseGraph: ring plus chords, average degree about 6), so most
// pairs talk through relays. It measures, in simulated seconds:
//
//   - cold convergence: all N nodes start at once; until every node holds
//     every node's certificate and a NodeInfo of it;
//   - control bytes per node per second (UDP payload every node sends;
//     there is no data traffic) while converging, idle, and under churn;
//   - churn: for scaleChurn, every 10 s one node restarts, one changes its
//     address (a new public address published), one leaves for good and
//     one new node joins (its certificate issued offline by the admin, as
//     `glow invite` would), each bootstrapping to its neighbours;
//   - propagation: once converged, and again after the churn, a NodeInfo
//     change of one node, until every live node holds it (median of 3
//     rounds each).
//
// It prints METRIC lines (bench/main.go's scale section reads them) and
// fails only if the network does not converge or a change does not reach
// every node. It starts hundreds of nodes, so it runs only with
// GLOW_SCALE=1:
//
//	GLOW_SCALE=1 GLOW_SCALE_SIM_SIZES=100,300 go test -run TestScaleSim -v -timeout 60m ./overlay/
//
// 1,000 nodes (GLOW_SCALE_SIM_SIZES=1000) run in about 16 GiB (GOGC=60)
// and their cold start alone took 15 minutes of CPU (overlay/doc.go,
// Scale), more than a bench run has on 2 cores: every node is a peer
// of every other, so the process holds a million peers, and a cold start
// seals, opens and verifies N² of everything, all on one machine's CPU.
// With GLOW_SCALE_HEAPPROFILE=file it writes a heap profile at convergence
// (logHeapPerNode), with GLOW_SCALE_CPUPROFILE=file a CPU profile of the
// cold start.

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"glow/nat/natlab"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

const (
	scaleLatency = 20 * time.Millisecond // one way, every datagram
	scaleChurn   = 60 * time.Second
)

// countConn counts the bytes a node sends.
type countConn struct {
	net.PacketConn
	sent *atomic.Uint64
}

func (c *countConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.sent.Add(uint64(len(b)))
	return c.PacketConn.WriteTo(b, a)
}

// simNet is the simulated network: nodes by index, some of them stopped.
type simNet struct {
	t     *testing.T
	size  int // nodes at the start
	u     *member.UserKey
	in    *natlab.Internet
	lk    *links
	used  map[netip.Addr]bool
	edges [][]int // neighbours, both directions
	nodes []*Node // nil while stopped
	dirs  []string
	hosts []*natlab.Host
	sent  []*atomic.Uint64
	gone  []bool // left for good
}

func (s *simNet) link(i, j int) {
	s.lk.set(scaleAddr(i), scaleAddr(j), true)
	s.edges[i] = append(s.edges[i], j)
	s.edges[j] = append(s.edges[j], i)
}

// add provisions node i (not started).
func (s *simNet) add(i int) {
	for len(s.nodes) <= i {
		s.nodes, s.dirs, s.hosts = append(s.nodes, nil), append(s.dirs, ""), append(s.hosts, nil)
		s.sent, s.gone, s.edges = append(s.sent, &atomic.Uint64{}), append(s.gone, false), append(s.edges, nil)
	}
	s.dirs[i] = provision(s.t, s.u, fmt.Sprintf("n%d", i), s.used, i == 0)
	s.hosts[i] = s.in.NewHost(scaleAddr(i))
}

// start starts node i, bootstrapping to its neighbours.
func (s *simNet) start(i int) {
	var boot []string
	for _, j := range s.edges[i] {
		boot = append(boot, netip.AddrPortFrom(scaleAddr(j), DefaultPort).String())
	}
	name := fmt.Sprintf("n%d", i)
	s.nodes[i] = labNode(s.t, s.hosts[i], s.lk, name, func(c *Config) {
		quiet(s.t, name)(c)
		c.StateDir, c.Peers = s.dirs[i], boot
		c.Userspace, c.tunDevice = false, tuntest.NewChannelTUN().TUN()
		c.bindBatch = 1 // 3 MiB a node less (scalebatch.go)
		inner := c.ListenPacket
		c.ListenPacket = func(port uint16) (net.PacketConn, error) {
			pc, err := inner(port)
			if err != nil {
				return nil, err
			}
			return &countConn{PacketConn: pc, sent: s.sent[i]}, nil
		}
	})
}

func (s *simNet) stop(i int) {
	holdWGPeers(s.nodes[i : i+1])
	s.nodes[i].Close()
	s.nodes[i] = nil
}

func (s *simNet) live() []*Node {
	var out []*Node
	for _, n := range s.nodes {
		if n != nil {
			out = append(out, n)
		}
	}
	return out
}

// ctlSent sums the live nodes' control bytes sent to peers by message type.
func (s *simNet) ctlSent() (out [256]uint64) {
	for _, n := range s.live() {
		n.mu.Lock()
		for i, v := range n.ctlSent {
			out[i] += v
		}
		n.mu.Unlock()
	}
	return out
}

// logCtl logs what the live nodes' control bytes to peers went to since
// before, by message type, per node per second.
func (s *simNet) logCtl(what string, before [256]uint64, d time.Duration) {
	after := s.ctlSent()
	names := map[msgType]string{msgPing: "ping", msgPong: "pong", msgDigest: "digest", msgWant: "want",
		msgRecords: "records", msgRecordFrag: "fragments", msgSummary: "summary"}
	var parts []string
	for i := range after {
		if v := after[i] - before[i]; v > 0 {
			name := names[msgType(i)]
			if name == "" {
				name = fmt.Sprint(i)
			}
			parts = append(parts, fmt.Sprintf("%s %.0f", name, float64(v)/float64(len(s.live()))/d.Seconds()))
		}
	}
	s.t.Logf("%s: control bytes per node per second to peers, by message: %s", what, strings.Join(parts, ", "))
}

func (s *simNet) bytesSent() uint64 {
	var b uint64
	for _, c := range s.sent {
		b += c.Load()
	}
	return b
}

// converged reports whether every live node holds every live node's
// certificate and a NodeInfo of it.
func (s *simNet) converged() bool {
	live := s.live()
	for _, n := range live { // first O(N): a node short of peers holds too few certificates
		n.mu.Lock()
		short := len(n.paths.peers) < len(live)-1
		n.mu.Unlock()
		if short {
			return false
		}
	}
	for _, n := range live {
		n.mu.Lock()
		for _, m := range live {
			if n.mem.store.Version(member.RecordKey{Kind: member.KindCert, Node: m.id}) == 0 ||
				n.mem.store.Version(member.RecordKey{Kind: member.KindInfo, Node: m.id}) == 0 {
				n.mu.Unlock()
				return false
			}
		}
		n.mu.Unlock()
	}
	return true
}

// changeAddr publishes a new public address of n, as a pong's "seen" would
// bring it.
func changeAddr(n *Node, addr netip.AddrPort) uint64 {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.paths.peers {
		p.seenUs, p.seenAt = addr, now
	}
	n.refreshInfoLocked(now)
	return n.mem.info.Seq
}

// propagate changes n's NodeInfo and returns how long until every live
// node holds it, polled every 10 ms of the bubble's clock.
func (s *simNet) propagate(n *Node, addr netip.AddrPort) time.Duration {
	key := member.RecordKey{Kind: member.KindInfo, Node: n.id}
	t0 := time.Now()
	seq := changeAddr(n, addr)
	for time.Since(t0) < time.Minute {
		all := true
		for _, m := range s.live() {
			if heldVersion(m, key) < seq {
				all = false
				break
			}
		}
		if all {
			return time.Since(t0)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.t.Fatalf("a NodeInfo change did not reach every node within a minute")
	return 0
}

// propagation measures 3 NodeInfo changes of the last node and reports the
// median as scale_sim_n<size>_propagation<suffix>_s.
func (s *simNet) propagation(what, suffix string) {
	var all []time.Duration
	target := s.nodes[len(s.nodes)-1]
	for i := len(s.nodes) - 1; target == nil; i-- {
		target = s.nodes[i]
	}
	for round := range 3 {
		d := s.propagate(target, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(round)}), 41000))
		s.t.Logf("%s, round %d: the change reached all %d live nodes in %v", what, round, len(s.live()), d)
		all = append(all, d)
		time.Sleep(5 * time.Second)
	}
	slices.Sort(all)
	metric(s.t, fmt.Sprintf("scale_sim_n%d_propagation%s_s", s.size, suffix), fmt.Sprintf("%.3f", all[1].Seconds()))
}

// TestScaleSim: see the top of this file.
func TestScaleSim(t *testing.T) {
	scaleGate(t)
	for _, n := range sizesFrom(t, "GLOW_SCALE_SIM_SIZES", []int{100, 300}) {
		t.Run(fmt.Sprintf("n%d", n), func(t *testing.T) {
			stopProfile := cpuProfile(t) // outside the bubble: its writer blocks in the runtime
			synctest.Test(t, func(t *testing.T) { scaleSim(t, n, stopProfile) })
			stopProfile()
		})
	}
}

func scaleSim(t *testing.T, size int, stopProfile func()) {
	cpu0 := cpuSeconds()
	cpu := func() string { // the bubble's clock stands still while CPU runs
		return fmt.Sprintf("CPU %.0f s", cpuSeconds()-cpu0)
	}
	s := &simNet{t: t, size: size, u: membertest.NewUser(t, "alice"), used: map[netip.Addr]bool{},
		in: natlab.New(natlab.Config{QueueLen: 1024, Latency: scaleLatency}),
		lk: &links{allowed: map[[2]netip.Addr]bool{}}}
	for i, es := range sparseGraph(size, 1) {
		s.add(i)
		for _, j := range es {
			s.link(i, j)
		}
	}
	start := time.Now()
	for i := range size {
		s.start(i)
	}
	t.Cleanup(func() { holdWGPeers(s.live()) }) // before the nodes close (bubble_test.go)
	for !s.converged() {
		if time.Since(start) > 10*time.Minute {
			t.Fatalf("%d nodes did not converge in 10 minutes (simulated)", size)
		}
		if time.Since(start) < 5*time.Second {
			time.Sleep(100 * time.Millisecond)
		} else {
			time.Sleep(time.Second) // a poll costs N² look-ups
		}
	}
	conv := time.Since(start)
	stopProfile()
	perNode := func(b uint64, d time.Duration) string {
		return fmt.Sprintf("%.0f", float64(b)/float64(len(s.live()))/d.Seconds())
	}
	convBytes := s.bytesSent()
	s.logCtl("converging", [256]uint64{}, conv)
	t.Logf("n%d: converged after %v simulated (%s)", size, conv.Round(time.Second), cpu())
	logHeapPerNode(t, size)
	metric(t, fmt.Sprintf("scale_sim_n%d_converged_s", size), fmt.Sprintf("%.1f", conv.Seconds()))
	metric(t, fmt.Sprintf("scale_sim_n%d_converging_bytes_node_s", size), perNode(convBytes, conv))

	s.propagation("converged", "")

	// Idle: two minutes past the quiet pace's start (quietAfter).
	time.Sleep(quietAfter + 30*time.Second)
	b0, c0, t0 := s.bytesSent(), s.ctlSent(), time.Now()
	time.Sleep(time.Minute)
	metric(t, fmt.Sprintf("scale_sim_n%d_idle_bytes_node_s", size), perNode(s.bytesSent()-b0, time.Since(t0)))
	s.logCtl("idle", c0, time.Since(t0))

	// Churn: every 10 s a restart, an address change, a leave and a join.
	b0, c0, t0 = s.bytesSent(), s.ctlSent(), time.Now()
	next := size
	for round := 0; time.Since(t0) < scaleChurn; round++ {
		pick := func(k int) int { // a live node, never the admin (0) nor the last of the first size
			for j := 1 + (round*37+k*11)%(size-2); ; j = 1 + j%(size-2) {
				if s.nodes[j] != nil {
					return j
				}
			}
		}
		r := pick(0)
		s.stop(r)
		changeAddr(s.nodes[pick(1)], netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(round)}), 40000))
		l := pick(2)
		s.stop(l)
		s.gone[l] = true
		s.add(next)
		s.link(next, pick(3))
		s.link(next, pick(4))
		s.start(next)
		next++
		time.Sleep(time.Second)
		s.start(r)
		time.Sleep(9 * time.Second)
	}
	churn := time.Since(t0)
	metric(t, fmt.Sprintf("scale_sim_n%d_churn_bytes_node_s", size), perNode(s.bytesSent()-b0, churn))
	s.logCtl("churn", c0, churn)
	c1 := time.Now()
	for !s.converged() {
		if time.Since(c1) > 5*time.Minute {
			t.Fatalf("no convergence 5 minutes after the churn")
		}
		time.Sleep(time.Second)
	}
	t.Logf("n%d: %d live nodes converged %v after the churn (%s)", size, len(s.live()), time.Since(c1).Round(time.Second), cpu())

	s.propagation("after the churn", "_churn")
	t.Logf("n%d: done after %v simulated, %s", size, time.Since(start).Round(time.Second), cpu())
	logDropsSim(t, s)
	for i := range s.nodes {
		if s.nodes[i] != nil {
			s.stop(i)
		}
	}
}

// logHeapPerNode logs the live heap per simulated node (after a GC), and
// writes a heap profile to $GLOW_SCALE_HEAPPROFILE if set.
func logHeapPerNode(t *testing.T, size int) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("n%d: live heap %d MiB, %d KiB per node; %d goroutines, %d per node", size, ms.HeapAlloc>>20,
		ms.HeapAlloc/uint64(size)>>10, runtime.NumGoroutine(), runtime.NumGoroutine()/size)
	metric(t, fmt.Sprintf("scale_sim_n%d_heap_node_bytes", size), ms.HeapAlloc/uint64(size))
	if f := os.Getenv("GLOW_SCALE_HEAPPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		if err := pprof.WriteHeapProfile(out); err != nil {
			t.Fatal(err)
		}
	}
}

// cpuProfile writes a CPU profile to $GLOW_SCALE_CPUPROFILE if set, until
// the returned func is first called (scaleSim: at convergence).
func cpuProfile(t *testing.T) (stop func()) {
	f := os.Getenv("GLOW_SCALE_CPUPROFILE")
	if f == "" {
		return func() {}
	}
	out, err := os.Create(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		t.Fatal(err)
	}
	return sync.OnceFunc(func() {
		pprof.StopCPUProfile()
		out.Close()
	})
}

// logDropsSim logs the drop counters of the live nodes.
func logDropsSim(t *testing.T, s *simNet) {
	var nodes []*Node
	var hosts []*natlab.Host
	for i, n := range s.nodes {
		if n != nil {
			nodes, hosts = append(nodes, n), append(hosts, s.hosts[i])
		}
	}
	logDrops(t, nodes, hosts)
}
