package overlay

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"glow/internal/wire"
	"glow/nat/natlab"
	"glow/overlay/member/membertest"
)

// Whole nodes under testing/synctest. A node whose TUN is in memory
// (tun/tuntest, Config.tunDevice) over the NAT lab has no socket and no
// goroutine that synctest cannot see blocked (gVisor's netstack parks its
// goroutines where synctest does not look, so a userspace node cannot live
// in a bubble): its control loop, wireguard-go and the lab all run on the
// bubble's clock, and minutes of protocol pass in milliseconds. Call these
// helpers inside synctest.Test.
//
// wireguard-go sets a finalizer on each peer's queues that drains their
// channel, and finalizers run outside any bubble: a WireGuard peer made in
// a bubble and then collected kills the test binary ("receive on synctest
// channel from outside bubble"), during the bubble or long after. So
// keepWGPeers holds every WireGuard peer a bubble's nodes have when they
// close, for the life of the binary, and no bubble test may drop one
// before (a lazy trim, 5 minutes after traffic: TestTimerLazyWireGuardTrim
// tests that on a clock rig instead).

// bubble is a network of nodes on lab hosts.
type bubble struct {
	nodes []*Node
	tuns  []*tuntest.ChannelTUN // Outbound: packets into the node's TUN; Inbound: packets out of it
	hosts []*natlab.Host
	dirs  []string // state directories
	start []func() // start node i (again, after a Close) on its host, with a new TUN
	ips   []netip.Addr
	lk    *links // which host pairs reach each other
}

// bubbleNet starts the named nodes on lab hosts 198.51.100.1, .2, ...,
// each allowed to reach every other (lk can cut pairs), with in-memory
// TUNs; the first is the user's admin, the others know it as a bootstrap
// peer.
func bubbleNet(t *testing.T, names ...string) *bubble {
	t.Helper()
	return bubbleNetSpec(t, netSpec{}, names...)
}

// netSpec changes how bubbleNetSpec provisions the nodes.
type netSpec struct {
	life    map[string]time.Duration // a node's certificate lifetime (default: an hour)
	noAdmin bool                     // no node is an admin (default: the first)
	mod     func(name string, c *Config)
}

// bubbleNetSpec is bubbleNet as spec says.
func bubbleNetSpec(t *testing.T, spec netSpec, names ...string) *bubble {
	t.Helper()
	in := natlab.NewInternet()
	lk := &links{allowed: map[[2]netip.Addr]bool{}}
	u := membertest.NewUser(t, "alice")
	used := map[netip.Addr]bool{}
	var ips []netip.Addr
	for i := range names {
		ips = append(ips, netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}))
		for _, o := range ips[:i] {
			lk.set(o, ips[i], true)
		}
	}
	b := &bubble{ips: ips, lk: lk}
	defer keepWGPeers(t, &b.nodes)
	for i, name := range names {
		life := spec.life[name]
		if life == 0 {
			life = time.Hour
		}
		dir := provisionFor(t, u, name, used, i == 0 && !spec.noAdmin, life)
		b.dirs = append(b.dirs, dir)
		var peers []string
		if i > 0 {
			peers = []string{netip.AddrPortFrom(ips[0], DefaultPort).String()}
		}
		h := in.NewHost(ips[i])
		b.hosts, b.tuns, b.nodes = append(b.hosts, h), append(b.tuns, nil), append(b.nodes, nil)
		b.start = append(b.start, func() {
			tun := tuntest.NewChannelTUN()
			b.tuns[i] = tun
			b.nodes[i] = labNode(t, h, lk, name, func(c *Config) {
				c.StateDir, c.Peers = dir, peers
				c.Userspace, c.NoDNS, c.tunDevice = false, true, tun.TUN()
				if spec.mod != nil {
					spec.mod(name, c)
				}
			})
		})
		b.start[i]()
	}
	return b
}

// sent returns how many datagrams each host has sent.
func (b *bubble) sent() []uint64 {
	out := make([]uint64, len(b.hosts))
	for i, h := range b.hosts {
		out[i] = h.Stats().Sent
	}
	return out
}

// bubbleWait polls cond every 250 ms of the bubble's clock until it holds,
// and returns when it first did; it fails the test after d.
func bubbleWait(t *testing.T, d time.Duration, what string, cond func() bool) time.Time {
	t.Helper()
	for end := time.Now().Add(d); ; time.Sleep(250 * time.Millisecond) {
		if cond() {
			return time.Now()
		}
		if time.Now().After(end) {
			t.Fatalf("no %s after %v", what, d)
		}
	}
}

