package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"glow/e2e/lab"
)

// reachTimeout bounds every wait for overlay reachability.
const reachTimeout = 30 * time.Second

// TestLANThreeNodes is the foundation: three nodes of one user on one bridged
// LAN with no Internet and no --peer find each other, reach each other over
// both overlay addresses directly, refuse a used invite, and survive a
// kill -9 of one daemon with the same addresses.
func TestLANThreeNodes(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	lan := l.Bridge("lan")
	hosts := map[string]*lab.Host{}
	for _, name := range []string{"n1", "n2", "n3", "n4"} {
		hosts[name] = l.Host(name)
		lan.Attach(hosts[name])
	}
	n1 := newNode(t, hosts["n1"], "n1")
	n2 := newNode(t, hosts["n2"], "n2")
	n3 := newNode(t, hosts["n3"], "n3")
	nodes := []*node{n1, n2, n3}

	// n1 creates the user and admits n2 and n3, one invite each.
	n1.up("--user", "alice", "--name", "n1")
	v4n1, _ := n1.ips()
	code2, code3 := n1.invite(), n1.invite()
	if code2 == code3 {
		t.Errorf("two invites gave the same code %q", code2)
	}
	for _, j := range []struct {
		n    *node
		code string
	}{{n2, code2}, {n3, code3}} {
		start := time.Now()
		j.n.up("--name", j.n.name, "--join", j.code)
		upTook := time.Since(start)
		if _, err := waitPing(j.n.host, v4n1, reachTimeout); err != nil {
			t.Fatalf("%s cannot ping n1 (%s) after joining: %v", j.n.name, v4n1, err)
		}
		metric(t, j.n.name+".join_up_s", fmt.Sprintf("%.3f", upTook.Seconds()))
		metric(t, j.n.name+".join_to_first_ping_s", fmt.Sprintf("%.3f", time.Since(start).Seconds()))
	}

	// Everyone's addresses, as each node sees itself and as n1 sees it.
	type addrs struct{ v4, v6 netip.Addr }
	self := map[string]addrs{}
	for _, n := range nodes {
		v4, v6 := n.ips()
		self[n.name] = addrs{v4, v6}
		t.Logf("%s: %s %s", n.name, v4, v6)
	}
	for _, n := range []*node{n2, n3} {
		v4, v6 := n1.ips(n.name)
		if (addrs{v4, v6}) != self[n.name] {
			t.Errorf("n1: glow ip %s = %s %s, but %s says %s %s", n.name, v4, v6, n.name, self[n.name].v4, self[n.name].v6)
		}
	}
	if self["n1"].v4 == self["n2"].v4 || self["n2"].v4 == self["n3"].v4 || self["n1"].v4 == self["n3"].v4 {
		t.Errorf("overlay IPv4 addresses not unique: %v", self)
	}

	// Kernel ping over both overlay families between all ordered pairs.
	pingAll := func(stage string) {
		t.Helper()
		for _, from := range nodes {
			for _, to := range nodes {
				if from == to {
					continue
				}
				for _, a := range []netip.Addr{self[to.name].v4, self[to.name].v6} {
					if took, err := waitPing(from.host, a, reachTimeout); err != nil {
						t.Errorf("%s: ping %s -> %s (%s): %v", stage, from.name, to.name, a, err)
					} else if took > time.Second {
						t.Logf("%s: ping %s -> %s (%s) answered after %v", stage, from.name, to.name, a, took.Round(time.Millisecond))
					}
				}
			}
		}
	}
	pingAll("after join")

	// Every node sees the other two online over a direct path.
	checkStatus := func(stage string) {
		t.Helper()
		for _, n := range nodes {
			var last *status
			err := waitFor(reachTimeout, 500*time.Millisecond, func() error {
				st, err := n.status()
				if err != nil {
					return err
				}
				last = st
				return directPeers(st, n.name, nodes)
			})
			if err != nil {
				t.Errorf("%s: %s: glow status --json: %v (last: %+v)", stage, n.name, err, last)
				continue
			}
			for _, p := range last.Peers {
				t.Logf("%s: %s sees %s %s %s rtt %.2f ms", stage, n.name, p.Name, p.Path, p.Endpoint, p.RTTms)
			}
			if last.Self.Name != n.name || last.Self.User != "alice" ||
				last.Self.IPv4 != self[n.name].v4.String() || last.Self.IPv6 != self[n.name].v6.String() {
				t.Errorf("%s: %s: status self = %+v, want %s alice %s %s", stage, n.name, last.Self, n.name, self[n.name].v4, self[n.name].v6)
			}
		}
	}
	checkStatus("after join")

	// Overlay-level ping, by name and by address.
	for _, target := range []string{"n2", self["n3"].v4.String()} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := n1.glow(ctx, "ping", target, "-c", "3")
		cancel()
		if err != nil {
			t.Errorf("n1: glow ping %s -c 3: %v", target, err)
		} else {
			t.Logf("n1: glow ping %s -c 3:\n%s", target, res.Stdout)
		}
	}

	// Idle memory with two peers.
	time.Sleep(3 * time.Second)
	for _, n := range nodes {
		pid, err := n.daemonPid()
		if err != nil {
			t.Errorf("%s: daemon pid: %v", n.name, err)
			continue
		}
		rss, err := lab.ProcStatus(pid, "VmRSS")
		if err != nil {
			t.Errorf("%s: %v", n.name, err)
			continue
		}
		metric(t, n.name+".idle_rss_2peers", strings.ReplaceAll(rss, " ", ""))
	}

	// A used invite code is refused with exit status 1.
	n4 := newNode(t, hosts["n4"], "n4")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	res, err := n4.glow(ctx, "up", "--no-dns", "--name", "n4", "--join", code2)
	cancel()
	if code := lab.ExitCode(err); code != 1 {
		t.Errorf("n4: glow up --join <used code>: exit status %d (err %v), want 1; stdout %q stderr %q", code, err, res.Stdout, res.Stderr)
	} else {
		t.Logf("n4: used invite refused: %s", strings.TrimSpace(res.Stderr))
	}
	if pids, _ := hosts["n4"].Pids(); len(pids) != 0 {
		t.Errorf("n4: processes left after a refused join: %v", pids)
	}

	// kill -9 n3's daemon; `glow up` again with the same state restores it
	// with the same addresses.
	pid3, err := n3.daemonPid()
	if err != nil {
		t.Fatalf("n3: %v", err)
	}
	if err := syscall.Kill(pid3, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 n3 (%d): %v", pid3, err)
	}
	if err := waitFor(5*time.Second, 50*time.Millisecond, func() error {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid3)); err == nil {
			return fmt.Errorf("pid %d still alive", pid3)
		}
		return nil
	}); err != nil {
		t.Fatalf("n3: %v", err)
	}
	start := time.Now()
	n3.up()
	v4, v6 := n3.ips()
	if v4 != self["n3"].v4 || v6 != self["n3"].v6 {
		t.Errorf("n3 after kill -9 and glow up: addresses %s %s, were %s %s", v4, v6, self["n3"].v4, self["n3"].v6)
	}
	for _, from := range []*node{n1, n2} {
		for _, a := range []netip.Addr{self["n3"].v4, self["n3"].v6} {
			if took, err := waitPing(from.host, a, reachTimeout); err != nil {
				t.Errorf("after restart: ping %s -> n3 (%s): %v", from.name, a, err)
			} else {
				t.Logf("after restart: ping %s -> n3 (%s) answered after %v", from.name, a, took.Round(time.Millisecond))
			}
		}
	}
	metric(t, "n3.restart_to_reachable_s", fmt.Sprintf("%.3f", time.Since(start).Seconds()))
	pingAll("after restart")
	checkStatus("after restart")
}

