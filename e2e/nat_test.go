package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"glow/e2e/lab"
)

// Helpers shared by the NAT and relay tests.

// publicHost returns a new host attached to the lab's fake Internet.
func publicHost(l *lab.Lab, name string) *lab.Host {
	h := l.Host(name)
	l.Internet().Attach(h)
	return h
}

// siteHost returns a host alone on a new LAN behind a router of the given
// NAT kind (the LAN is named name+"-lan", the router name+"-gw").
// site is one node on its own LAN behind its NAT router (r is nil for a
// public host).
type site struct {
	r *lab.Router
	h *lab.Host
	n *node
}

// vpsAndSites builds a public VPS (no router) and two sites named a and b
// behind NATs of kind nat; then the VPS creates user alice and the sites
// join it with its invites.
func vpsAndSites(t *testing.T, l *lab.Lab, nat lab.NAT, a, b string) (vps, sa, sb site) {
	vps.h = publicHost(l, "vps")
	sa.r, sa.h = siteHost(l, a, nat)
	sb.r, sb.h = siteHost(l, b, nat)
	vps.n, sa.n, sb.n = newNode(t, vps.h, "vps"), newNode(t, sa.h, a), newNode(t, sb.h, b)
	vps.n.up("--user", "alice", "--name", "vps")
	sa.n.up("--name", a, "--join", vps.n.invite())
	sb.n.up("--name", b, "--join", vps.n.invite())
	return vps, sa, sb
}

func siteHost(l *lab.Lab, name string, nat lab.NAT) (*lab.Router, *lab.Host) {
	lan := l.Bridge(name + "-lan")
	h := l.Host(name)
	lan.Attach(h)
	return l.Router(name+"-gw", lan, nat), h
}

// peerNamed returns the peer called name in st, or nil.
func peerNamed(st *status, name string) *peerStatus {
	for i := range st.Peers {
		if st.Peers[i].Name == name {
			return &st.Peers[i]
		}
	}
	return nil
}

// waitPeer polls n's status every 100 ms until its peer called name passes
// ok, at most timeout; it returns the last view of the peer and how long the
// wait took.
func waitPeer(n *node, name string, timeout time.Duration, ok func(*peerStatus) error) (*peerStatus, time.Duration, error) {
	start := time.Now()
	var last *peerStatus
	err := waitFor(timeout, 100*time.Millisecond, func() error {
		st, err := n.status()
		if err != nil {
			return err
		}
		p := peerNamed(st, name)
		if p == nil {
			return fmt.Errorf("%s does not list %s", n.name, name)
		}
		cp := *p
		last = &cp
		if !p.Online {
			return fmt.Errorf("%s sees %s offline (path %q)", n.name, name, p.Path)
		}
		return ok(p)
	})
	return last, time.Since(start), err
}

// directAt accepts a direct path whose endpoint's address is one of want
// (any port; any address when want is empty or the zero Addr).
func directAt(want ...netip.Addr) func(*peerStatus) error {
	return func(p *peerStatus) error {
		if p.Path != "direct" {
			return fmt.Errorf("%s: path %q via %v, want direct", p.Name, p.Path, p.Via)
		}
		ep, err := netip.ParseAddrPort(p.Endpoint)
		if err != nil {
			return fmt.Errorf("%s: direct endpoint %q: %v", p.Name, p.Endpoint, err)
		}
		if len(want) == 0 || !want[0].IsValid() || slices.Contains(want, ep.Addr().Unmap()) {
			return nil
		}
		return fmt.Errorf("%s: direct at %s, want an endpoint on %v", p.Name, ep, want)
	}
}

// directOn accepts a direct path to any address of host h: a host with
// both families on a LAN is reached on whichever answered first (glow keeps
// the first proven path unless another is clearly faster).
func directOn(h *lab.Host) func(*peerStatus) error { return directAt(h.Addrs()...) }

// shortName drops the domain of a node name (vps.alice.glow -> vps).
func shortName(s string) string {
	name, _, _ := strings.Cut(s, ".")
	return name
}

// relayVia accepts a relay path through exactly the nodes via, in order.
func relayVia(via ...string) func(*peerStatus) error {
	return func(p *peerStatus) error {
		got := make([]string, len(p.Via))
		for i, v := range p.Via {
			got[i] = shortName(v)
		}
		if p.Path != "relay" || !slices.Equal(got, via) {
			return fmt.Errorf("%s: path %q via %v (endpoint %q), want relay via %v", p.Name, p.Path, p.Via, p.Endpoint, via)
		}
		return nil
	}
}