// allDirect reports whether every node has a direct path to every other.
func (b *bubble) allDirect() bool {
	for _, n := range b.nodes {
		if directPeers(n) != len(b.nodes)-1 {
			return false
		}
	}
	return true
}

// stream sends an ICMP echo request from node i to node j's IPv4 address
// every gap until stop is closed, and returns when each arrived at j (read
// until stop is closed). Both goroutines end with stop.
func (b *bubble) stream(i, j int, gap time.Duration, stop chan struct{}) (arrivals func() []time.Time) {
	src, dst := b.nodes[i].Cert().IPv4, b.nodes[j].Cert().IPv4
	var mu sync.Mutex
	var got []time.Time
	go func() {
		for {
			select {
			case b.tuns[i].Outbound <- tuntest.Ping(dst, src):
			case <-stop:
				return
			}
			select {
			case <-time.After(gap):
			case <-stop:
				return
			}
		}
	}()
	go func() {
		for {
			select {
			case pkt := <-b.tuns[j].Inbound:
				if len(pkt) >= 20 && netip.AddrFrom4([4]byte(pkt[12:16])) == src {
					mu.Lock()
					got = append(got, time.Now())
					mu.Unlock()
				}
			case <-stop:
				return
			}
		}
	}()
	return func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// keptWGPeers are the WireGuard peers of nodes that ran in a bubble, never
// to be collected (see the top of this file).
var keptWGPeers struct {
	sync.Mutex
	p []*device.Peer
}

// keepWGPeers makes the WireGuard peers the nodes hold when the test ends
// (before the nodes close: register it after starting them) live as long
// as the test binary.
func keepWGPeers(t *testing.T, nodes *[]*Node) {
	t.Cleanup(func() { holdWGPeers(*nodes) })
}

// holdWGPeers makes the WireGuard peers the nodes hold now live as long as
// the test binary: call it before a test makes a node drop one (a peer
// whose certificate expires).
func holdWGPeers(nodes []*Node) {
	for _, n := range nodes {
		n.mu.Lock()
		var keys []device.NoisePublicKey
		for _, p := range n.paths.peers {
			keys = append(keys, device.NoisePublicKey(p.cert.WG))
		}
		n.mu.Unlock()
		for _, k := range keys {
			if wp := n.dev.LookupPeer(k); wp != nil {
				keptWGPeers.Lock()
				keptWGPeers.p = append(keptWGPeers.p, wp)
				keptWGPeers.Unlock()
			}
		}
	}
}

// dumpOnFailure logs, if the test fails, what the nodes' WireGuard and
// Binds hold when it ends: each wireguard-go peer (key, allowed IPs, last
// handshake, bytes; not the private key), each Bind endpoint (configured
// in wireguard-go or not, its path), the drop counters and the hosts'
// datagram counts. A failure that comes once in thousands of runs
// (TestAttackExpiredPeer's) is then explained by its own log. Call it
// after bubbleNet: it runs before the nodes close.
func (b *bubble) dumpOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for i, n := range b.nodes {
			if n == nil || n.dev == nil {
				continue
			}
			var wg []string
			if s, err := n.dev.IpcGet(); err == nil {
				for line := range strings.SplitSeq(s, "\n") {
					if line != "" && !strings.HasPrefix(line, "private_key=") {
						wg = append(wg, line)
					}
				}
			}
			t.Logf("dump %s: wireguard-go: %s", n.Cert().Name, strings.Join(wg, " "))
			names := map[wire.NodeID]string{}
			for _, o := range b.nodes {
				if o != nil {
					names[o.ID()] = o.Cert().Name
				}
			}
			type line struct {
				e          *Endpoint
				peer, path string
				ips        []netip.Addr
			}
			var lines []line
			n.bind.mu.Lock()
			for id, e := range n.bind.peers {
				path := "none"
				switch p := e.path.Load(); {
				case p == nil:
				case p.relay:
					path = "relay via " + names[p.via]
				case p.stream != nil:
					path = "stream"
				default:
					path = "direct " + p.addr.String()
				}
				lines = append(lines, line{e, names[id], path, e.ips})
			}
			n.bind.mu.Unlock()
			n.bind.wgMu.Lock() // inKey and since are the WireGuard applier's (as trimWG reads them)
			for _, l := range lines {
				t.Logf("dump %s: endpoint %s: configured=%v key=%.8s… since=%v path=%s ips=%v", n.Cert().Name, l.peer,
					l.e.wg.on.Load(), l.e.wg.inKey, l.e.wg.since.Format("04:05.000"), l.path, l.ips)
			}
			n.bind.wgMu.Unlock()
			t.Logf("dump %s: bind %+v; host %+v", n.Cert().Name, n.bind.Counters(), b.hosts[i].Stats())
		}
	})
}
