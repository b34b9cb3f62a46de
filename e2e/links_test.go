package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"glow/e2e/lab"
)

// Stream links (issue 4): a site where UDP is blocked entirely reaches the
// others over TCP or WebSocket to a public node's glow port; a node reached
// only through ssh:// stdio.

// linkTimeout bounds the wait for a stream link to come up and carry a
// peer's traffic once UDP to it is gone.
const linkTimeout = 45 * time.Second

// linkStatus is one row of `glow link list --json`.
type linkStatus struct {
	URL    string `json:"url"`
	Peer   string `json:"peer"`
	Via    string `json:"via"`
	Up     bool   `json:"up"`
	InUse  bool   `json:"in_use"`
	Status string `json:"status"`
}

// linkList returns `glow link list --json` on n, and its raw output.
func linkList(n *node) ([]linkStatus, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.glow(ctx, "link", "list", "--json")
	if err != nil {
		return nil, "", err
	}
	var ls []linkStatus
	if err := json.Unmarshal([]byte(res.Stdout), &ls); err != nil {
		return nil, res.Stdout, fmt.Errorf("glow link list --json: %v in %q", err, res.Stdout)
	}
	return ls, res.Stdout, nil
}

// waitLink waits until n's `glow link list --json` has a row whose url (or,
// when url is empty, whose via starts with viaPrefix) passes ok.
func waitLink(n *node, url, viaPrefix string, timeout time.Duration, ok func(linkStatus) error) (string, error) {
	var raw string
	err := waitFor(timeout, 200*time.Millisecond, func() error {
		ls, out, err := linkList(n)
		raw = out
		if err != nil {
			return err
		}
		for _, l := range ls {
			if url != "" && l.URL == url || url == "" && strings.HasPrefix(l.Via, viaPrefix) {
				return ok(l)
			}
		}
		return fmt.Errorf("no link %q%q in %s", url, viaPrefix, strings.TrimSpace(out))
	})
	return raw, err
}

// upAndInUse accepts a live link to peer (short name) that carries traffic.
func upAndInUse(peer string) func(linkStatus) error {
	return func(l linkStatus) error {
		if !l.Up || !l.InUse || shortName(l.Peer) != peer {
			return fmt.Errorf("link %+v: want up, in use, peer %s", l, peer)
		}
		return nil
	}
}

// streamDirect accepts a direct path over a stream link whose endpoint
// starts with prefix ("tcp://...", "ws from ...", "ssh://...").
func streamDirect(prefix string) func(*peerStatus) error {
	return func(p *peerStatus) error {
		if p.Path != "direct" || !strings.HasPrefix(p.Endpoint, prefix) {
			return fmt.Errorf("%s: path %q via %v endpoint %q, want direct over %q...", p.Name, p.Path, p.Via, p.Endpoint, prefix)
		}
		return nil
	}
}

// checkPeer waits (linkTimeout) until n sees peer passing ok, logs the path
// and every other view of the peer seen on the way, and reports a test
// error otherwise.
func checkPeer(t *testing.T, stage string, n *node, peer string, ok func(*peerStatus) error) bool {
	t.Helper()
	var seen []string
	p, took, err := waitPeer(n, peer, linkTimeout, func(p *peerStatus) error {
		v := fmt.Sprintf("online=%v %s via %v %q", p.Online, p.Path, p.Via, p.Endpoint)
		if len(seen) == 0 || seen[len(seen)-1] != v {
			seen = append(seen, v)
		}
		return ok(p)
	})
	if err != nil {
		t.Errorf("%s: %s -> %s: %v (last %+v; seen %q)", stage, n.name, peer, err, p, seen)
		return false
	}
	t.Logf("%s: %s sees %s: %s via %v endpoint %q rtt %.2f ms (after %v; seen %q)", stage, n.name, peer, p.Path, p.Via, p.Endpoint, p.RTTms, took.Round(time.Millisecond), seen)
	return true
}

// firstPing waits (linkTimeout) for from's first overlay reply from to,
// logs the time as METRIC name, and reports a test error otherwise.
func firstPing(t *testing.T, name string, from, to *node) {
	t.Helper()
	v4, _ := peerIPs(t, from, to.name)
	took, err := waitPing(from.host, v4, linkTimeout)
	if err != nil {
		t.Errorf("%s: %s cannot ping %s (%s): %v", name, from.name, to.name, v4, err)
		return
	}
	metric(t, name+".first_ping_s", fmt.Sprintf("%.3f", took.Seconds()))
}

