package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"glow/e2e/lab"
)

// TestRelayHardNATs (issue 4): two sites behind hard NATs (no direct path
// can exist between them) reach each other through the public VPS, over
// both overlay families.
func TestRelayHardNATs(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	_, site1, site2 := vpsAndSites(t, l, lab.HardNAT, "s1", "s2")
	s1H, s1, s2 := site1.h, site1.n, site2.n

	s2V4, _ := s2.ips()
	took, err := waitPing(s1H, s2V4, reachTimeout)
	if err != nil {
		t.Fatalf("s1 cannot ping s2 (%s) through the VPS: %v", s2V4, err)
	}
	metric(t, "hard_hard.first_ping_s", fmt.Sprintf("%.3f", took.Seconds()))
	pingBoth(t, "hard NATs", s1, s2)

	for _, c := range [][2]*node{{s1, s2}, {s2, s1}} {
		if p, _, err := waitPeer(c[0], c[1].name, reachTimeout, relayVia("vps")); err != nil {
			t.Errorf("%s -> %s: %v (last %+v)", c[0].name, c[1].name, err, p)
		} else {
			t.Logf("%s sees %s: relay via %v, rtt %.2f ms", c[0].name, c[1].name, p.Via, p.RTTms)
		}
	}
	out, err := glowPing(s1, "s2", 3)
	if err != nil || !strings.Contains(out, "via relay via vps") {
		t.Errorf("s1: glow ping s2 -c 3: %v, want replies via relay via vps:\n%s", err, out)
	} else {
		t.Logf("s1: glow ping s2 -c 3:\n%s", out)
	}
}

// TestRelayNoRouteOut (issue 4): l2 on a home LAN has no route out (it can
// talk only on the LAN); l1 on the same LAN has one (easy NAT). The VPS and a
// node at another site reach l2 through l1, and l2 reaches them.
func TestRelayNoRouteOut(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	home := l.Bridge("home")
	l1H, l2H := l.Host("l1"), l.Host("l2")
	home.Attach(l1H)
	home.Attach(l2H)
	l.Router("home-gw", home, lab.EasyNAT)
	_, xH := siteHost(l, "x", lab.EasyNAT)
	vps := newNode(t, vpsH, "vps")
	l1 := newNode(t, l1H, "l1")
	l2 := newNode(t, l2H, "l2")
	x := newNode(t, xH, "x")

	vps.up("--user", "alice", "--name", "vps")
	l1.up("--name", "l1", "--join", vps.invite())
	// Joining talks to the inviter's endpoints directly, so l2 joins while
	// it still has its route, then comes back up without one.
	l2.up("--name", "l2", "--join", vps.invite())
	x.up("--name", "x", "--join", vps.invite())
	l2.mustGlow(30*time.Second, "down")
	l2H.NoRouteOut()
	if err := ping(l2H, vpsH.IP()); err == nil {
		t.Fatalf("l2 still reaches the VPS's underlay address %s without a default route", vpsH.IP())
	}
	start := time.Now()
	l2.up()

	vpsV4, _ := peerIPs(t, l2, "vps")
	if took, err := waitPing(l2H, vpsV4, reachTimeout); err != nil {
		t.Errorf("l2 (no route out) cannot ping the VPS (%s) over the overlay: %v", vpsV4, err)
	} else {
		metric(t, "no_route_out.restart_to_vps_ping_s", fmt.Sprintf("%.3f", (time.Since(start)).Seconds()))
		t.Logf("l2 -> vps answered %v after the ping started", took.Round(time.Millisecond))
	}
	pingBoth(t, "vps <-> l2", vps, l2)
	pingBoth(t, "x <-> l2", x, l2)

	check := func(n *node, peer string, ok func(*peerStatus) error) {
		t.Helper()
		if p, _, err := waitPeer(n, peer, reachTimeout, ok); err != nil {
			t.Errorf("%s -> %s: %v (last %+v)", n.name, peer, err, p)
		} else {
			t.Logf("%s sees %s: %s via %v %s", n.name, peer, p.Path, p.Via, p.Endpoint)
		}
	}
	check(vps, "l2", relayVia("l1"))
	check(l2, "vps", relayVia("l1"))
	check(l2, "l1", directOn(l1H))
	// x may reach l1 directly (easy to easy) or through the VPS; either way
	// the last hop to l2 is l1, and l2's first hop out is l1.
	check(x, "l2", func(p *peerStatus) error {
		if p.Path != "relay" || len(p.Via) == 0 || shortName(p.Via[len(p.Via)-1]) != "l1" {
			return fmt.Errorf("path %q via %v, want relay via [... l1]", p.Path, p.Via)
		}
		return nil
	})
	check(l2, "x", func(p *peerStatus) error {
		if p.Path != "relay" || len(p.Via) == 0 || shortName(p.Via[0]) != "l1" {
			return fmt.Errorf("path %q via %v, want relay via [l1 ...]", p.Path, p.Via)
		}
		return nil
	})
	for _, c := range []struct {
		from *node
		to   string
		want string
	}{{vps, "l2", "via relay via l1"}, {l2, "vps", "via relay via l1"}} {
		out, err := glowPing(c.from, c.to, 2)
		if err != nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: glow ping %s -c 2: %v, want replies %q:\n%s", c.from.name, c.to, err, c.want, out)
		} else {
			t.Logf("%s: glow ping %s -c 2:\n%s", c.from.name, c.to, out)
		}
	}
}

