package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"glow/e2e/lab"
)

// joinReachedOut runs `glow up --no-dns --join code ARGS...` on j in the
// background, waits for the line of its hint that says to run `glow link
// add SCHEME://ADDR:PORT` on a member (ADDR is j's address addr), runs it on
// member, and returns that line and how long the join took in all. For
// scheme "ws" it takes the tcp:// line and runs it as ws:// (the same port
// serves both; the hint prints udp:// and tcp:// only). It fails
// the test if the hint does not come, the join fails, or glow up did not
// print the line on the terminal.
func joinReachedOut(t *testing.T, j, member *node, addr netip.Addr, scheme, code string, args ...string) (string, time.Duration) {
	t.Helper()
	type upResult struct {
		out string
		err error
	}
	done := make(chan upResult, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		res, err := j.glow(ctx, "up", append(append([]string{"--no-dns"}, args...), "--join", code)...)
		done <- upResult{res.Stdout + res.Stderr, err}
	}()
	hinted := scheme
	if scheme == "ws" {
		hinted = "tcp"
	}
	hint := regexp.MustCompile(`glow link add ` + hinted + `://` + regexp.QuoteMeta(addr.String()) + `:\d+`)
	var line string
	err := waitFor(20*time.Second, 200*time.Millisecond, func() error {
		b, _ := os.ReadFile(filepath.Join(j.state, "glow.log"))
		if line = hint.FindString(string(b)); line == "" {
			return fmt.Errorf("%s's log has no %q line yet", j.name, hint)
		}
		return nil
	})
	if err != nil {
		<-done
		t.Fatal(err)
	}
	hintedAfter := time.Since(start)
	printed := line
	line = strings.Replace(line, hinted+"://", scheme+"://", 1)
	member.mustGlow(20*time.Second, "link", strings.Fields(line)[2:]...)
	r := <-done
	if r.err != nil {
		t.Fatalf("%s: glow up --join: %v\n%s", j.name, r.err, r.out)
	}
	took := time.Since(start)
	t.Logf("%s: glow up --join (hint after %v, ran %q on %s, joined after %v):\n%s", j.name, hintedAfter.Round(time.Millisecond), line, member.name, took.Round(time.Millisecond), r.out)
	if !strings.Contains(r.out, printed) {
		t.Errorf("%s: glow up --join did not print %q on the terminal", j.name, printed)
	}
	return line, took
}

