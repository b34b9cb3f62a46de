package overlay

import (
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"glow/nat/natlab"
)

// Whole nodes under testing/synctest. A node whose TUN is in memory
// (tun/tuntest, Config.tunDevice) over the NAT lab has no socket and no
// goroutine that synctest cannot see blocked (gVisor's netstack parks its
// goroutines where synctest does not look, so a userspace node cannot live
// in a bubble): its control loop, wireguard-go and the lab all run on the
// bubble's clock, and minutes of protocol pass in milliseconds. Call these
// helpers inside synctest.Test.

// bubble is a network of nodes on lab hosts.
type bubble struct {
	nodes []*Node
	hosts []*natlab.Host
	ips   []netip.Addr
	lk    *links // which host pairs reach each other
}

// bubbleNet starts the named nodes on lab hosts 198.51.100.1, .2, ...,
// each allowed to reach every other (lk can cut pairs), with in-memory
// TUNs; the first is the user's admin, the others know it as a bootstrap
// peer.
func bubbleNet(t *testing.T, names ...string) *bubble {
	t.Helper()
	in := natlab.NewInternet()
	lk := &links{allowed: map[[2]netip.Addr]bool{}}
	u := newTestUser(t, "alice")
	used := map[netip.Addr]bool{}
	var ips []netip.Addr
	for i := range names {
		ips = append(ips, netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}))
		for _, o := range ips[:i] {
			lk.set(o, ips[i], true)
		}
	}
	b := &bubble{ips: ips, lk: lk}
	for i, name := range names {
		dir := provision(t, u, name, used, i == 0)
		var peers []string
		if i > 0 {
			peers = []string{netip.AddrPortFrom(ips[0], DefaultPort).String()}
		}
		h := in.NewHost(ips[i])
		b.hosts = append(b.hosts, h)
		b.nodes = append(b.nodes, labNode(t, h, lk, name, func(c *Config) {
			c.StateDir, c.Peers = dir, peers
			c.Userspace, c.NoDNS, c.tunDevice = false, true, tuntest.NewChannelTUN().TUN()
		}))
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