// directPeers checks that st lists every node but self as an online peer
// of user alice over a direct path.
func directPeers(st *status, self string, nodes []*node) error {
	var problems []string
	for _, n := range nodes {
		if n.name == self {
			continue
		}
		var p *peerStatus
		for i := range st.Peers {
			if st.Peers[i].Name == n.name {
				p = &st.Peers[i]
			}
		}
		switch {
		case p == nil:
			problems = append(problems, n.name+" missing")
		case !p.Online:
			problems = append(problems, n.name+" offline")
		case p.Path != "direct":
			problems = append(problems, fmt.Sprintf("%s path %q", n.name, p.Path))
		case p.User != "alice":
			problems = append(problems, fmt.Sprintf("%s user %q", n.name, p.User))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("peers: %s", strings.Join(problems, ", "))
	}
	return nil
}

// TestCLIExitStatus checks the exit statuses of the contract: 2 for bad
// usage, 1 for a failure (here: no daemon to talk to).
func TestCLIExitStatus(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	h := l.Host("cli")
	n := newNode(t, h, "cli")
	for _, tc := range []struct {
		argv []string
		want int
	}{
		{[]string{glowBin}, 2},
		{[]string{glowBin, "no-such-command"}, 2},
		{[]string{glowBin, "up", "--state", n.state, "--no-such-flag"}, 2},
		{[]string{glowBin, "status", "--state", n.state, "--json"}, 1},
		{[]string{glowBin, "ip", "--state", n.state}, 1},
		{[]string{glowBin, "invite", "--state", n.state}, 1},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := h.Run(ctx, tc.argv...)
		cancel()
		if got := lab.ExitCode(err); got != tc.want {
			t.Errorf("glow %s: exit status %d, want %d (stderr %q)", strings.Join(tc.argv[1:], " "), got, tc.want, res.Stderr)
		} else if strings.TrimSpace(res.Stderr) == "" {
			t.Errorf("glow %s: exit status %d with nothing on stderr (stdout %q)", strings.Join(tc.argv[1:], " "), got, res.Stdout)
		}
	}
	if pids, _ := h.Pids(); len(pids) != 0 {
		t.Errorf("processes left in the namespace: %v", pids)
	}
}
