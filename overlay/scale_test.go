package overlay

// Scale measurements (issue 7): how fast a record change floods N
// in-process nodes, and how much heap a node spends per peer. They start
// hundreds of nodes, so they run only with GLOW_SCALE=1:
//
//	GLOW_SCALE=1 go test -run 'TestScale' -v -timeout 30m ./overlay/
//	GLOW_SCALE=1 GLOW_SCALE_SIZES=30 go test -run 'TestScalePropagation' -v ./overlay/
//
// They print "METRIC name value" lines. No figure is asserted; a test fails
// only when the behaviour is wrong (records never converge).

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"glow/internal/wire"
	"glow/nat/natlab"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

func scaleGate(t *testing.T) {
	if os.Getenv("GLOW_SCALE") == "" {
		t.Skip("scale measurement: set GLOW_SCALE=1 to run it")
	}
}

// scaleSizes are the network sizes of TestScalePropagation:
// GLOW_SCALE_SIZES (comma-separated), default 30 and 300.
func scaleSizes(t *testing.T) []int { return sizesFrom(t, "GLOW_SCALE_SIZES", []int{30, 300}) }

// sizesFrom reads network sizes from the environment variable env
// (comma-separated), def if it is unset.
func sizesFrom(t *testing.T, env string, def []int) []int {
	s := os.Getenv(env)
	if s == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 3 {
			t.Fatalf("%s=%q: want numbers >= 3", env, s)
		}
		out = append(out, v)
	}
	return out
}

func metric(t *testing.T, name string, v any) { t.Logf("METRIC %s %v", name, v) }

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func heapStats() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}

// scaleAddr is node i's address in the lab (198.18.0.0/15, benchmarking).
func scaleAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
}

// sparseGraph is a ring plus, for every node from the fourth on, chords to
// two random earlier nodes (seeded: the same graph every run). edges[i]
// lists i's neighbours with a lower index, which are the ones it
// bootstraps to.
func sparseGraph(n int, seed uint64) (edges [][]int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	edges = make([][]int, n)
	for i := 1; i < n; i++ {
		edges[i] = append(edges[i], i-1)
		for len(edges[i]) < 3 && i >= 4 {
			j := rng.IntN(i - 1)
			if !slices.Contains(edges[i], j) {
				edges[i] = append(edges[i], j)
			}
		}
	}
	edges[n-1] = append(edges[n-1], 0) // close the ring
	return edges
}

// ownInfoVersion is the version of n's own NodeInfo.
func ownInfoVersion(n *Node) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mem.store.Version(member.RecordKey{Kind: member.KindInfo, Node: n.id})
}

func heldVersion(n *Node, k member.RecordKey) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mem.store.Version(k)
}

// TestScalePropagation: N nodes of one user on one lab Internet, each
// reaching only its neighbours in a sparse graph (ring plus chords, average
// degree about 6, over the links filter), so most pairs talk through
// relays. Once every node holds every node's current records, one node's
// NodeInfo changes (a new public address, as a pong's "seen" would bring);
// the test measures how long until every node holds the new version.
func TestScalePropagation(t *testing.T) {
	scaleGate(t)
	for _, n := range scaleSizes(t) {
		t.Run(fmt.Sprintf("n%d", n), func(t *testing.T) { propagation(t, n) })
	}
}