var pingRTTRE = regexp.MustCompile(`rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms`)

// pingRTT sends count kernel pings 200 ms apart from h to addr and returns
// the average RTT in ms and the number of replies.
func pingRTT(h *lab.Host, addr netip.Addr, count int) (avg float64, received int, out string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(count)*200*time.Millisecond+10*time.Second)
	defer cancel()
	res, err := h.Run(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", addr.String())
	out = res.Stdout
	if m := pingSummaryRE.FindStringSubmatch(out); m != nil {
		received, _ = strconv.Atoi(m[2])
	}
	if m := pingRTTRE.FindStringSubmatch(out); m != nil {
		avg, _ = strconv.ParseFloat(m[2], 64)
	}
	return avg, received, out, err
}

// rttMetric measures from -> to's overlay IPv4 (10 pings) and logs it as
// METRIC name.
func rttMetric(t *testing.T, name string, from, to *node) {
	t.Helper()
	v4, _ := peerIPs(t, from, to.name)
	avg, got, out, err := pingRTT(from.host, v4, 10)
	if got == 0 {
		t.Errorf("%s: ping %s -> %s (%s): no reply: %v\n%s", name, from.name, to.name, v4, err, out)
		return
	}
	metric(t, name+".rtt_ms", fmt.Sprintf("%.3f", avg))
	metric(t, name+".replies", fmt.Sprintf("%d/10", got))
}

// blockUDPRouter makes a site's router drop every forwarded UDP packet (both
// directions; its LAN is IPv4-only to the outside) and forget its flows.
func blockUDPRouter(r *lab.Router) {
	r.MustRun("iptables", "-w", "5", "-I", "FORWARD", "-p", "udp", "-j", "DROP")
	r.FlushConntrack()
}

// blockUDPHost makes h drop every UDP packet on iface, in and out, over both
// families (its overlay interface and lo keep working), and inbound TCP to
// the glow port, so only other TCP services (ssh) reach it.
func blockUDPHost(h *lab.Host, iface string) {
	for _, ipt := range []string{"iptables", "ip6tables"} {
		h.MustRun(ipt, "-w", "5", "-A", "INPUT", "-i", iface, "-p", "udp", "-j", "DROP")
		h.MustRun(ipt, "-w", "5", "-A", "OUTPUT", "-o", iface, "-p", "udp", "-j", "DROP")
		h.MustRun(ipt, "-w", "5", "-A", "INPUT", "-i", iface, "-p", "tcp", "--dport", "47470", "-j", "DROP")
	}
}