// glowPing runs `glow ping target -c count` on n and returns its output.
func glowPing(n *node, target string, count int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(count)*time.Second+30*time.Second)
	defer cancel()
	res, err := n.glow(ctx, "ping", target, "-c", strconv.Itoa(count))
	return res.Stdout + res.Stderr, err
}

// peerIPs waits (reachTimeout) until n knows the peer called name and
// returns its overlay addresses.
func peerIPs(t *testing.T, n *node, name string) (v4, v6 netip.Addr) {
	t.Helper()
	err := waitFor(reachTimeout, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := n.glow(ctx, "ip", name)
		if err != nil {
			return err
		}
		f := strings.Fields(res.Stdout)
		if len(f) != 2 {
			return fmt.Errorf("glow ip %s: %q", name, res.Stdout)
		}
		if v4, err = netip.ParseAddr(f[0]); err != nil {
			return err
		}
		v6, err = netip.ParseAddr(f[1])
		return err
	})
	if err != nil {
		t.Fatalf("%s does not know %s: %v", n.name, name, err)
	}
	return v4, v6
}

// pingBoth waits until each of from's hosts reaches each address of to's
// (kernel ping over the overlay, both families) and fails t otherwise.
func pingBoth(t *testing.T, stage string, a, b *node) {
	t.Helper()
	for _, pair := range [][2]*node{{a, b}, {b, a}} {
		v4, v6 := peerIPs(t, pair[0], pair[1].name)
		for _, addr := range []netip.Addr{v4, v6} {
			took, err := waitPing(pair[0].host, addr, reachTimeout)
			if err != nil {
				t.Errorf("%s: ping %s -> %s (%s): %v", stage, pair[0].name, pair[1].name, addr, err)
			} else {
				t.Logf("%s: ping %s -> %s (%s) answered after %v", stage, pair[0].name, pair[1].name, addr, took.Round(time.Millisecond))
			}
		}
	}
}

type netcheckReport struct {
	Mapping   string   `json:"mapping"`
	Reflexive []string `json:"reflexive"`
	Servers   []struct {
		Server    string  `json:"server"`
		Reflexive string  `json:"reflexive"`
		LatencyMS float64 `json:"latency_ms"`
		Error     string  `json:"error"`
	} `json:"servers"`
	PortMap   map[string]bool `json:"portmap"`
	Mapped    string          `json:"mapped"`
	LocalPort uint16          `json:"local_port"`
	PortClash string          `json:"port_clash"`
	Relays    []struct {
		Name  string  `json:"name"`
		Addr  string  `json:"addr"`
		RTTms float64 `json:"rtt_ms"`
	} `json:"relays"`
}

// netcheck runs `glow netcheck --json` on n.
func netcheck(n *node) (*netcheckReport, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := n.glow(ctx, "netcheck", "--json")
	if err != nil {
		return nil, res.Stdout, err
	}
	var r netcheckReport
	if err := json.Unmarshal([]byte(res.Stdout), &r); err != nil {
		return nil, res.Stdout, fmt.Errorf("glow netcheck --json: %v in %q", err, res.Stdout)
	}
	return &r, res.Stdout, nil
}

// pingRun is what a `ping -n -D` run printed: the replies, in order, with
// the time each arrived, and the summary counts.
type pingRun struct {
	replies     []pingReply
	transmitted int
	received    int
}

type pingReply struct {
	seq int
	at  time.Time
}