func propagation(t *testing.T, size int) {
	// Sockets queue 1024 datagrams, as the production Bind's 7 MiB socket
	// buffers hold at least that many control packets.
	in := natlab.New(natlab.Config{QueueLen: 1024})
	lk := &links{allowed: map[[2]netip.Addr]bool{}}
	edges := sparseGraph(size, 1)
	nedges := 0
	for i, es := range edges {
		for _, j := range es {
			lk.set(scaleAddr(i), scaleAddr(j), true)
			nedges++
		}
	}
	u := membertest.NewUser(t, "alice")
	used := map[netip.Addr]bool{}
	cpu0, start := cpuSeconds(), time.Now()
	nodes := make([]*Node, size)
	hosts := make([]*natlab.Host, size)
	for i := range size {
		var boot []string
		for _, j := range edges[i] {
			if j < i {
				boot = append(boot, netip.AddrPortFrom(scaleAddr(j), DefaultPort).String())
			}
		}
		name := fmt.Sprintf("n%d", i)
		dir := provision(t, u, name, used, i == 0)
		hosts[i] = in.NewHost(scaleAddr(i))
		nodes[i] = labNode(t, hosts[i], lk, name, func(c *Config) {
			quiet(t, name)(c)
			c.StateDir, c.Peers = dir, boot
		})
	}
	started := time.Since(start)
	t.Logf("%d nodes started in %v; %d links", size, started.Round(time.Millisecond), nedges)

	// Converged: every node holds every node's certificate and a NodeInfo
	// of it. (Whether it is the newest is counted but not waited for: while
	// paths flap, NodeInfos change all the time; see logDrops.)
	converged := func() (held, current, want int) {
		own := make([]uint64, size)
		for i, m := range nodes {
			own[i] = ownInfoVersion(m)
		}
		for _, n := range nodes {
			n.mu.Lock()
			for i, m := range nodes {
				v := n.mem.store.Version(member.RecordKey{Kind: member.KindInfo, Node: m.id})
				if n.mem.store.Version(member.RecordKey{Kind: member.KindCert, Node: m.id}) != 0 && v != 0 {
					held++
				}
				if v == own[i] {
					current++
				}
			}
			n.mu.Unlock()
		}
		return held, current, size * size
	}
	last := time.Now()
	waitFor(t, time.Duration(size)*2*time.Second+time.Minute, "records to converge", func() bool {
		held, current, want := converged()
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			t.Logf("converging: %d of %d records held, %d current, after %v", held, want, current, time.Since(start).Round(time.Second))
			logDrops(t, nodes, hosts)
		}
		return held == want
	})
	conv := time.Since(start)
	ms := heapStats()
	metric(t, fmt.Sprintf("scale_n%d_converged_s", size), fmt.Sprintf("%.1f", conv.Seconds()))
	metric(t, fmt.Sprintf("scale_n%d_setup_cpu_s", size), fmt.Sprintf("%.1f", cpuSeconds()-cpu0))
	metric(t, fmt.Sprintf("scale_n%d_heap_mib", size), ms.HeapAlloc>>20)
	metric(t, fmt.Sprintf("scale_n%d_stack_mib", size), ms.StackInuse>>20)
	metric(t, fmt.Sprintf("scale_n%d_goroutines", size), runtime.NumGoroutine())
	relayed := 0
	for _, p := range nodes[0].Status().Peers {
		if p.Path == "relay" {
			relayed++
		}
	}
	_, current, want := converged()
	t.Logf("n0 reaches %d of %d peers through relays; %d of %d NodeInfos held are the newest", relayed, size-1, current, want)
	logDrops(t, nodes, hosts)

	// Idle control CPU of the whole network, for context.
	cpu1 := cpuSeconds()
	time.Sleep(3 * time.Second)
	metric(t, fmt.Sprintf("scale_n%d_idle_cpu_per_s", size), fmt.Sprintf("%.2f", (cpuSeconds()-cpu1)/3))

	target := nodes[size-1]
	key := member.RecordKey{Kind: member.KindInfo, Node: target.id}
	var all []time.Duration
	for round := range 3 {
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + round)}), 40000)
		cpuStart := cpuSeconds()
		t0 := time.Now()
		target.mu.Lock()
		for _, p := range target.paths.peers { // every peer saw it there: a hint published first
			p.seenUs, p.seenAt = addr, t0
		}
		target.refreshInfoLocked(t0)
		seq := target.mem.info.Seq
		target.mu.Unlock()

		reached := make([]time.Duration, 0, size)
		has := make([]bool, size)
		deadline := t0.Add(60 * time.Second)
		for len(reached) < size && time.Now().Before(deadline) {
			for i, n := range nodes {
				if !has[i] && heldVersion(n, key) >= seq {
					has[i] = true
					reached = append(reached, time.Since(t0))
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		cpuUsed := cpuSeconds() - cpuStart
		if len(reached) < size {
			t.Errorf("round %d: the change reached only %d of %d nodes in 60 s", round, len(reached), size)
			return
		}
		q := func(f float64) time.Duration { return reached[int(f*float64(size-1))].Round(time.Millisecond) }
		t.Logf("round %d: change reached 50%% in %v, 90%% in %v, all %d in %v (process CPU %.1f s)",
			round, q(0.5), q(0.9), size, q(1), cpuUsed)
		logDrops(t, nodes, hosts)
		all = append(all, reached[size-1])
		time.Sleep(3 * time.Second)
	}
	slices.Sort(all)
	metric(t, fmt.Sprintf("record_propagation_n%d_s", size), fmt.Sprintf("%.3f", all[len(all)/2].Seconds()))
}

// scalePeer is one made-up peer: its certificate and NodeInfo as records.
type scalePeer struct {
	cert, info []byte
}

// makeScalePeers signs k peers of u's user, each with two endpoints and
// four links, as gossip would bring them.
func makeScalePeers(t *testing.T, u *member.UserKey, k int, used map[netip.Addr]bool) []scalePeer {
	now := time.Now()
	out := make([]scalePeer, k)
	var ids []wire.NodeID
	for i := range out {
		keys, err := member.NewNodeKeys()
		if err != nil {
			t.Fatal(err)
		}
		v4, err := member.AllocIPv4(keys.ID(), used)
		if err != nil {
			t.Fatal(err)
		}
		used[v4] = true
		c := &member.Cert{User: [32]byte(u.Public()), UserName: "alice", Node: keys.ID(), Name: fmt.Sprintf("p%d", i),
			WG: keys.WGPublic(), Ctl: keys.CtlPublic(), IPv4: v4, IPv6: member.NodeAddr6(u.Public(), keys.ID()),
			NotBefore: now, NotAfter: now.Add(time.Hour)}
		member.SignCert(u, c)
		ids = append(ids, keys.ID())
		info := &member.NodeInfo{Node: keys.ID(), Seq: 1, Endpoints: []netip.AddrPort{
			netip.AddrPortFrom(scaleAddr(1000+i), DefaultPort), netip.AddrPortFrom(scaleAddr(5000+i), 41000)}}
		for j := range 4 {
			if len(ids) > j+1 {
				info.Links = append(info.Links, member.LinkInfo{Node: ids[len(ids)-2-j], Cost: 10})
			}
		}
		member.SignInfo(keys.Sign, info)
		out[i] = scalePeer{c.Marshal(), info.Marshal()}
	}
	return out
}

// TestScaleHeapPerPeer: one node learns 600 peers of its user through the
// same path gossip takes (Store.Apply, then recordChangedLocked, which adds
// the WireGuard peer and the control loop's peer and starts probing their
// candidates). Live heap is read after GC before and after, once at once
// and once probing has reached its steady state. For comparison, the same
// 600 peers are first configured on a bare wireguard-go device: its share
// of the cost, which glow does not control.
func TestScaleHeapPerPeer(t *testing.T) {
	scaleGate(t)
	const k = 600
	u := membertest.NewUser(t, "alice")
	used := map[netip.Addr]bool{}
	peers := makeScalePeers(t, u, k, used)
	// wireguard-go alone first, while nothing else runs.
	wireguardGoPerPeer(t, peers)

	in := natlab.New(natlab.Config{QueueLen: 1024})
	dir := provision(t, u, "n0", used, true)
	n := labNode(t, in.NewHost(scaleAddr(0)), nil, "n0", func(c *Config) {
		quiet(t, "n0")(c)
		c.StateDir = dir
	})
	time.Sleep(time.Second) // the node's start-up settles

	before := heapStats()
	g0 := runtime.NumGoroutine()
	now := time.Now()
	n.mu.Lock()
	for _, p := range peers {
		for _, r := range []struct {
			kind member.RecordKind
			raw  []byte
		}{{member.KindCert, p.cert}, {member.KindInfo, p.info}} {
			isNew, err := n.mem.store.Apply(r.kind, r.raw, now)
			if err != nil || !isNew {
				n.mu.Unlock()
				t.Fatalf("apply %v: %v, %v", r.kind, isNew, err)
			}
			n.recordChangedLocked(r.kind, r.raw, now)
		}
	}
	got := len(n.paths.peers)
	n.mu.Unlock()
	if got != k {
		t.Fatalf("node has %d peers, want %d", got, k)
	}
	report := func(when string, ms runtime.MemStats) {
		metric(t, "heap_per_peer_bytes_"+when, (int64(ms.HeapAlloc)-int64(before.HeapAlloc))/k)
		metric(t, "stack_per_peer_bytes_"+when, (int64(ms.StackInuse)-int64(before.StackInuse))/k)
		metric(t, "goroutines_per_peer_"+when, fmt.Sprintf("%.2f", float64(runtime.NumGoroutine()-g0)/k))
	}
	report("added", heapStats())
	// Probing holds up to pingTimeout of pending pings per candidate.
	time.Sleep(pingTimeout + 2*time.Second)
	report("steady", heapStats())
	runtime.KeepAlive(peers)

}

// wireguardGoPerPeer configures peers on a bare wireguard-go device as
// addPeerLocked configures them (endpoint aside) and reports the cost.
func wireguardGoPerPeer(t *testing.T, peers []scalePeer) {
	k := int64(len(peers))
	// wireguard-go alone: a device with the same 600 peers, configured as
	// addPeerLocked configures them (endpoint aside).
	wgBefore := heapStats()
	wg0 := runtime.NumGoroutine()
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), &countingBind{}, device.NewLogger(device.LogLevelSilent, ""))
	keys, _ := member.NewNodeKeys()
	if err := dev.IpcSet(fmt.Sprintf("private_key=%x\nlisten_port=1\n", keys.WG[:])); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // its receive and TUN goroutines allocate their batches
	base := heapStats()
	baseG := runtime.NumGoroutine()
	for _, p := range peers {
		c, err := member.ParseCert(p.cert)
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.IpcSet(fmt.Sprintf("public_key=%s\nreplace_allowed_ips=true\nallowed_ip=%s/32\nallowed_ip=%s/128\n", c.WG, c.IPv4, c.IPv6)); err != nil {
			t.Fatal(err)
		}
	}
	ms := heapStats()
	metric(t, "wireguard_go_heap_per_peer_bytes", (int64(ms.HeapAlloc)-int64(base.HeapAlloc))/k)
	metric(t, "wireguard_go_stack_per_peer_bytes", (int64(ms.StackInuse)-int64(base.StackInuse))/k)
	metric(t, "wireguard_go_goroutines_per_peer", fmt.Sprintf("%.2f", float64(runtime.NumGoroutine()-baseG)/float64(k)))
	t.Logf("bare wireguard-go device itself: %d KiB heap, %d goroutines", (int64(base.HeapAlloc)-int64(wgBefore.HeapAlloc))>>10, baseG-wg0)
	dev.Close()
}

// logDrops sums what the nodes and their lab sockets dropped, and why.
func logDrops(t *testing.T, nodes []*Node, hosts []*natlab.Host) {
	var bc BindCounters
	ctl := map[string]uint64{}
	var queueFull, sent uint64
	for i, n := range nodes {
		c := n.bind.Counters()
		bc.UnknownSource += c.UnknownSource
		bc.ControlQueueFull += c.ControlQueueFull
		bc.UnknownKind += c.UnknownKind
		bc.SendNoPath += c.SendNoPath
		bc.RelayNoPeer += c.RelayNoPeer
		bc.RelayNoPath += c.RelayNoPath
		n.mu.Lock()
		for k, v := range n.dropCtl {
			ctl[k] += v
		}
		n.mu.Unlock()
		hs := hosts[i].Stats()
		queueFull += hs.DroppedQueueFull
		sent += hs.Sent
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("drops: bind %+v; control %v; lab: %d sent, %d dropped at full socket queues; heap %d MiB (before GC), %d goroutines, process CPU %.0f s",
		bc, ctl, sent, queueFull, ms.HeapAlloc>>20, runtime.NumGoroutine(), cpuSeconds())
}