// TestRelayFailoverTCP (issue 4): a TCP transfer between two public nodes
// with a direct path survives the loss of that path (UDP between them
// dropped both ways) by moving to the relay r, with every byte intact; once
// the block is lifted the path goes back to direct.
func TestRelayFailoverTCP(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	aH, bH, rH := publicHost(l, "a"), publicHost(l, "b"), publicHost(l, "r")
	a := newNode(t, aH, "a")
	b := newNode(t, bH, "b")
	r := newNode(t, rH, "r")

	a.up("--user", "alice", "--name", "a")
	r.up("--name", "r", "--join", a.invite())
	b.up("--name", "b", "--join", a.invite())
	for _, c := range [][2]*node{{a, b}, {b, a}, {a, r}, {b, r}, {r, a}, {r, b}} {
		v4, _ := peerIPs(t, c[0], c[1].name)
		if _, err := waitPing(c[0].host, v4, reachTimeout); err != nil {
			t.Fatalf("%s cannot ping %s (%s): %v", c[0].name, c[1].name, v4, err)
		}
		if p, _, err := waitPeer(c[0], c[1].name, reachTimeout, directAt(netip.Addr{})); err != nil {
			t.Fatalf("%s -> %s: %v (last %+v)", c[0].name, c[1].name, err, p)
		}
	}
	bV4, _ := b.ips()

	// The transfer: a sends size bytes of a seeded stream to b at rate,
	// paced (~20 s); both ends hash what passed.
	const (
		size  = 40 << 20
		rate  = 2 << 20 // bytes per second
		chunk = 32 << 10
		port  = 5201
	)
	var ln net.Listener
	if err := bH.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(bV4, port).String())
		return err
	}); err != nil {
		t.Fatalf("b: listen: %v", err)
	}
	defer ln.Close()
	var (
		received atomic.Int64
		recvSum  []byte
		recvErr  error
		recvDone = make(chan struct{})
	)
	go func() {
		defer close(recvDone)
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			recvErr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(150 * time.Second))
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			h.Write(buf[:n])
			received.Add(int64(n))
			if err == io.EOF {
				break
			}
			if err != nil {
				recvErr = err
				return
			}
		}
		recvSum = h.Sum(nil)
	}()
	var conn net.Conn
	if err := aH.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(bV4, port).String(), 10*time.Second)
		return err
	}); err != nil {
		t.Fatalf("a: connect to b %s:%d: %v", bV4, port, err)
	}
	var (
		sendSum  []byte
		sendErr  error
		sendDone = make(chan struct{})
	)
	start := time.Now()
	go func() {
		defer close(sendDone)
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(150 * time.Second))
		rng := rand.NewChaCha8([32]byte{'g', 'l', 'o', 'w'})
		h := sha256.New()
		buf := make([]byte, chunk)
		for sent := 0; sent < size; sent += chunk {
			if wait := time.Until(start.Add(time.Duration(sent) * time.Second / rate)); wait > 0 {
				time.Sleep(wait)
			}
			rng.Read(buf)
			h.Write(buf)
			if _, err := conn.Write(buf); err != nil {
				sendErr = fmt.Errorf("after %d bytes: %w", sent, err)
				return
			}
		}
		sendSum = h.Sum(nil)
		conn.(*net.TCPConn).CloseWrite()
	}()

	// Sample the receiver every 100 ms: the longest time without progress
	// (between the first byte and the last) is the stall.
	var (
		mu       sync.Mutex
		maxStall time.Duration
		stallAt  time.Time
	)
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		var last int64
		var lastProgress time.Time
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-recvDone:
				return
			case now := <-tick.C:
				n := received.Load()
				if n == 0 {
					continue
				}
				if n != last || lastProgress.IsZero() {
					last, lastProgress = n, now
					continue
				}
				mu.Lock()
				if gap := now.Sub(lastProgress); gap > maxStall {
					maxStall, stallAt = gap, lastProgress
				}
				mu.Unlock()
			}
		}
	}()

	// Mid-transfer (a fifth of it received over the direct path, however
	// long that took), the Internet drops UDP between a and b (both
	// families, both directions); r stays reachable from both.
	if err := waitFor(120*time.Second, 50*time.Millisecond, func() error {
		if n := received.Load(); n < size/5 {
			return fmt.Errorf("%d of %d bytes received", n, size)
		}
		return nil
	}); err != nil {
		t.Fatalf("the transfer did not get under way before the block: %v", err)
	}
	// The failover starts from a direct path: both ends see it now, just
	// before the cut.
	for _, c := range [][2]*node{{a, b}, {b, a}} {
		p, _, err := waitPeer(c[0], c[1].name, 5*time.Second, directAt(netip.Addr{}))
		if err != nil {
			t.Fatalf("before the block: %s -> %s is not direct: %v (last %+v)", c[0].name, c[1].name, err, p)
		}
		t.Logf("before the block: %s sees %s direct at %s", c[0].name, c[1].name, p.Endpoint)
	}
	blocked := time.Now()
	l.Internet().CutUDP(aH, bH)
	t.Logf("UDP between a and b dropped at %v into the transfer (%d bytes received)", blocked.Sub(start).Round(time.Millisecond), received.Load())
	for _, c := range [][2]*node{{a, b}, {b, a}} {
		p, took, err := waitPeer(c[0], c[1].name, 30*time.Second, relayVia("r"))
		if err != nil {
			t.Errorf("after the block: %s -> %s: %v (last %+v)", c[0].name, c[1].name, err, p)
			continue
		}
		t.Logf("after the block: %s sees %s relay via %v after %v", c[0].name, c[1].name, p.Via, took.Round(time.Millisecond))
		metric(t, c[0].name+".failover_status_s", fmt.Sprintf("%.3f", time.Since(blocked).Seconds()))
	}

	select {
	case <-recvDone:
	case <-time.After(160 * time.Second):
		t.Fatalf("transfer not done after 160 s: %d of %d bytes received", received.Load(), size)
	}
	<-sendDone
	<-sampleDone
	took := time.Since(start)
	if sendErr != nil {
		t.Errorf("sender: %v", sendErr)
	}
	if recvErr != nil {
		t.Errorf("receiver: %v", recvErr)
	}
	if got := received.Load(); got != size {
		t.Errorf("received %d bytes, sent %d", got, size)
	} else if sendSum == nil || !bytes.Equal(recvSum, sendSum) {
		t.Errorf("sha256 of the received bytes %x != sent %x", recvSum, sendSum)
	} else {
		t.Logf("transfer of %d bytes intact (sha256 %x) in %v", size, recvSum[:8], took.Round(time.Millisecond))
	}
	// Every super-packet the kernel handed the TUN was cut (tun's rawTUN).
	for _, n := range []*node{a, b} {
		st, err := n.status()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"tun/unsplittable", "tun/write-failed"} {
			if d, ok := st.Drops[c]; !ok || d != 0 {
				t.Errorf("%s: drop counter %s = %d (present %v), want 0", n.name, c, d, ok)
			}
		}
	}
	mu.Lock()
	stall, at := maxStall, stallAt
	mu.Unlock()
	t.Logf("longest stall %v, starting %v after the block", stall, at.Sub(blocked).Round(time.Millisecond))
	metric(t, "failover_stall_s", fmt.Sprintf("%.1f", stall.Seconds()))
	if p, _, err := waitPeer(a, "b", 5*time.Second, relayVia("r")); err != nil {
		t.Errorf("after the transfer, still blocked: a -> b: %v (last %+v)", err, p)
	}

	// Unblock, with a ping running: how long until direct again, and what
	// the switch back costs.
	pingProc, err := aH.Start("ping", "-n", "-D", "-i", "0.2", "-c", "150", bV4.String())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	unblocked := time.Now()
	l.Internet().RestoreUDP()
	p, took, err := waitPeer(a, "b", 60*time.Second, directAt(netip.Addr{}))
	if err != nil {
		t.Errorf("after unblocking: a -> b not direct within 60 s: %v (last %+v)", err, p)
	} else {
		t.Logf("after unblocking: a sees b direct at %s after %v", p.Endpoint, took.Round(time.Millisecond))
		metric(t, "back_to_direct_s", fmt.Sprintf("%.3f", took.Seconds()))
	}
	if p, _, err := waitPeer(b, "a", reachTimeout, directAt(netip.Addr{})); err != nil {
		t.Errorf("after unblocking: b -> a not direct: %v (last %+v)", err, p)
	}
	pingProc.Kill()
	run := parsePing(pingProc.Output())
	sent := 0
	if len(run.replies) > 0 {
		sent = slices.MaxFunc(run.replies, func(x, y pingReply) int { return x.seq - y.seq }).seq
	}
	run.transmitted = sent
	lost := run.lost()
	t.Logf("ping while switching back: %d replies, lost seqs %v, longest gap %v", len(run.replies), lost, run.longestGap(unblocked).Round(time.Millisecond))
	metric(t, "back_to_direct.lost_pings", strconv.Itoa(len(lost))+"/"+strconv.Itoa(sent))
}