var (
	pingReplyRE   = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from .*icmp_seq=(\d+)`)
	pingSummaryRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
)

func parsePing(out string) pingRun {
	var r pingRun
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := pingReplyRE.FindStringSubmatch(line); m != nil {
			sec, _ := strconv.ParseInt(m[1], 10, 64)
			frac := (m[2] + "000000")[:6]
			us, _ := strconv.ParseInt(frac, 10, 64)
			seq, _ := strconv.Atoi(m[3])
			r.replies = append(r.replies, pingReply{seq: seq, at: time.Unix(sec, us*1000)})
		} else if m := pingSummaryRE.FindStringSubmatch(line); m != nil {
			r.transmitted, _ = strconv.Atoi(m[1])
			r.received, _ = strconv.Atoi(m[2])
		}
	}
	return r
}

// lost lists the sequence numbers 1..transmitted with no reply.
func (r pingRun) lost() []int {
	got := map[int]bool{}
	for _, p := range r.replies {
		got[p.seq] = true
	}
	var lost []int
	for s := 1; s <= r.transmitted; s++ {
		if !got[s] {
			lost = append(lost, s)
		}
	}
	return lost
}

// longestGap is the longest time between consecutive replies that arrived
// after since (counting from since itself).
func (r pingRun) longestGap(since time.Time) time.Duration {
	var gap time.Duration
	prev := since
	for _, p := range r.replies {
		if p.at.Before(since) {
			continue
		}
		gap = max(gap, p.at.Sub(prev))
		prev = p.at
	}
	return gap
}

// TestNATEasyHomes (issue 3): two homes behind easy NATs and a public VPS.
// The homes get a direct path to each other at the other router's public
// address, quickly after the first packet, and get it back after a router
// loses its mappings (conntrack -F).
func TestNATEasyHomes(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	_, sa, sb := vpsAndSites(t, l, lab.EasyNAT, "a", "b")
	rA, aH, a := sa.r, sa.h, sa.n
	rB, b := sb.r, sb.n

	// First packet: a kernel ping from a to b right after both are up; the
	// time until a's status shows b direct at b's router is direct_after.
	bV4, _ := b.ips()
	start := time.Now()
	pingProc, err := aH.Start("ping", "-n", "-D", "-i", "0.1", "-w", "40", bV4.String())
	if err != nil {
		t.Fatal(err)
	}
	p, took, err := waitPeer(a, "b", 40*time.Second, directAt(rB.WAN))
	pingProc.Kill()
	run := parsePing(pingProc.Output())
	if len(run.replies) > 0 {
		metric(t, "first_reply_s", fmt.Sprintf("%.3f", run.replies[0].at.Sub(start).Seconds()))
	} else {
		t.Errorf("a: no reply from b (%s) within %v of the first packet:\n%s", bV4, took.Round(time.Millisecond), pingProc.Output())
	}
	if err != nil {
		t.Fatalf("a: no direct path to b at %s: %v (last %+v)", rB.WAN, err, p)
	}
	metric(t, "direct_after_s", fmt.Sprintf("%.3f", took.Seconds()))
	t.Logf("a sees b direct at %s after %v", p.Endpoint, took.Round(time.Millisecond))
	if p, _, err := waitPeer(b, "a", reachTimeout, directAt(rA.WAN)); err != nil {
		t.Errorf("b: no direct path to a at %s: %v (last %+v)", rA.WAN, err, p)
	} else {
		t.Logf("b sees a direct at %s", p.Endpoint)
	}

	pingBoth(t, "easy homes", a, b)
	if out, err := glowPing(a, "b", 3); err != nil || !strings.Contains(out, "via direct "+rB.WAN.String()+":") {
		t.Errorf("a: glow ping b -c 3: %v, want replies via direct %s:PORT:\n%s", err, rB.WAN, out)
	} else {
		t.Logf("a: glow ping b -c 3:\n%s", out)
	}

	// Mapping lost while a pings b every 200 ms: first `conntrack -F` on b's
	// router (an easy NAT hands back the same public port), then a flush that
	// also moves b's public port (what a router reboot looks like).
	mappingLost := func(label string, lose func(), newPort bool) {
		t.Helper()
		const interval, count = 200 * time.Millisecond, 150 // 30 s
		before := p.Endpoint
		pingProc, err := aH.Start("ping", "-n", "-D", "-i", "0.2", "-c", strconv.Itoa(count), bV4.String())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // a stretch of steady replies first
		flushed := time.Now()
		lose()
		p, took, err := waitPeer(a, "b", 30*time.Second, func(p *peerStatus) error {
			if err := directAt(rB.WAN)(p); err != nil {
				return err
			}
			if newPort && p.Endpoint == before {
				return fmt.Errorf("still direct at the old endpoint %s", before)
			}
			// Direct again, and carrying pings sent after the loss.
			r := parsePing(pingProc.Output())
			if n := len(r.replies); n == 0 || !r.replies[n-1].at.After(flushed.Add(interval)) {
				return fmt.Errorf("no ping reply since the mapping was lost")
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s on b's router: not back to direct at %s with replies within 30 s: %v (last %+v)", label, rB.WAN, err, p)
		} else {
			t.Logf("%s on b's router: a sees b direct at %s (was %s) with replies after %v", label, p.Endpoint, before, took.Round(time.Millisecond))
		}
		if err := pingProc.Wait(count*interval + 20*time.Second); err != nil {
			t.Logf("%s: ping: %v", label, err)
		}
		run := parsePing(pingProc.Output())
		lost := run.lost()
		recovery := time.Duration(0)
		if len(lost) > 0 {
			last := lost[len(lost)-1]
			recovery = -1
			for _, r := range run.replies {
				if r.seq > last {
					recovery = r.at.Sub(flushed)
					break
				}
			}
		}
		if recovery < 0 {
			t.Errorf("%s: pings never came back (lost %v of %d)", label, lost, run.transmitted)
		}
		t.Logf("%s: ping: %d sent, %d received, lost seqs %v", label, run.transmitted, run.received, lost)
		metric(t, label+".recovery_s", fmt.Sprintf("%.3f", recovery.Seconds()))
		metric(t, label+".longest_reply_gap_s", fmt.Sprintf("%.3f", run.longestGap(flushed).Seconds()))
		metric(t, label+".lost_pings", fmt.Sprintf("%d/%d", run.transmitted-run.received, run.transmitted))
		if err == nil {
			metric(t, label+".status_direct_s", fmt.Sprintf("%.3f", took.Seconds()))
		}
	}
	mappingLost("conntrack_flush", rB.FlushConntrack, false)
	if p2, _, err := waitPeer(a, "b", reachTimeout, directAt(rB.WAN)); err == nil {
		p = p2
	}
	mappingLost("new_public_port", func() { rB.RemapPorts(40000, 40999) }, true)
}

// TestNATNetcheck (issue 3): netcheck behind an easy NAT says
// endpoint-independent, behind a hard NAT endpoint-dependent, with two
// STUN-answering public glow nodes (the VPS and a second public node) known
// as peers.
func TestNATNetcheck(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	pubH := publicHost(l, "pub")
	rE, eH := siteHost(l, "easy", lab.EasyNAT)
	rH, hH := siteHost(l, "hard", lab.HardNAT)
	vps := newNode(t, vpsH, "vps")
	pub := newNode(t, pubH, "pub")
	easy := newNode(t, eH, "easy")
	hard := newNode(t, hH, "hard")

	vps.up("--user", "alice", "--name", "vps")
	pub.up("--name", "pub", "--join", vps.invite())
	easy.up("--name", "easy", "--join", vps.invite())
	hard.up("--name", "hard", "--join", vps.invite())

	for _, c := range []struct {
		n    *node
		r    *lab.Router
		want string
	}{{easy, rE, "endpoint-independent"}, {hard, rH, "endpoint-dependent"}} {
		// Direct paths to both public nodes make them STUN servers.
		for _, pn := range []*node{vps, pub} {
			v4, _ := peerIPs(t, c.n, pn.name)
			if _, err := waitPing(c.n.host, v4, reachTimeout); err != nil {
				t.Errorf("%s: ping %s (%s): %v", c.n.name, pn.name, v4, err)
			}
			if p, _, err := waitPeer(c.n, pn.name, reachTimeout, directOn(pn.host)); err != nil {
				t.Errorf("%s: no direct path to %s: %v (last %+v)", c.n.name, pn.name, err, p)
			}
		}
		var rep *netcheckReport
		var raw string
		err := waitFor(reachTimeout, time.Second, func() error {
			var err error
			rep, raw, err = netcheck(c.n)
			if err != nil {
				return err
			}
			ok := 0
			for _, s := range rep.Servers {
				if s.Reflexive != "" && s.Error == "" {
					ok++
				}
			}
			if ok < 2 || rep.Mapping == "unknown" {
				return fmt.Errorf("%d servers answered, mapping %q", ok, rep.Mapping)
			}
			return nil
		})
		t.Logf("%s (%s NAT): glow netcheck --json: %s", c.n.name, c.r.NAT, strings.TrimSpace(raw))
		if err != nil {
			t.Errorf("%s: netcheck: %v", c.n.name, err)
			continue
		}
		if rep.Mapping != c.want {
			t.Errorf("%s behind a %s NAT: netcheck mapping %q, want %q", c.n.name, c.r.NAT, rep.Mapping, c.want)
		}
		for _, s := range rep.Servers {
			if s.Reflexive == "" {
				continue
			}
			if ap, err := netip.ParseAddrPort(s.Reflexive); err != nil || ap.Addr().Unmap() != c.r.WAN {
				t.Errorf("%s: STUN server %s saw it at %q, want %s:PORT (its router)", c.n.name, s.Server, s.Reflexive, c.r.WAN)
			}
			metric(t, c.n.name+".stun_latency_ms."+s.Server, fmt.Sprintf("%.2f", s.LatencyMS))
		}
		metric(t, c.n.name+".mapping", rep.Mapping)
	}
}
