package lab

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"glow/internal/testns"
)

// Host is one network namespace: a machine of the test network.
type Host struct {
	lab  *Lab
	Name string // the short name given to Lab.Host
	NS   string // the namespace's name, for `ip netns exec`

	// mu guards the following.
	mu    sync.Mutex
	nif   int          // interfaces attached so far (eth0, eth1, ...)
	addrs []netip.Addr // addresses given by bridges, in attach order
}

// IP returns the host's first IPv4 address (the zero Addr if it has none).
func (h *Host) IP() netip.Addr { return h.firstAddr(true) }

// IP6 returns the host's first IPv6 address on a bridge (not link-local).
func (h *Host) IP6() netip.Addr { return h.firstAddr(false) }

func (h *Host) firstAddr(v4 bool) netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range h.addrs {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

// Addrs returns every address the lab gave the host.
func (h *Host) Addrs() []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]netip.Addr(nil), h.addrs...)
}

// Command returns an unstarted command that runs argv inside the host's
// namespace, in its own process group (killed whole when ctx ends).
func (h *Host) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return nsCommand(ctx, h.NS, argv)
}

// Run runs argv in the host and waits for it. The Result is never nil; err is
// an *ExitError when the command did not exit 0 (see ExitCode).
func (h *Host) Run(ctx context.Context, argv ...string) (*Result, error) {
	return h.lab.run(ctx, h.NS, argv)
}

// MustRun runs argv in the host with CommandTimeout and returns its stdout;
// it fails the test when the command fails. Test goroutine only.
func (h *Host) MustRun(argv ...string) string {
	h.lab.t.Helper()
	return h.lab.must(h.NS, argv...)
}

// Sysctl sets key=value inside the host's namespace.
func (h *Host) Sysctl(key, value string) {
	h.lab.t.Helper()
	h.lab.must(h.NS, "sysctl", "-q", "-w", key+"="+value)
}

// Pids lists the processes running inside the host.
func (h *Host) Pids() ([]int, error) { return testns.Pids(h.NS) }

// KillAll SIGKILLs every process inside the host and waits (at most 5 s)
// until none is left.
func (h *Host) KillAll() error { return testns.Kill(h.NS) }

// Start starts argv in the host in the background. Its output is collected
// (see Proc.Output); it is killed when the lab closes if still running.
func (h *Host) Start(argv ...string) (*Proc, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proc{Argv: argv, cmd: h.Command(ctx, argv...), cancel: cancel, done: make(chan struct{})}
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	if h.lab.trace {
		h.lab.t.Logf("lab: [%s] start %s", h.NS, strings.Join(argv, " "))
	}
	if err := p.cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("in %s: start %q: %w", h.NS, strings.Join(argv, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	h.lab.mu.Lock()
	h.lab.procs = append(h.lab.procs, p)
	h.lab.mu.Unlock()
	return p, nil
}

// Proc is a background process started by Host.Start.
type Proc struct {
	Argv   []string
	cmd    *exec.Cmd
	cancel context.CancelFunc
	out    syncBuffer
	done   chan struct{}
	err    error // valid after done is closed
}

// Pid is the process id (of the command itself: ip netns exec execs it).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output returns stdout and stderr so far, interleaved.
func (p *Proc) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits at most timeout for the process to exit and returns its error.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%q still running after %v", strings.Join(p.Argv, " "), timeout)
	}
}

// Kill kills the process group and waits (at most 5 s) for it to exit.
func (p *Proc) Kill() {
	p.cancel()
	_ = p.Wait(5 * time.Second)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Bridge is a LAN (or the fake Internet): a namespace holding the Linux
// bridge br0; hosts attach to it by a veth pair.
type Bridge struct {
	lab  *Lab
	Name string
	NS   string
	V4   netip.Prefix
	V6   netip.Prefix

	// mu guards the following.
	mu    sync.Mutex
	next  int // next host number inside V4/V6
	ports int
	gw    netip.Addr // the router's LAN address, when the LAN has one
	hosts []*Host
}

// Gateway returns the LAN's router address (zero when it has no router).
func (b *Bridge) Gateway() netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gw
}

// Attach connects h to the bridge with a new veth pair and gives it the next
// free IPv4 and IPv6 address of the bridge; on a LAN with a router, the
// router becomes h's default gateway. It returns the IPv4 address.
func (b *Bridge) Attach(h *Host) netip.Addr {
	b.lab.t.Helper()
	b.mu.Lock()
	num := b.next
	b.next++
	b.mu.Unlock()
	if num > 250 {
		b.lab.t.Fatalf("lab: bridge %s is full", b.Name)
	}
	return b.attach(h, "", num)
}

