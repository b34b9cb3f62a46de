package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"glow/e2e/lab"
)

// TestStrangerCannotRelay (issue 4, relays are for the user's own nodes):
// alice has a public VPS (her admin node) and a node home behind a hard NAT.
// mallory, another user and not alice's friend, has a node m on a public
// address and a node m2 behind another hard NAT; both point at the VPS
// (--peer VPS:47470 and a tcp:// stream link to its glow port). The VPS
// refuses them (unknown user): mallory's nodes never list alice's, their
// links never come up, they cannot ping alice's overlay addresses, the VPS
// forwards nothing for them and counts the refused beacons; meanwhile home
// keeps pinging the VPS over the overlay.
func TestStrangerCannotRelay(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	_, homeH := siteHost(l, "home", lab.HardNAT)
	mH := publicHost(l, "m")
	_, m2H := siteHost(l, "m2", lab.HardNAT)
	vps := newNode(t, vpsH, "vps")
	home := newNode(t, homeH, "home")
	m := newNode(t, mH, "m")
	m2 := newNode(t, m2H, "m2")

	vps.up("--user", "alice", "--name", "vps")
	home.up("--name", "home", "--join", vps.invite())
	vpsV4, vpsV6 := vps.ips()
	homeV4, homeV6 := home.ips()
	if _, err := waitPing(homeH, vpsV4, reachTimeout); err != nil {
		t.Fatalf("home cannot ping the VPS (%s): %v", vpsV4, err)
	}
	if _, err := waitPing(vpsH, homeV4, reachTimeout); err != nil {
		t.Fatalf("the VPS cannot ping home (%s): %v", homeV4, err)
	}
	if p, _, err := waitPeer(home, "vps", reachTimeout, directAt(vpsH.IP())); err != nil {
		t.Fatalf("home -> vps: %v (last %+v)", err, p)
	}

	// home pings the VPS over the overlay for the whole stranger phase.
	homePing, err := homeH.Start("ping", "-n", "-D", "-i", "0.2", "-W", "2", vpsV4.String())
	if err != nil {
		t.Fatal(err)
	}
	pingStart := time.Now()

	before, beforeRaw, err := polDrops(vps)
	if err != nil {
		t.Fatalf("vps: drops: %v", err)
	}
	t.Logf("vps drops before mallory: %s", beforeRaw)
	vpsLog := filepath.Join(vps.state, "glow.log")
	logBefore := fileLen(vpsLog)

	// mallory's nodes, pointed at the VPS.
	vpsPeer := netip.AddrPortFrom(vpsH.IP(), 47470).String()
	linkURL := "tcp://" + vpsPeer
	m.up("--user", "mallory", "--name", "m", "--peer", vpsPeer)
	m2.up("--name", "m2", "--join", m.invite(), "--peer", vpsPeer)
	mV4, mV6 := m.ips()
	m2V4, _ := m2.ips()
	for _, n := range []*node{m, m2} {
		res := n.mustGlow(20*time.Second, "link", "add", linkURL)
		t.Logf("%s: glow link add %s: %s", n.name, linkURL, strings.TrimSpace(res.Stdout+res.Stderr))
	}
	attempts := time.Now()

	// For 8 s: mallory's nodes never list alice's (nor alice's mallory's),
	// their links to the VPS are never up.
	alice := map[string]bool{"vps": true, "home": true}
	mallory := map[string]bool{"m": true, "m2": true}
	var violations []string
	linkRows := map[string]linkStatus{}
	note := func(s string) {
		if len(violations) < 20 {
			violations = append(violations, s)
		}
	}
	for deadline := time.Now().Add(8 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		for _, c := range []struct {
			n    *node
			deny map[string]bool
			user string
		}{{m, alice, "alice"}, {m2, alice, "alice"}, {vps, mallory, "mallory"}, {home, mallory, "mallory"}} {
			st, err := c.n.status()
			if err != nil {
				note(fmt.Sprintf("%s: status: %v", c.n.name, err))
				continue
			}
			for _, p := range st.Peers {
				if c.deny[shortName(p.Name)] || p.User == c.user {
					note(fmt.Sprintf("%s lists %s (user %s, online %v, path %s)", c.n.name, p.Name, p.User, p.Online, p.Path))
				}
			}
		}
		for _, n := range []*node{m, m2} {
			ls, raw, err := linkList(n)
			if err != nil {
				note(fmt.Sprintf("%s: glow link list: %v", n.name, err))
				continue
			}
			found := false
			for _, row := range ls {
				if row.Up || row.Peer != "" && alice[shortName(row.Peer)] {
					note(fmt.Sprintf("%s: link up or to alice: %+v", n.name, row))
				}
				if row.URL == linkURL {
					found = true
					linkRows[n.name] = row
				}
			}
			if !found {
				note(fmt.Sprintf("%s: glow link list has no %s: %s", n.name, linkURL, strings.TrimSpace(raw)))
			}
		}
	}
	for _, v := range violations {
		t.Errorf("during the 8 s after mallory pointed at the VPS: %s", v)
	}
	for name, row := range linkRows {
		t.Logf("%s: glow link list: %+v", name, row)
	}

	// The link's status says why (the VPS refused the handshake).
	for _, n := range []*node{m, m2} {
		raw, err := waitLink(n, linkURL, "", 20*time.Second, func(row linkStatus) error {
			if row.Up {
				return fmt.Errorf("link %+v is up", row)
			}
			if !strings.HasPrefix(row.Status, "error") {
				return fmt.Errorf("link %+v: no error yet", row)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: link to the VPS: %v", n.name, err)
		} else {
			t.Logf("%s: glow link list --json: %s", n.name, strings.TrimSpace(raw))
		}
	}

	// The VPS's log shows the refusal of each of mallory's links.
	var refusals []string
	err = waitFor(20*time.Second, 250*time.Millisecond, func() error {
		refusals = refusals[:0]
		for _, line := range strings.Split(readFrom(vpsLog, logBefore), "\n") {
			if strings.Contains(line, "link from") && strings.Contains(line, "refused") {
				refusals = append(refusals, line)
			}
		}
		var missing []string
		for _, who := range []string{"m.mallory", "m2.mallory"} {
			ok := false
			for _, line := range refusals {
				ok = ok || strings.Contains(line, who) && strings.Contains(line, "unknown user")
			}
			if !ok {
				missing = append(missing, who)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("no refusal of %v (unknown user) in the VPS's glow.log; refusals: %q", missing, refusals)
		}
		return nil
	})
	if err != nil {
		t.Errorf("vps: %v", err)
	} else {
		t.Logf("vps glow.log: %d link refusals, e.g. %s", len(refusals), refusals[0])
	}

	// mallory cannot reach alice's overlay addresses, nor alice mallory's.
	for _, c := range []struct {
		from *lab.Host
		who  string
		to   string
		addr netip.Addr
	}{
		{mH, "m", "vps", vpsV4}, {mH, "m", "vps", vpsV6}, {mH, "m", "home", homeV4}, {mH, "m", "home", homeV6},
		{m2H, "m2", "vps", vpsV4}, {m2H, "m2", "vps", vpsV6}, {m2H, "m2", "home", homeV4}, {m2H, "m2", "home", homeV6},
		{homeH, "home", "m", mV4}, {homeH, "home", "m", mV6}, {vpsH, "vps", "m2", m2V4},
	} {
		if got, out := pingCount(c.from, c.addr, 5); got != 0 {
			t.Errorf("%s pinged %s (%s): %d of 5 replies:\n%s", c.who, c.to, c.addr, got, out)
		}
	}
	for _, c := range [][2]*node{{m, m2}, {m2, m}} {
		if out, err := glowPing(c[0], "vps", 1); err == nil {
			t.Errorf("%s: glow ping vps succeeded:\n%s", c[0].name, out)
		} else {
			t.Logf("%s: glow ping vps: %v: %s", c[0].name, err, strings.TrimSpace(out))
		}
	}
	// mallory's own nodes do reach each other (the test's strangers work).
	pingBoth(t, "mallory's own: m <-> m2", m, m2)

	// The VPS's counters: nothing forwarded, the beacons refused.
	var after map[string]uint64
	var afterRaw string
	err = waitFor(20*time.Second, 500*time.Millisecond, func() error {
		var err error
		after, afterRaw, err = polDrops(vps)
		if err != nil {
			return err
		}
		if after["control/beacon-other-user"] == 0 {
			return fmt.Errorf("control/beacon-other-user = 0 (drops %s)", afterRaw)
		}
		return nil
	})
	if err != nil {
		t.Errorf("vps: refused beacons not counted: %v", err)
	}
	t.Logf("vps drops after mallory: %s", afterRaw)
	for _, k := range []string{"relay/forwarded", "relay/bytes"} {
		if after[k] != before[k] {
			t.Errorf("vps: %s went from %d to %d while only mallory tried to use it", k, before[k], after[k])
		}
	}
	metric(t, "stranger.vps_beacon_other_user", strconv.FormatUint(after["control/beacon-other-user"], 10))
	metric(t, "stranger.vps_relay_forwarded_delta", strconv.FormatUint(after["relay/forwarded"]-before["relay/forwarded"], 10))
	metric(t, "stranger.probe_s", fmt.Sprintf("%.1f", time.Since(attempts).Seconds()))

	// alice's nodes were unaffected: home's ping to the VPS answered
	// throughout, and both still reach each other.
	homePing.Kill()
	run := parsePing(homePing.Output())
	sent := 0
	for _, r := range run.replies {
		sent = max(sent, r.seq)
	}
	run.transmitted = sent
	lost := run.lost()
	gap := run.longestGap(pingStart)
	t.Logf("home -> vps during mallory's attempts: %d replies of %d, lost %v, longest gap %v", len(run.replies), sent, lost, gap.Round(time.Millisecond))
	metric(t, "stranger.home_vps_lost_pings", strconv.Itoa(len(lost))+"/"+strconv.Itoa(sent))
	if sent < 20 || len(lost) > sent/10 || gap > 3*time.Second {
		t.Errorf("home -> vps over the overlay was disturbed: %d replies of %d, lost %v, longest gap %v", len(run.replies), sent, lost, gap)
	}
	pingBoth(t, "alice's own: home <-> vps", home, vps)
	if p, _, err := waitPeer(home, "vps", reachTimeout, directAt(vpsH.IP())); err != nil {
		t.Errorf("after mallory: home -> vps: %v (last %+v)", err, p)
	}
}

// pingCount sends count kernel pings 200 ms apart from h to addr and returns
// how many were answered.
func pingCount(h *lab.Host, addr netip.Addr, count int) (int, string) {
	_, got, out, err := pingRTT(h, addr, count)
	if err != nil && got == 0 {
		out += "\n(" + err.Error() + ")"
	}
	return got, out
}

// fileLen is the size of path (0 when it is missing).
func fileLen(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns path's content from offset on ("" when unreadable).
func readFrom(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	return string(b[offset:])
}