// TestJoinHomeFirst (issue 14): the user starts at home. The NAS, behind an
// easy NAT, creates the user; a public VPS joins from the NAS's code, with
// the one command `glow up --join` prints there (`glow link add
// udp://VPS:47470`) run on the NAS; then a laptop behind a hard NAT
// (MASQUERADE --random-fully) joins from a fresh NAS code, with nothing
// else done, and pings the NAS by name.
func TestJoinHomeFirst(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	_, nasH := siteHost(l, "nas", lab.EasyNAT)
	_, lapH := siteHost(l, "lap", lab.HardNAT)
	nas, vps, lap := newNode(t, nasH, "nas"), newNode(t, vpsH, "vps"), newNode(t, lapH, "laptop")

	nas.up("--user", "alice", "--name", "nas")
	code := nas.invite()

	// The VPS cannot reach the NAS; its `glow up --join` says what to run.
	line, took := joinReachedOut(t, vps, nas, vpsH.IP(), "udp", code, "--name", "vps")
	metric(t, "join_home_first.vps_join_s", fmt.Sprintf("%.3f", took.Seconds()))
	t.Logf("JOIN vps (home first, %q on the nas): %v", line, took.Round(time.Millisecond))

	// The laptop, behind a hard NAT, joins from a fresh NAS code.
	if _, _, err := waitPeer(nas, "vps", reachTimeout, directOn(vpsH)); err != nil {
		t.Fatalf("nas -> vps: %v", err)
	}
	res := lap.up("--name", "laptop", "--join", nas.invite())
	metric(t, "join_home_first.laptop_join_s", fmt.Sprintf("%.3f", res.Took.Seconds()))
	t.Logf("JOIN laptop (hard NAT, nothing else done): %v", res.Took.Round(time.Millisecond))
	start := time.Now()
	err := waitFor(reachTimeout, 500*time.Millisecond, func() error {
		out, err := glowPing(lap, "nas", 1)
		if err != nil {
			return fmt.Errorf("glow ping nas: %v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("laptop: %v", err)
	}
	out, err := glowPing(lap, "nas", 3)
	t.Logf("laptop: glow ping nas -c 3 (first answer %v after joining): %v\n%s", time.Since(start).Round(time.Millisecond), err, out)
	nasV4, _ := peerIPs(t, lap, "nas")
	if took, err := waitPing(lapH, nasV4, reachTimeout); err != nil {
		t.Errorf("laptop cannot ping nas (%s) over the overlay: %v", nasV4, err)
	} else {
		metric(t, "join_home_first.laptop_ping_nas_s", fmt.Sprintf("%.3f", (time.Since(start)).Seconds()))
		t.Logf("laptop -> nas %s answered %v after the ping started", nasV4, took.Round(time.Millisecond))
	}
}

// TestJoinLANOnly (issue 14): l2 on a home LAN has no route out; the only
// node of the user it can reach is its LAN neighbour l1. It joins from a
// code of the VPS (which it cannot reach) through l1, found by its LAN
// beacon, and then reaches x at another site through relays.
func TestJoinLANOnly(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	home := l.Bridge("home")
	l1H, l2H := l.Host("l1"), l.Host("l2")
	home.Attach(l1H)
	home.Attach(l2H)
	l.Router("home-gw", home, lab.EasyNAT)
	_, xH := siteHost(l, "x", lab.HardNAT)
	vps, l1, l2, x := newNode(t, vpsH, "vps"), newNode(t, l1H, "l1"), newNode(t, l2H, "l2"), newNode(t, xH, "x")

	vps.up("--user", "alice", "--name", "vps")
	l1.up("--name", "l1", "--join", vps.invite())
	x.up("--name", "x", "--join", vps.invite())
	l2H.NoRouteOut()
	if err := ping(l2H, vpsH.IP()); err == nil {
		t.Fatalf("l2 still reaches the VPS's underlay address %s without a default route", vpsH.IP())
	}
	res := l2.up("--name", "l2", "--join", vps.invite())
	metric(t, "join_lan_only.join_s", fmt.Sprintf("%.3f", res.Took.Seconds()))
	t.Logf("JOIN l2 (LAN only, through its neighbour): %v", res.Took.Round(time.Millisecond))
	start := time.Now()
	xV4, _ := peerIPs(t, l2, "x")
	if took, err := waitPing(l2H, xV4, reachTimeout); err != nil {
		t.Errorf("l2 (no route out) cannot ping x (%s) over the overlay: %v", xV4, err)
	} else {
		metric(t, "join_lan_only.first_ping_x_s", fmt.Sprintf("%.3f", time.Since(start).Seconds()))
		t.Logf("l2 -> x answered %v after the ping started", took.Round(time.Millisecond))
	}
	out, err := glowPing(l2, "x", 2)
	t.Logf("l2: glow ping x -c 2: %v\n%s", err, out)
	if err != nil || !strings.Contains(out, "via relay via l1") {
		t.Errorf("l2: glow ping x: want replies via relay via l1 ...")
	}
}

// TestJoinReachOut (issue 14): a VPS whose firewall lets nothing out but
// replies (so it can reach no member, while a member can reach it) joins
// from the code of a NAS behind a NAT once a node of the user runs the
// `glow link add` line the VPS's `glow up --join` prints: udp:// and
// tcp:// on the NAS (the inviter) for two VPSs, and ws:// on the NAS's LAN
// neighbour desk (which passes the request on to the NAS) for a third.
// Each then pings the NAS by name over the overlay.
func TestJoinReachOut(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	lan := l.Bridge("home")
	nasH, deskH := l.Host("nas"), l.Host("desk")
	lan.Attach(nasH)
	lan.Attach(deskH)
	l.Router("home-gw", lan, lab.EasyNAT)
	nas, desk := newNode(t, nasH, "nas"), newNode(t, deskH, "desk")
	nas.up("--user", "alice", "--name", "nas")
	desk.up("--name", "desk", "--join", nas.invite())
	for _, tc := range []struct {
		scheme string
		on     *node
	}{{"udp", nas}, {"tcp", nas}, {"ws", desk}} {
		scheme := tc.scheme
		name := "vps-" + scheme
		h := publicHost(l, name)
		for _, ipt := range []string{"iptables", "ip6tables"} { // replies only
			h.MustRun(ipt, "-w", "5", "-A", "OUTPUT", "-o", "eth0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
			h.MustRun(ipt, "-w", "5", "-A", "OUTPUT", "-o", "eth0", "-j", "DROP")
		}
		if err := ping(h, nasH.IP()); err == nil {
			t.Fatalf("%s reaches the nas's LAN address %s", name, nasH.IP())
		}
		vps := newNode(t, h, name)
		line, took := joinReachedOut(t, vps, tc.on, h.IP(), scheme, nas.invite(), "--name", name)
		metric(t, "join_reach_out."+scheme+"_join_s", fmt.Sprintf("%.3f", took.Seconds()))
		t.Logf("JOIN %s (%q on %s): %v", name, line, tc.on.name, took.Round(time.Millisecond))
		start := time.Now()
		err := waitFor(reachTimeout, 500*time.Millisecond, func() error {
			out, err := glowPing(vps, "nas", 1)
			if err != nil {
				return fmt.Errorf("glow ping nas: %v: %s", err, out)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out, err := glowPing(vps, "nas", 2)
		t.Logf("%s: glow ping nas -c 2 (first answer %v after joining): %v\n%s", name, time.Since(start).Round(time.Millisecond), err, out)
	}
}
