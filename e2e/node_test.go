package e2e

import (
	"context"
	"encoding/json"
	"errors"
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

// node is one glow daemon in a lab host, driven through the CLI.
type node struct {
	t     *testing.T
	host  *lab.Host
	name  string
	state string // --state, under t.TempDir()
}

// newNode prepares a node named name in h. Its cleanup runs `glow down`,
// kills what is left in h, and prints glow.log when the test failed.
func newNode(t *testing.T, h *lab.Host, name string) *node {
	t.Helper()
	state := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if len(state)+len("/glow.sock") >= 100 {
		t.Fatalf("state dir %s too long for a unix socket path", state)
	}
	n := &node{t: t, host: h, name: name, state: state}
	t.Cleanup(n.cleanup)
	return n
}

func (n *node) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if n.running() {
		if _, err := n.glow(ctx, "down"); err != nil {
			n.t.Logf("%s: glow down: %v", n.name, err)
		}
	}
	if err := n.host.KillAll(); err != nil {
		n.t.Logf("%s: %v", n.name, err)
	}
	if n.t.Failed() || testing.Verbose() && os.Getenv("GLOW_E2E_LOGS") != "" {
		n.dumpLog()
	}
}

// dumpLog prints the end of the node's glow.log.
func (n *node) dumpLog() {
	b, err := os.ReadFile(filepath.Join(n.state, "glow.log"))
	if err != nil {
		n.t.Logf("==== %s: no glow.log: %v", n.name, err)
		return
	}
	const max = 48 << 10
	s := string(b)
	if len(s) > max {
		s = "[… " + strconv.Itoa(len(s)-max) + " bytes cut …]\n" + s[len(s)-max:]
	}
	n.t.Logf("==== %s: %s ====\n%s==== end of %s glow.log ====", n.name, filepath.Join(n.state, "glow.log"), s, n.name)
}

// glow runs `glow SUB --state DIR ARGS...` in the node's host.
func (n *node) glow(ctx context.Context, sub string, args ...string) (*lab.Result, error) {
	argv := append([]string{glowBin, sub, "--state", n.state}, args...)
	return n.host.Run(ctx, argv...)
}

// mustGlow is glow with a timeout that fails the test on error.
func (n *node) mustGlow(timeout time.Duration, sub string, args ...string) *lab.Result {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := n.glow(ctx, sub, args...)
	if err != nil {
		n.t.Fatalf("%s: %v", n.name, err)
	}
	return res
}

// up runs `glow up --no-dns ARGS...` and fails the test if it fails.
func (n *node) up(args ...string) *lab.Result {
	n.t.Helper()
	res := n.mustGlow(60*time.Second, "up", append([]string{"--no-dns"}, args...)...)
	n.t.Logf("%s: glow up (%v):\n%s%s", n.name, res.Took.Round(time.Millisecond), res.Stdout, res.Stderr)
	return res
}

// invite returns the last line of `glow invite`.
func (n *node) invite() string {
	n.t.Helper()
	res := n.mustGlow(20*time.Second, "invite")
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	code := strings.TrimSpace(lines[len(lines)-1])
	if code == "" || strings.ContainsAny(code, " \t") {
		n.t.Fatalf("%s: glow invite: no one-word code on the last line of stdout: %q (stderr %q)", n.name, res.Stdout, res.Stderr)
	}
	return code
}

// ips returns `glow ip [target]`: IPv4 then IPv6.
func (n *node) ips(target ...string) (v4, v6 netip.Addr) {
	n.t.Helper()
	res := n.mustGlow(10*time.Second, "ip", target...)
	var addrs []netip.Addr
	for _, f := range strings.Fields(res.Stdout) {
		a, err := netip.ParseAddr(f)
		if err != nil {
			n.t.Fatalf("%s: glow ip %v: %q is not an address (output %q)", n.name, target, f, res.Stdout)
		}
		addrs = append(addrs, a)
	}
	if len(addrs) != 2 || !addrs[0].Is4() || !addrs[1].Is6() {
		n.t.Fatalf("%s: glow ip %v = %v, want one IPv4 then one IPv6", n.name, target, addrs)
	}
	return addrs[0], addrs[1]
}

