package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"glow/e2e/lab"
)

// Certificate renewal and expiry with real daemons (issue 15). The user's
// certificates last two minutes (glow up --cert-lifetime 2m), so renewal
// (at half the lifetime) and expiry happen within a test. These are the
// long tests of the tier (about six minutes each); they run in parallel
// with each other, each in its own lab.

const testLifetime = 2 * time.Minute

// renewLAN brings up n1 (the admin, creating user alice with two-minute
// certificates), n2 and n3 on one LAN, n2 and n3 joining with n1's codes,
// and waits until each reaches the next over the overlay.
func renewLAN(t *testing.T) []*node {
	t.Helper()
	l := lab.New(t)
	needGlow(t)
	lan := l.Bridge("lan")
	var nodes []*node
	for _, name := range []string{"n1", "n2", "n3"} {
		h := l.Host(name)
		lan.Attach(h)
		nodes = append(nodes, newNode(t, h, name))
	}
	nodes[0].up("--user", "alice", "--name", "n1", "--cert-lifetime", testLifetime.String())
	for _, n := range nodes[1:] {
		n.up("--name", n.name, "--join", nodes[0].invite())
	}
	for i, n := range nodes {
		to := nodes[(i+1)%3]
		v4, _ := peerIPs(t, n, to.name)
		if _, err := waitPing(n.host, v4, reachTimeout); err != nil {
			t.Fatalf("%s cannot ping %s (%s): %v", n.name, to.name, v4, err)
		}
	}
	return nodes
}

// selfExpiry returns the node's own certificate expiry and its warning.
func selfExpiry(n *node) (string, string, error) {
	st, err := n.status()
	if err != nil {
		return "", "", err
	}
	return st.Self.Expires, st.Self.Warning, nil
}

// TestRenewalSoak: with two-minute certificates, n1 -> n2 -> n3 -> n1 ping
// each other every 200 ms for six minutes while every certificate is
// renewed (at half its lifetime: about six times each). Not one ping is
// lost; the longest gap between replies is reported.
func TestRenewalSoak(t *testing.T) {
	t.Parallel()
	nodes := renewLAN(t)
	const interval, count = 200 * time.Millisecond, 1800 // 6 minutes
	var pings []*lab.Proc
	start := time.Now()
	for i, n := range nodes {
		v4, _ := peerIPs(t, n, nodes[(i+1)%3].name)
		p, err := n.host.Start("ping", "-n", "-D", "-i", "0.2", "-W", "2", "-c", strconv.Itoa(count), v4.String())
		if err != nil {
			t.Fatal(err)
		}
		pings = append(pings, p)
	}
	// Each node's own expiry as status shows it, every 5 s meanwhile.
	seen := map[string][]string{}
	for end := start.Add(count * interval); time.Now().Before(end); time.Sleep(5 * time.Second) {
		for _, n := range nodes {
			exp, warn, err := selfExpiry(n)
			if err != nil {
				t.Errorf("%s: glow status: %v", n.name, err)
				continue
			}
			if warn != "" {
				t.Errorf("%s: warning in status: %s", n.name, warn)
			}
			if !slices.Contains(seen[n.name], exp) {
				seen[n.name] = append(seen[n.name], exp)
			}
		}
	}
	var longest time.Duration
	for i, p := range pings {
		if err := p.Wait(30 * time.Second); err != nil {
			t.Errorf("ping %s -> %s: %v", nodes[i].name, nodes[(i+1)%3].name, err)
		}
		run := parsePing(p.Output())
		gap := run.longestGap(start)
		for k := 1; k < len(run.replies); k++ {
			if d := run.replies[k].at.Sub(run.replies[k-1].at); d == gap {
				t.Logf("ping %s -> %s: longest gap ends %v after the start (seq %d)", nodes[i].name, nodes[(i+1)%3].name, run.replies[k].at.Sub(start).Round(time.Millisecond), run.replies[k].seq)
			}
		}
		longest = max(longest, gap)
		if lost := run.lost(); len(lost) > 0 || run.transmitted != count {
			t.Errorf("ping %s -> %s: %d sent, %d lost (seq %v)", nodes[i].name, nodes[(i+1)%3].name, run.transmitted, len(lost), lost)
		}
		t.Logf("ping %s -> %s: %d/%d answered, longest gap %v", nodes[i].name, nodes[(i+1)%3].name, run.received, run.transmitted, gap.Round(time.Millisecond))
	}
	t.Logf("the pings started at %s", start.UTC().Format("15:04:05.000"))
	for _, n := range nodes {
		t.Logf("%s: certificate expiries seen: %v", n.name, seen[n.name])
		if len(seen[n.name]) < 4 { // the first and at least three renewals
			t.Errorf("%s: %d certificates in six minutes of two-minute certificates, want renewals at half the lifetime", n.name, len(seen[n.name]))
		}
	}
	metric(t, "renewal_longest_ping_gap_ms", fmt.Sprintf("%d", longest.Milliseconds()))
}

// TestRenewalAdminAway: the admin n1 is stopped for longer than a lifetime.
// n2's and n3's certificates expire; each refuses the other (no peer in
// status, no ping through) and says its certificate expired. When n1 comes
// back, it renews its own certificate and theirs as they ask, and n2 and n3
// reach each other again within 30 s; the time is reported.
func TestRenewalAdminAway(t *testing.T) {
	t.Parallel()
	nodes := renewLAN(t)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	v4n3, _ := peerIPs(t, n2, "n3")
	v4n2, _ := peerIPs(t, n3, "n2")
	n1.mustGlow(30*time.Second, "down")
	down := time.Now()
	// Refused: neither lists the other, and n2 says its certificate expired.
	err := waitFor(testLifetime+time.Minute, time.Second, func() error {
		for _, pair := range [][2]*node{{n2, n3}, {n3, n2}} {
			st, err := pair[0].status()
			if err != nil {
				return err
			}
			for _, p := range st.Peers {
				if p.Name == pair[1].name {
					return fmt.Errorf("%s still lists %s (certificate until %s)", pair[0].name, p.Name, p.Expires)
				}
			}
			if st.Self.Warning == "" {
				return fmt.Errorf("%s: no warning in status", pair[0].name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("n1 down for %v: %v", time.Since(down).Round(time.Second), err)
	}
	t.Logf("n2 and n3 refuse each other %v after n1 went down", time.Since(down).Round(time.Second))
	if err := ping(n2.host, v4n3); err == nil {
		t.Errorf("n2 pings n3 while both certificates are expired")
	}
	// n1 stays away longer than a lifetime.
	time.Sleep(time.Until(down.Add(testLifetime + 15*time.Second)))
	back := time.Now()
	n1.up("--name", "n1")
	for _, pair := range []struct {
		from *node
		to   netip.Addr
	}{{n2, v4n3}, {n3, v4n2}} {
		if _, err := waitPing(pair.from.host, pair.to, reachTimeout); err != nil {
			t.Fatalf("%s cannot ping %s %v after n1 came back: %v", pair.from.name, pair.to, time.Since(back).Round(time.Second), err)
		}
	}
	took := time.Since(back)
	t.Logf("n1 away %v; n2 and n3 reach each other again %v after n1's glow up began", back.Sub(down).Round(time.Second), took.Round(time.Millisecond))
	metric(t, "renewal_after_admin_return_s", fmt.Sprintf("%.3f", took.Seconds()))
	for _, n := range nodes {
		exp, warn, err := selfExpiry(n)
		if err != nil || warn != "" {
			t.Errorf("%s after n1's return: certificate until %s, warning %q, %v", n.name, exp, warn, err)
		}
	}
}