// TestLinkUDPBlockedTCP (issue 4): site b's network blocks all UDP (after b
// joined). b links to the public VPS over TCP to its glow port, then over
// WebSocket; over each it reaches the VPS (direct over the stream) and site
// a through the VPS, and a reaches b.
func TestLinkUDPBlockedTCP(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	sv, sa, sb := vpsAndSites(t, l, lab.EasyNAT, "a", "b")
	vpsH, vps, a := sv.h, sv.n, sa.n
	rB, bH, b := sb.r, sb.h, sb.n

	vpsV4, _ := peerIPs(t, b, "vps")
	aV4, _ := peerIPs(t, b, "a")
	if _, err := waitPing(bH, vpsV4, reachTimeout); err != nil {
		t.Fatalf("before the block: b cannot ping the VPS (%s): %v", vpsV4, err)
	}
	if _, err := waitPing(bH, aV4, reachTimeout); err != nil {
		t.Fatalf("before the block: b cannot ping a (%s): %v", aV4, err)
	}

	blockUDPRouter(rB)
	if err := ping(bH, vpsV4); err == nil {
		t.Fatalf("b still reaches the VPS over the overlay with UDP blocked and no link")
	}
	t.Logf("UDP blocked at b's router; b no longer reaches the VPS")

	for _, c := range []struct {
		kind   string
		url    string
		accept string // the VPS's name for the accepted link
	}{
		{"tcp", "tcp://" + vpsH.IP().String() + ":47470", "tcp from "},
		{"ws", "ws://" + vpsH.IP().String() + ":47470/glow/link", "ws from "},
	} {
		stage := c.kind + " link"
		start := time.Now()
		res := b.mustGlow(20*time.Second, "link", "add", c.url)
		t.Logf("%s: b: glow link add %s: %s", stage, c.url, strings.TrimSpace(res.Stdout+res.Stderr))
		took, err := waitPing(bH, vpsV4, linkTimeout)
		if err != nil {
			ls, raw, _ := linkList(b)
			t.Fatalf("%s: b cannot ping the VPS (%s) after glow link add %s: %v\nb: glow link list: %+v %s", stage, vpsV4, c.url, err, ls, raw)
		}
		metric(t, c.kind+".link_add_to_vps_ping_s", fmt.Sprintf("%.3f", time.Since(start).Seconds()))
		t.Logf("%s: b -> vps answered %v after the ping started", stage, took.Round(time.Millisecond))

		checkPeer(t, stage, b, "vps", streamDirect(c.url))
		checkPeer(t, stage, vps, "b", streamDirect(c.accept))
		if raw, err := waitLink(b, c.url, "", linkTimeout, upAndInUse("vps")); err != nil {
			t.Errorf("%s: b: glow link list: %v", stage, err)
		} else {
			t.Logf("%s: b: glow link list --json: %s", stage, strings.TrimSpace(raw))
		}
		if raw, err := waitLink(vps, "", c.accept, linkTimeout, upAndInUse("b")); err != nil {
			t.Errorf("%s: vps: glow link list: %v", stage, err)
		} else {
			t.Logf("%s: vps: glow link list --json: %s", stage, strings.TrimSpace(raw))
		}
		pingBoth(t, stage+": b <-> vps", b, vps)

		// Traffic first (what a user does), then the paths it took.
		firstPing(t, c.kind+".b_a", b, a)
		firstPing(t, c.kind+".a_b", a, b)
		checkPeer(t, stage, b, "a", relayVia("vps"))
		checkPeer(t, stage, a, "b", relayVia("vps"))
		pingBoth(t, stage+": a <-> b", a, b)
		if out, err := glowPing(a, "b", 3); err != nil || !strings.Contains(out, "via relay via vps") {
			t.Errorf("%s: a: glow ping b -c 3: %v, want replies via relay via vps:\n%s", stage, err, out)
		} else {
			t.Logf("%s: a: glow ping b -c 3:\n%s", stage, out)
		}
		rttMetric(t, c.kind+".b_vps", b, vps)
		rttMetric(t, c.kind+".b_a_via_vps", b, a)
		rttMetric(t, c.kind+".a_b_via_vps", a, b)

		if t.Failed() {
			return
		}
		// Take this link away before the next kind: b loses the VPS.
		res = b.mustGlow(20*time.Second, "link", "remove", c.url)
		t.Logf("%s: b: glow link remove %s: %s", stage, c.url, strings.TrimSpace(res.Stdout+res.Stderr))
		if err := waitFor(linkTimeout, 200*time.Millisecond, func() error {
			ls, raw, err := linkList(b)
			if err != nil {
				return err
			}
			for _, l := range ls {
				if l.URL == c.url || l.Up {
					return fmt.Errorf("b still lists a link after removing %s: %s", c.url, strings.TrimSpace(raw))
				}
			}
			if err := ping(bH, vpsV4); err == nil {
				return fmt.Errorf("b still reaches the VPS after removing its only link %s", c.url)
			}
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
	}
}

// sshSetup is an sshd for root in one lab host and a client configuration
// that logs into it with a fresh key, without known_hosts.
type sshSetup struct {
	dir     string // keys, configs, the ssh wrapper
	binDir  string // holds `ssh`: /usr/bin/ssh -F dir/ssh_config "$@"
	sshd    *lab.Proc
	address netip.Addr
}

// startSSHD runs sshd -D in h listening on h's IPv4 address port 22, and
// prepares a client config for it. The client's config is handed to ssh by
// a wrapper named ssh first in PATH: ssh takes ~/.ssh from the password
// database (getpwuid), not from $HOME, so HOME cannot point it elsewhere.
//
// remoteEnv (NAME=VALUE) is set in every session sshd starts (SetEnv).
func startSSHD(t *testing.T, h *lab.Host, remoteEnv ...string) *sshSetup {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		t.Skipf("no sshd: %v", err)
	}
	dir := t.TempDir()
	s := &sshSetup{dir: dir, binDir: filepath.Join(dir, "bin"), address: h.IP()}
	if err := os.Mkdir(s.binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// sshd wants its privilege separation directory (the package's service
	// creates it at start; nothing has here).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"host_key", "client_key"} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := h.Run(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "glow-e2e-"+k, "-f", filepath.Join(dir, k))
		cancel()
		if err != nil {
			t.Fatalf("ssh-keygen: %v", err)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("authorized_keys", string(pub), 0o600)
	cfg := write("sshd_config", strings.Join([]string{
		"ListenAddress " + h.IP().String() + ":22",
		"HostKey " + filepath.Join(dir, "host_key"),
		"PermitRootLogin prohibit-password",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"StrictModes no",
		"UsePAM no",
		"PidFile none",
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"LogLevel VERBOSE",
		"SetEnv " + strings.Join(remoteEnv, " "),
		"",
	}, "\n"), 0o600)
	if len(remoteEnv) == 0 {
		cfg = write("sshd_config", strings.Replace(mustRead(t, cfg), "SetEnv \n", "", 1), 0o600)
	}
	clientCfg := write("ssh_config", strings.Join([]string{
		"Host *",
		"  IdentityFile " + filepath.Join(dir, "client_key"),
		"  IdentitiesOnly yes",
		"  StrictHostKeyChecking no",
		"  UserKnownHostsFile /dev/null",
		"  GlobalKnownHostsFile /dev/null",
		"  LogLevel ERROR",
		"  ConnectTimeout 10",
		"",
	}, "\n"), 0o600)
	if err := os.WriteFile(filepath.Join(s.binDir, "ssh"),
		[]byte("#!/bin/sh\nexec /usr/bin/ssh -F "+clientCfg+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.sshd, err = h.Start("/usr/sbin/sshd", "-D", "-e", "-f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.sshd.Kill()
		if t.Failed() {
			t.Logf("==== sshd in %s ====\n%s==== end of sshd ====", h.Name, s.sshd.Output())
		}
	})
	return s
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// env returns the environment entries that make ssh use this setup.
func (s *sshSetup) env() []string {
	return []string{"PATH=" + s.binDir + ":" + os.Getenv("PATH")}
}

// upEnv is node.up with extra environment entries (the daemon inherits
// them): `env ENV... glow up --state DIR --no-dns ARGS...`.
func upEnv(n *node, env []string, args ...string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	argv := append([]string{"env"}, env...)
	argv = append(argv, glowBin, "up", "--state", n.state, "--no-dns")
	res, err := n.host.Run(ctx, append(argv, args...)...)
	if err != nil {
		n.t.Fatalf("%s: %v", n.name, err)
	}
	n.t.Logf("%s: glow up (%v):\n%s%s", n.name, res.Took.Round(time.Millisecond), res.Stdout, res.Stderr)
}

// TestLinkSSH (issue 4): s is reachable only by ssh (UDP to and from it is
// dropped, and its glow TCP port is closed). The VPS links to it with
// ssh://root@S?glow=...&state=... (ssh running `glow link stdio` on s): the
// VPS reaches s directly over that link, and x at another site reaches s
// through the VPS.
func TestLinkSSH(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	sH := publicHost(l, "s")
	_, xH := siteHost(l, "x", lab.EasyNAT)
	vps := newNode(t, vpsH, "vps")
	s := newNode(t, sH, "s")
	x := newNode(t, xH, "x")
	// Sessions on s also find glow in PATH and s's state in GLOW_STATE, for
	// the plain ssh://USER@HOST form of the URL (see below).
	remoteBin := filepath.Join(t.TempDir(), "bin")
	if err := os.Mkdir(remoteBin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(glowBin, filepath.Join(remoteBin, "glow")); err != nil {
		t.Fatal(err)
	}
	ssh := startSSHD(t, sH, "GLOW_STATE="+s.state, "PATH="+remoteBin+":/usr/sbin:/usr/bin:/sbin:/bin")

	upEnv(vps, ssh.env(), "--user", "alice", "--name", "vps")
	s.up("--name", "s", "--join", vps.invite())
	x.up("--name", "x", "--join", vps.invite())

	// ssh itself works from the VPS, with the same environment the daemon got.
	sshWorks := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		argv := append([]string{"env"}, ssh.env()...)
		res, err := vpsH.Run(ctx, append(argv, "ssh", "-o", "BatchMode=yes", "root@"+ssh.address.String(), "echo", "ssh-ok")...)
		if err != nil {
			return err
		}
		if strings.TrimSpace(res.Stdout) != "ssh-ok" {
			return fmt.Errorf("ssh echo: %q", res.Stdout)
		}
		return nil
	}
	if err := waitFor(20*time.Second, 250*time.Millisecond, sshWorks); err != nil {
		t.Fatalf("vps: ssh root@%s: %v", ssh.address, err)
	}

	sV4, _ := peerIPs(t, vps, "s")
	if _, err := waitPing(vpsH, sV4, reachTimeout); err != nil {
		t.Fatalf("before the block: the VPS cannot ping s (%s): %v", sV4, err)
	}
	blockUDPHost(sH, "eth0")
	if err := ping(vpsH, sV4); err == nil {
		t.Fatalf("the VPS still reaches s over the overlay with UDP blocked and no link")
	}
	if err := sshWorks(); err != nil {
		t.Fatalf("vps: ssh root@%s after blocking UDP: %v", ssh.address, err)
	}
	t.Logf("UDP and the glow TCP port blocked on s; ssh still works")

	// The URL names the remote glow and its state directory, as `glow link
	// add`'s usage documents: ssh://USER@HOST[?glow=PATH&state=DIR].
	url := "ssh://root@" + ssh.address.String() + "?glow=" + glowBin + "&state=" + s.state
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	res, err := vps.glow(ctx, "link", "add", url)
	cancel()
	if err != nil {
		// Still a failure; the rest of the test then runs over the plain
		// form (CLI.md's ssh://user@host), where the remote session finds
		// glow in PATH and the state in GLOW_STATE, so the link itself is
		// still checked.
		t.Errorf("vps: glow link add %s refused (the form its usage documents): %v", url, err)
		url = "ssh://root@" + ssh.address.String()
		start = time.Now()
		res = vps.mustGlow(20*time.Second, "link", "add", url)
	}
	t.Logf("vps: glow link add %s: %s", url, strings.TrimSpace(res.Stdout+res.Stderr))
	took, err := waitPing(vpsH, sV4, linkTimeout)
	if err != nil {
		ls, raw, _ := linkList(vps)
		t.Fatalf("the VPS cannot ping s (%s) after glow link add %s: %v\nvps: glow link list: %+v %s", sV4, url, err, ls, raw)
	}
	metric(t, "ssh.link_add_to_s_ping_s", fmt.Sprintf("%.3f", time.Since(start).Seconds()))
	t.Logf("vps -> s answered %v after the ping started", took.Round(time.Millisecond))

	checkPeer(t, "ssh link", vps, "s", streamDirect("ssh://root@"+ssh.address.String()))
	checkPeer(t, "ssh link", s, "vps", streamDirect("ssh from "))
	if raw, err := waitLink(vps, url, "", linkTimeout, upAndInUse("s")); err != nil {
		t.Errorf("vps: glow link list: %v", err)
	} else {
		t.Logf("vps: glow link list --json: %s", strings.TrimSpace(raw))
	}
	if raw, err := waitLink(s, "", "ssh from ", linkTimeout, upAndInUse("vps")); err != nil {
		t.Errorf("s: glow link list: %v", err)
	} else {
		t.Logf("s: glow link list --json: %s", strings.TrimSpace(raw))
	}
	pingBoth(t, "ssh link: vps <-> s", vps, s)

	firstPing(t, "ssh.x_s", x, s)
	firstPing(t, "ssh.s_x", s, x)
	checkPeer(t, "ssh link", x, "s", relayVia("vps"))
	checkPeer(t, "ssh link", s, "x", relayVia("vps"))
	pingBoth(t, "ssh link: x <-> s", x, s)
	if out, err := glowPing(x, "s", 3); err != nil || !strings.Contains(out, "via relay via vps") {
		t.Errorf("x: glow ping s -c 3: %v, want replies via relay via vps:\n%s", err, out)
	} else {
		t.Logf("x: glow ping s -c 3:\n%s", out)
	}
	rttMetric(t, "ssh.vps_s", vps, s)
	rttMetric(t, "ssh.x_s_via_vps", x, s)
	rttMetric(t, "ssh.s_x_via_vps", s, x)
}
