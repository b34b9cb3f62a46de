package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"glow/e2e/lab"
)

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
	type upResult struct {
		out string
		err error
	}
	done := make(chan upResult, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		res, err := vps.glow(ctx, "up", "--no-dns", "--name", "vps", "--join", code)
		done <- upResult{res.Stdout + res.Stderr, err}
	}()
	hint := regexp.MustCompile(`glow link add udp://` + regexp.QuoteMeta(vpsH.IP().String()) + `:\d+`)
	var line string
	err := waitFor(20*time.Second, 200*time.Millisecond, func() error {
		b, _ := os.ReadFile(filepath.Join(vps.state, "glow.log"))
		if line = hint.FindString(string(b)); line == "" {
			return fmt.Errorf("the vps's log has no %q line yet", hint)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	hinted := time.Since(start)
	nas.mustGlow(20*time.Second, "link", strings.Fields(line)[2:]...)
	r := <-done
	if r.err != nil {
		t.Fatalf("vps: glow up --join: %v\n%s", r.err, r.out)
	}
	vpsJoin := time.Since(start)
	t.Logf("vps: glow up --join (hint after %v, ran %q on the nas):\n%s", hinted.Round(time.Millisecond), line, r.out)
	if !strings.Contains(r.out, line) {
		t.Errorf("glow up --join did not print %q on the terminal", line)
	}
	metric(t, "join_home_first.vps_join_s", fmt.Sprintf("%.3f", vpsJoin.Seconds()))

	// The laptop, behind a hard NAT, joins from a fresh NAS code.
	if _, _, err := waitPeer(nas, "vps", reachTimeout, directAt(vpsH.IP())); err != nil {
		t.Fatalf("nas -> vps: %v", err)
	}
	res := lap.up("--name", "laptop", "--join", nas.invite())
	metric(t, "join_home_first.laptop_join_s", fmt.Sprintf("%.3f", res.Took.Seconds()))
	start = time.Now()
	err = waitFor(reachTimeout, 500*time.Millisecond, func() error {
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