// attach plugs h in as host number num, naming its interface ifname (or
// ethN when empty).
func (b *Bridge) attach(h *Host, ifname string, num int) netip.Addr {
	l := b.lab
	l.t.Helper()
	h.mu.Lock()
	if ifname == "" {
		ifname = "eth" + strconv.Itoa(h.nif)
	}
	h.nif++
	h.mu.Unlock()
	b.mu.Lock()
	port := "p" + strconv.Itoa(b.ports)
	b.ports++
	b.mu.Unlock()

	v4 := nthAddr(b.V4, num)
	v6 := nthAddr(b.V6, num)
	l.must(h.NS, "ip", "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", b.NS)
	l.must(b.NS, "ip", "link", "set", port, "master", "br0", "up")
	l.must(h.NS, "ip", "addr", "add", netip.PrefixFrom(v4, b.V4.Bits()).String(), "dev", ifname)
	l.must(h.NS, "ip", "addr", "add", netip.PrefixFrom(v6, b.V6.Bits()).String(), "dev", ifname, "nodad")
	l.must(h.NS, "ip", "link", "set", ifname, "up")

	h.mu.Lock()
	h.addrs = append(h.addrs, v4, v6)
	h.mu.Unlock()
	b.mu.Lock()
	b.hosts = append(b.hosts, h)
	gw := b.gw
	b.mu.Unlock()
	if gw.IsValid() {
		l.must(h.NS, "ip", "route", "replace", "default", "via", gw.String())
	}
	return v4
}

// nthAddr returns the address number n inside p.
func nthAddr(p netip.Prefix, n int) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	b[len(b)-1] = byte(n)
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Router is a host between a LAN (lan0, address .1 of the LAN) and the fake
// Internet (wan0).
type Router struct {
	*Host
	LAN *Bridge
	NAT NAT
	WAN netip.Addr // the router's public IPv4 address
}

// Router creates a router called name for lan: lan0 gets the LAN's .1 and
// becomes every LAN host's default gateway (hosts attached before and
// after), wan0 gets the next address of the fake Internet. It forwards IPv4
// only, with the given NAT and stateful filtering of WAN-inbound traffic.
func (l *Lab) Router(name string, lan *Bridge, nat NAT) *Router {
	l.t.Helper()
	inet := l.Internet()
	h := l.Host(name)
	lan.mu.Lock()
	if lan.gw.IsValid() {
		lan.mu.Unlock()
		l.t.Fatalf("lab: LAN %s already has a router", lan.Name)
	}
	hosts := append([]*Host(nil), lan.hosts...)
	lan.mu.Unlock()
	gw := lan.attach(h, "lan0", 1)
	inet.mu.Lock()
	num := inet.next
	inet.next++
	inet.mu.Unlock()
	wan := inet.attach(h, "wan0", num)
	lan.mu.Lock()
	lan.gw = gw
	lan.mu.Unlock()
	for _, lh := range hosts {
		l.must(lh.NS, "ip", "route", "replace", "default", "via", gw.String())
	}

	h.Sysctl("net.ipv4.ip_forward", "1")
	ipt := func(args ...string) { l.must(h.NS, append([]string{"iptables", "-w", "5"}, args...)...) }
	switch nat {
	case EasyNAT:
		ipt("-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")
	case HardNAT:
		ipt("-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE", "--random-fully")
	}
	// Stateful filtering of the WAN side, forwarded and to the router.
	ipt("-A", "FORWARD", "-i", "wan0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED,DNAT", "-j", "ACCEPT")
	ipt("-A", "FORWARD", "-i", "wan0", "-j", "DROP")
	ipt("-A", "INPUT", "-i", "wan0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	ipt("-A", "INPUT", "-i", "wan0", "-j", "DROP")
	return &Router{Host: h, LAN: lan, NAT: nat, WAN: wan}
}

// Forward adds a port forward: proto ("udp" or "tcp") port on the router's
// WAN address goes to the same port of to, a host on the router's LAN.
func (r *Router) Forward(proto string, port int, to *Host) {
	r.lab.t.Helper()
	r.lab.must(r.NS, "iptables", "-w", "5", "-t", "nat", "-A", "PREROUTING", "-i", "wan0",
		"-p", proto, "--dport", strconv.Itoa(port), "-j", "DNAT", "--to-destination", to.IP().String())
}

// FlushConntrack forgets every NAT mapping and flow of the router.
func (r *Router) FlushConntrack() {
	r.lab.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	// conntrack -F exits 1 when the table is already empty.
	_, _ = r.Run(ctx, "conntrack", "-F")
}

// String names the host for messages.
func (h *Host) String() string { return h.Name + "(" + h.NS + ")" }

// ProcStatus returns one field (e.g. "VmRSS") of /proc/PID/status, as text.
func ProcStatus(pid int, field string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == field {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("/proc/%d/status: no field %s", pid, field)
}
