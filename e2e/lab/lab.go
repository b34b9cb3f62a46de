// Package lab builds small test networks out of Linux network namespaces, for
// the real-kernel test tier in glow/e2e.
//
// A Lab is one test's network. Everything it creates is named with a prefix
// unique to the test process and the lab (ge-<pid>-<n>-), and is removed by
// t.Cleanup even when the test fails; New also removes what a crashed earlier
// run of the same family left behind (namespaces whose owning test process is
// gone, with every process still inside them; see glow/internal/testns).
//
//	l := lab.New(t)                       // skips loudly when not root
//	lan := l.Bridge("lan")                // a LAN: a namespace holding a Linux bridge
//	a, b := l.Host("a"), l.Host("b")      // hosts: one namespace each, lo up
//	lan.Attach(a); lan.Attach(b)          // veth into the bridge, 10.77.N.x/24 + fd77:0:0:N::x/64
//	l.Router("r1", lan, lab.EasyNAT)      // gateway 10.77.N.1, WAN on the fake Internet
//	l.Internet().Attach(l.Host("pub"))    // a public host on 198.51.100.0/24
//	out := a.MustRun("ping", "-c1", b.IP().String())
//
// Shape. The lab drives iproute2 and iptables through exec rather than netlink
// so that every step it takes can be pasted into a shell when a test has to be
// debugged by hand (set LAB_TRACE=1 to log each command). Interfaces are
// created directly inside their namespaces, so their names (eth0, p3, br0,
// lan0, wan0) never meet the host's and stay far below the 15-byte limit.
//
// Addresses are test ranges only and exist only inside the lab's namespaces:
// LAN number N is 10.77.N.0/24 and fd77:0:0:N::/64, the fake Internet is
// 198.51.100.0/24 and 2001:db8:77::/64. Hosts have no route to anything else,
// so no traffic leaves the namespaces a test created.
//
// Routers (see LAB-NOTES.md) do IPv4 NAT only: EasyNAT is MASQUERADE
// (endpoint-independent mapping), HardNAT is MASQUERADE --random-fully
// (endpoint-dependent mapping). Both filter statefully, as home routers do:
// forwarded packets from the WAN pass only when they belong to a known flow
// (or a port forward), and new packets to the router itself from the WAN are
// dropped, which keeps early hole-punch packets from stealing mappings.
//
// Every wait in this package is bounded in time and in attempts.
package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"glow/internal/testns"
)

// Family is the name prefix of every namespace any lab creates.
const Family = "ge-"

// SkipMessage is what tests print when they cannot run for lack of root.
const SkipMessage = "SKIPPING namespace tests: not root (run as root, e.g. `sudo make test`, to run the e2e tier)"

// CommandTimeout bounds every command the lab runs for its own set-up.
const CommandTimeout = 20 * time.Second

var labSeq atomic.Int64

// NAT is the kind of address translation a Router does.
type NAT int

const (
	// NoNAT routes the LAN's addresses unchanged (still stateful filtering).
	// Hosts on the fake Internet have no route back to a LAN unless the
	// test adds one.
	NoNAT NAT = iota
	// EasyNAT is MASQUERADE: endpoint-independent mapping, the source port is
	// kept when free.
	EasyNAT
	// HardNAT is MASQUERADE --random-fully: a new random port per destination.
	HardNAT
)

func (n NAT) String() string {
	switch n {
	case NoNAT:
		return "none"
	case EasyNAT:
		return "easy"
	case HardNAT:
		return "hard"
	}
	return "NAT(" + strconv.Itoa(int(n)) + ")"
}

// RequireRoot skips t with SkipMessage when the process is not root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip(SkipMessage)
	}
}

// Lab is one test's set of namespaces. Its methods may be called from the
// test goroutine only (they call t.Fatal on set-up failure).
type Lab struct {
	t      testing.TB
	prefix string // e.g. "ge-1234-1-"
	trace  bool

	// mu guards the following.
	mu       sync.Mutex
	nss      []string // created namespaces, in creation order
	hosts    map[string]*Host
	bridges  map[string]*Bridge
	procs    []*Proc
	internet *Bridge
	nlans    int
	closed   bool
}

// New returns an empty lab whose namespaces are all removed when t ends. It
// skips t when not root, and first removes leftovers of crashed runs.
func New(t testing.TB) *Lab {
	t.Helper()
	RequireRoot(t)
	testns.SweepOnce(Family, t.Logf)
	l := &Lab{
		t:       t,
		prefix:  fmt.Sprintf("%s%d-%d-", Family, os.Getpid(), labSeq.Add(1)),
		trace:   os.Getenv("LAB_TRACE") != "",
		hosts:   map[string]*Host{},
		bridges: map[string]*Bridge{},
	}
	t.Cleanup(l.Close)
	return l
}

// Prefix is the name prefix of this lab's namespaces.
func (l *Lab) Prefix() string { return l.prefix }

// Host returns a new host: a namespace with lo up and IPv6 enabled, and no
// other interface until a Bridge attaches it.
func (l *Lab) Host(name string) *Host {
	l.t.Helper()
	l.mu.Lock()
	_, dup := l.hosts[name]
	l.mu.Unlock()
	if dup {
		l.t.Fatalf("lab: host %q already exists", name)
	}
	h := &Host{lab: l, Name: name, NS: l.newNS(name)}
	l.mu.Lock()
	l.hosts[name] = h
	l.mu.Unlock()
	return h
}