type peerStatus struct {
	Name     string   `json:"name"`
	User     string   `json:"user"`
	IPv4     string   `json:"ipv4"`
	IPv6     string   `json:"ipv6"`
	Online   bool     `json:"online"`
	Path     string   `json:"path"`
	Endpoint string   `json:"endpoint"`
	Via      []string `json:"via"`
	RTTms    float64  `json:"rtt_ms"`
	Routes   []string `json:"routes"`
	Expires  string   `json:"cert_expires"`
	Warning  string   `json:"warning"` // self only: the certificate expired or is near expiry
}

type status struct {
	Self  peerStatus        `json:"self"`
	Peers []peerStatus      `json:"peers"`
	Drops map[string]uint64 `json:"drops"`
}

// status returns `glow status --json`.
func (n *node) status() (*status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.glow(ctx, "status", "--json")
	if err != nil {
		return nil, err
	}
	var st status
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		return nil, fmt.Errorf("glow status --json: %v in %q", err, res.Stdout)
	}
	return &st, nil
}

// pid returns the daemon's pid from DIR/glow.pid.
func (n *node) pid() (int, error) {
	b, err := os.ReadFile(filepath.Join(n.state, "glow.pid"))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("glow.pid: %w", err)
	}
	return pid, nil
}

// running reports whether the pid in glow.pid is alive.
func (n *node) running() bool {
	pid, err := n.pid()
	if err != nil {
		return false
	}
	_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// daemonPid returns the daemon's pid: glow.pid, checked against the
// processes inside the host (the only process there when one node runs).
func (n *node) daemonPid() (int, error) {
	pids, err := n.host.Pids()
	if err != nil {
		return 0, err
	}
	pid, err := n.pid()
	if err == nil {
		for _, p := range pids {
			if p == pid {
				return pid, nil
			}
		}
		return 0, fmt.Errorf("glow.pid says %d, but the processes in %s are %v", pid, n.host.NS, pids)
	}
	if len(pids) == 1 {
		return pids[0], nil
	}
	return 0, fmt.Errorf("%v, and %s holds processes %v", err, n.host.NS, pids)
}

// ping sends one ICMP echo from the node's host to addr.
func ping(h *lab.Host, addr netip.Addr) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := h.Run(ctx, "ping", "-n", "-c1", "-W2", addr.String())
	return err
}

// waitFor polls f every interval until it returns nil or timeout passes
// (bounded in attempts as well); it returns f's last error.
func waitFor(timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	maxTries := int(timeout/interval) + 2
	var err error
	for try := 0; try < maxTries; try++ {
		if err = f(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(interval)
	}
	return fmt.Errorf("after %v: %w", timeout, err)
}

// waitPing pings addr from h until the first reply or timeout, and returns
// how long that took. One ping process sends an echo every 100 ms and stops
// at the first reply (-c1 with -w), so the figure is not rounded up to a
// reply timeout; waitFor restarts it if it ends early.
func waitPing(h *lab.Host, addr netip.Addr, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	err := waitFor(timeout, 100*time.Millisecond, func() error {
		left := max(timeout-time.Since(start), time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), left+5*time.Second)
		defer cancel()
		_, err := h.Run(ctx, "ping", "-n", "-q", "-c1", "-i", "0.1", "-w", strconv.Itoa(int(left.Seconds()+0.5)), addr.String())
		return err
	})
	return time.Since(start), err
}

var errNoMetrics = errors.New("metrics not written")

// metric logs a measured figure and appends it to out/metrics.txt
// (gitignored). Figures are never asserted on.
func metric(t *testing.T, name string, value string) {
	t.Helper()
	t.Logf("METRIC %s = %s", name, value)
	if err := os.MkdirAll("out", 0o755); err != nil {
		t.Logf("%v: %v", errNoMetrics, err)
		return
	}
	f, err := os.OpenFile(filepath.Join("out", "metrics.txt"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Logf("%v: %v", errNoMetrics, err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\t%s\t%s\t%s\n", time.Now().Format(time.RFC3339), t.Name(), name, value)
}