// Bridge returns a new LAN: a namespace holding the Linux bridge br0 (no STP,
// no multicast snooping: it floods multicast like a home switch), with its own
// 10.77.N.0/24 and fd77:0:0:N::/64.
func (l *Lab) Bridge(name string) *Bridge {
	l.t.Helper()
	l.mu.Lock()
	l.nlans++
	n := l.nlans
	l.mu.Unlock()
	if n > 250 {
		l.t.Fatalf("lab: too many LANs")
	}
	return l.newBridge(name,
		netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 77, byte(n), 0}), 24),
		netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x77, 0, 0, 0, 0, 0, byte(n)}), 64))
}

// Internet returns the lab's fake Internet (created on first use): a bridge
// with 198.51.100.0/24 and 2001:db8:77::/64 where public hosts and the WAN
// sides of routers attach.
func (l *Lab) Internet() *Bridge {
	l.t.Helper()
	l.mu.Lock()
	inet := l.internet
	l.mu.Unlock()
	if inet != nil {
		return inet
	}
	inet = l.newBridge("inet",
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("2001:db8:77::/64"))
	l.mu.Lock()
	l.internet = inet
	l.mu.Unlock()
	return inet
}

func (l *Lab) newBridge(name string, v4, v6 netip.Prefix) *Bridge {
	l.t.Helper()
	l.mu.Lock()
	_, dup := l.bridges[name]
	l.mu.Unlock()
	if dup {
		l.t.Fatalf("lab: bridge %q already exists", name)
	}
	b := &Bridge{lab: l, Name: name, NS: l.newNS(name), V4: v4, V6: v6, next: 10}
	l.must(b.NS, "ip", "link", "add", "br0", "type", "bridge",
		"stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
	l.must(b.NS, "ip", "link", "set", "br0", "up")
	l.mu.Lock()
	l.bridges[name] = b
	l.mu.Unlock()
	return b
}

// newNS creates and prepares the namespace for a host or bridge called name.
func (l *Lab) newNS(name string) string {
	l.t.Helper()
	ns := l.prefix + name
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		l.t.Fatalf("lab: %s: lab already closed", ns)
	}
	l.must("", "ip", "netns", "add", ns)
	l.mu.Lock()
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	// A resolv.conf of its own: `ip netns exec` bind-mounts /etc/netns/NS/*
	// over /etc, so nothing run in the lab can change the machine's resolver.
	dir := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"),
		[]byte("# glow e2e lab "+ns+": no resolver\n"), 0o644); err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	l.must(ns, "ip", "link", "set", "lo", "up")
	l.must(ns, "sysctl", "-q", "-w",
		"net.ipv6.conf.all.disable_ipv6=0",
		"net.ipv6.conf.default.disable_ipv6=0",
		"net.ipv6.conf.lo.disable_ipv6=0")
	return ns
}

// must runs argv in ns ("" = the lab's own namespace) and fails the test on
// error.
func (l *Lab) must(ns string, argv ...string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	res, err := l.run(ctx, ns, argv)
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	return res.Stdout
}

func (l *Lab) run(ctx context.Context, ns string, argv []string) (*Result, error) {
	if l.trace {
		l.t.Logf("lab: [%s] %s", ns, strings.Join(argv, " "))
	}
	return run(ctx, ns, argv)
}

// Close kills every process in the lab's namespaces and deletes them. It is
// registered with t.Cleanup by New; calling it again is a no-op.
func (l *Lab) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	procs := l.procs
	nss := l.nss
	l.mu.Unlock()

	for _, p := range procs {
		p.Kill()
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if err := testns.Remove(nss[i]); err != nil {
			l.t.Logf("lab cleanup: %v", err)
		}
	}
}

// Result is what a finished command printed and how it exited.
type Result struct {
	Argv   []string
	Stdout string
	Stderr string
	Code   int // exit status; -1 when it did not start or was killed
	Took   time.Duration
}

// ExitError is the error of a command that did not exit 0.
type ExitError struct {
	*Result
	Err error
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%q: %v", strings.Join(e.Argv, " "), e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + tail(s, 2000)
	}
	return msg
}

func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode returns the exit status carried by err, or -1.
func ExitCode(err error) int {
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return -1
}

// waitDelay bounds how long a finished command's pipes may stay open: a
// command that starts a daemon that keeps them would otherwise hang Run.
const waitDelay = 3 * time.Second

func nsCommand(ctx context.Context, ns string, argv []string) *exec.Cmd {
	full := argv
	if ns != "" {
		full = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	return cmd
}

func run(ctx context.Context, ns string, argv []string) (*Result, error) {
	cmd := nsCommand(ctx, ns, argv)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := &Result{Argv: argv, Stdout: stdout.String(), Stderr: stderr.String(), Code: -1, Took: time.Since(start)}
	if cmd.ProcessState != nil {
		res.Code = cmd.ProcessState.ExitCode()
	}
	if errors.Is(err, exec.ErrWaitDelay) && res.Code == 0 {
		// The command exited 0 but something it started kept its stdout
		// or stderr open; the output up to now is all we get.
		res.Stderr += fmt.Sprintf("\n[lab: output pipes still open %v after exit; closed]\n", waitDelay)
		return res, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		if ns != "" {
			err = fmt.Errorf("in %s: %w", ns, err)
		}
		return res, &ExitError{Result: res, Err: err}
	}
	return res, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
