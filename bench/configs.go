package main

// Configurations: each is a column of the table. A configuration's setup
// builds its topology in a fresh lab, brings its tunnel up and returns an
// instance; the lab's close is its teardown (setup registers extra steps
// with lab.onClose). To add a column (glow through 1 or 2 relays), write a
// setup that uses more namespaces and append it to configs().

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// config is one column of the table.
type config struct {
	key   string // metric keys and scratch directory names
	title string // column header
	// daemon says whether the configuration has daemon processes whose
	// CPU and memory are measured (raw veth has none).
	daemon bool
	// noIdle leaves the configuration out of the idle phase (the reference
	// relay's columns: their idle figures would say nothing).
	noIdle bool
	setup  func(l *lab, bins binaries) (*instance, error)
	// run, when set, replaces setup and the throughput sequence: the
	// configuration measures its own figures (the NAT rows) and is not a
	// column of the main table.
	run func(l *lab, bins binaries, o options) (map[string]float64, error)
}

// instance is a configuration that is up: iperf3 and ping run in client
// against target; the iperf3 server runs in server.
type instance struct {
	client, server string
	target         string
	daemons        []int // pids of the tunnel daemons on both ends
	relays         []int // pids of the daemons between them that only forward (relay configurations)
}

type binaries struct {
	glow, wireguard string
	udpfwd          string // the reference relay (bench/udpfwd)
}

func configs() []config {
	return []config{
		{key: "raw", title: "raw veth", setup: setupRaw},
		{key: "wg", title: "wireguard-go", daemon: true, setup: setupWireguard},
		{key: "glow", title: "glow direct", daemon: true, setup: setupGlowDirect},
		{key: "glowm", title: "glow + metrics", daemon: true, setup: setupGlowMetrics},
		{key: "relay1", title: "glow 1 relay", daemon: true, setup: setupGlowRelay1},
		{key: "relay2", title: "glow 2 relays", daemon: true, setup: setupGlowRelay2},
		{key: "fwd1", title: "wg-go 1 fwd", daemon: true, noIdle: true, setup: setupWireguardFwd1},
		{key: "fwd2", title: "wg-go 2 fwd", daemon: true, noIdle: true, setup: setupWireguardFwd2},
		{key: "wgr", title: "wg-go routed", daemon: true, noIdle: true, setup: setupWireguardRouted},
		{key: "glowr", title: "glow routed", daemon: true, noIdle: true, setup: setupGlowRouted},
		{key: "subnet", title: "glow subnet router", daemon: true, setup: setupGlowSubnet},
		{key: "exit", title: "glow exit node", daemon: true, setup: setupGlowExit},
		{key: "nat", title: "glow easy NATs", run: runNAT},
	}
}

func setupRaw(l *lab, _ binaries) (*instance, error) {
	a, b, err := l.pair()
	if err != nil {
		return nil, err
	}
	return &instance{client: a, server: b, target: "10.78.0.2"}, nil
}

// setupWireguard runs the reference wireguard-go on both ends of the pair,
// configured with wg(8): tunnel 10.79.0.1 <-> 10.79.0.2, MTU 1420, UDP
// port 51820 over the veth.
func setupWireguard(l *lab, bins binaries) (*instance, error) {
	a, b, err := l.pair()
	if err != nil {
		return nil, err
	}
	return startWireguard(l, bins, &wgEnd{ns: a, reachedAt: "10.78.0.1:51820"}, &wgEnd{ns: b, reachedAt: "10.78.0.2:51820"})
}

// wgEnd is one wireguard-go end of a configuration: its namespace, and the
// address the other end sends to in order to reach it (its own underlay
// address, or a forwarder's port).
type wgEnd struct {
	ns, reachedAt string
	ifname, key   string
	pub           string
	pid           int
}

// startWireguard starts and configures wireguard-go at both ends: tunnel
// 10.79.0.1 (a) <-> 10.79.0.2 (b), MTU 1420, UDP port 51820; iperf3 runs
// from a to b.
func startWireguard(l *lab, bins binaries, a, b *wgEnd) (*instance, error) {
	ends := []*wgEnd{a, b}
	addrs := []string{"10.79.0.1", "10.79.0.2"}
	for i, e := range ends {
		// /var/run/wireguard is shared by all namespaces: unique names.
		e.ifname = fmt.Sprintf("gw%dr%d%c", os.Getpid(), l.round, 'a'+i)
		if len(e.ifname) > 15 {
			return nil, fmt.Errorf("interface name %s too long", e.ifname)
		}
		key, err := run(l.ctx, cmdTimeout, "wg", "genkey")
		if err != nil {
			return nil, err
		}
		e.key = filepath.Join(l.dir, e.ifname+".key")
		if err := os.WriteFile(e.key, []byte(key), 0o600); err != nil {
			return nil, err
		}
		pub, err := runStdin(l.ctx, key, "wg", "pubkey")
		if err != nil {
			return nil, err
		}
		e.pub = strings.TrimSpace(pub)
		sock := "/var/run/wireguard/" + e.ifname + ".sock"
		os.Remove(sock)
		cmd, err := l.start(e.ns, e.ifname+".log", []string{"WG_PROCESS_FOREGROUND=1"}, bins.wireguard, "-f", e.ifname)
		if err != nil {
			return nil, err
		}
		e.pid = cmd.Process.Pid
		l.onClose(func() { os.Remove(sock) })
		err = waitFor(l.ctx, 10*time.Second, 50*time.Millisecond, "wireguard-go socket "+sock, func() (bool, error) {
			if cmd.ProcessState != nil {
				return false, fmt.Errorf("wireguard-go exited (log %s)", filepath.Join(l.dir, e.ifname+".log"))
			}
			_, err := os.Stat(sock)
			return err == nil, nil
		})
		if err != nil {
			return nil, err
		}
	}
	for i, e := range ends {
		peer := ends[1-i]
		if _, err := l.exec(e.ns, "wg", "set", e.ifname, "private-key", e.key, "listen-port", "51820",
			"peer", peer.pub, "allowed-ips", addrs[1-i]+"/32", "endpoint", peer.reachedAt); err != nil {
			return nil, err
		}
		if _, err := l.exec(e.ns, "ip", "addr", "add", addrs[i]+"/24", "dev", e.ifname); err != nil {
			return nil, err
		}
		if _, err := l.exec(e.ns, "ip", "link", "set", e.ifname, "mtu", "1420", "up"); err != nil {
			return nil, err
		}
	}
	return &instance{client: a.ns, server: b.ns, target: addrs[1], daemons: []int{a.pid, b.pid}}, nil
}

// setupWireguardFwd1 is wireguard-go through the reference relay: a - r - b
// as glow 1 relay builds it (no forwarding in r), with udpfwd in r.
func setupWireguardFwd1(l *lab, bins binaries) (*instance, error) {
	return setupWireguardFwd(l, bins, "a", "r", "b")
}

// setupWireguardFwd2 is wireguard-go through two reference relays:
// a - r1 - r2 - b as glow 2 relays builds it, udpfwd in r1 and r2.
func setupWireguardFwd2(l *lab, bins binaries) (*instance, error) {
	return setupWireguardFwd(l, bins, "a", "r1", "r2", "b")
}

// setupWireguardFwd builds the chain names (l.chain) with udpfwd in each
// middle namespace k (1-based): its port 5000 faces the left hop
// 10.78.k.0/24, its port 5001 the right one 10.78.(k+1).0/24, and each
// side sends on to the next forwarder's facing port or to the end's
// wireguard-go (port 51820). a sends to 10.78.1.1:5000 to reach b; b to
// 10.78.(n+1).1:5001 to reach a.
func setupWireguardFwd(l *lab, bins binaries, names ...string) (*instance, error) {
	ns, err := l.chain(names...)
	if err != nil {
		return nil, err
	}
	n := len(ns) - 2 // forwarders
	var fwds []int
	for k := 1; k <= n; k++ {
		left := fmt.Sprintf("10.78.%d.1:5001", k) // the previous forwarder's port 5001
		if k == 1 {
			left = "10.78.1.2:51820"
		}
		right := fmt.Sprintf("10.78.%d.2:5000", k+1) // the next forwarder's port 5000
		if k == n {
			right = fmt.Sprintf("10.78.%d.2:51820", k+1)
		}
		pid, err := l.forwarder(bins, ns[k], "5000", left, "5001", right)
		if err != nil {
			return nil, err
		}
		fwds = append(fwds, pid)
	}
	inst, err := startWireguard(l, bins, &wgEnd{ns: ns[0], reachedAt: fmt.Sprintf("10.78.%d.1:5001", n+1)},
		&wgEnd{ns: ns[n+1], reachedAt: "10.78.1.1:5000"})
	if err != nil {
		return nil, err
	}
	inst.daemons = append(inst.daemons, fwds...)
	inst.relays = fwds
	return inst, nil
}

// routed is a - r - b with r a kernel router (forwarding on, a's and b's
// default routes through it): two machines on different subnets, the
// commonest direct path, where the single veth of wg and glow has none.
func (l *lab) routed() (a, r, b string, err error) {
	ns, err := l.chain("a", "r", "b")
	if err != nil {
		return "", "", "", err
	}
	a, r, b = ns[0], ns[1], ns[2]
	if err := l.sysctl(r, "net.ipv4.ip_forward", "1"); err != nil {
		return "", "", "", err
	}
	for _, x := range [][2]string{{a, "10.78.1.1"}, {b, "10.78.2.1"}} {
		if _, err := l.exec(x[0], "ip", "route", "add", "default", "via", x[1]); err != nil {
			return "", "", "", err
		}
	}
	return a, r, b, nil
}

// setupWireguardRouted is wireguard-go between a and b through the kernel
// router r.
func setupWireguardRouted(l *lab, bins binaries) (*instance, error) {
	a, _, b, err := l.routed()
	if err != nil {
		return nil, err
	}
	return startWireguard(l, bins, &wgEnd{ns: a, reachedAt: "10.78.1.2:51820"}, &wgEnd{ns: b, reachedAt: "10.78.2.2:51820"})
}

// setupGlowRouted is glow between a and b through the kernel router r,
// which runs no glow: b joins with a's invite code, which carries a's
// addresses (no LAN beacon crosses r); up once a sees b direct at b's
// address.
func setupGlowRouted(l *lab, bins binaries) (*instance, error) {
	a, _, b, err := l.routed()
	if err != nil {
		return nil, err
	}
	return glowPairIn(l, bins, a, b, "10.78.2.2")
}

// chain builds namespaces names[0] - names[1] - ... one veth per hop,
// hop i on 10.78.(i+1).0/24 (.2 on the left end of the first hop, .1 on
// the left of every other; the right end the other), with forwarding off
// in the middle ones: the ends reach each other only through a process
// in the middle.
func (l *lab) chain(names ...string) ([]string, error) {
	ns := make([]string, len(names))
	for i, name := range names {
		var err error
		if ns[i], err = l.ns(name); err != nil {
			return nil, err
		}
	}
	for i := 0; i+1 < len(ns); i++ {
		left, right := fmt.Sprintf("10.78.%d.1/24", i+1), fmt.Sprintf("10.78.%d.2/24", i+1)
		if i == 0 {
			left, right = right, left
		}
		if err := l.veth(ns[i], fmt.Sprintf("eth%d", min(i, 1)), left, ns[i+1], "eth0", right); err != nil {
			return nil, err
		}
	}
	for _, r := range ns[1 : len(ns)-1] {
		if err := l.sysctl(r, "net.ipv4.ip_forward", "0"); err != nil {
			return nil, err
		}
	}
	return ns, nil
}

// forwarder starts udpfwd (the reference relay) in ns and returns its pid.
func (l *lab) forwarder(bins binaries, ns string, args ...string) (int, error) {
	cmd, err := l.start(ns, "udpfwd-"+ns+".log", nil, append([]string{bins.udpfwd}, args...)...)
	if err != nil {
		return 0, err
	}
	return cmd.Process.Pid, nil
}

// glowNode is one glow daemon of a lab, driven through the CLI.
type glowNode struct {
	l     *lab
	bin   string
	ns    string
	name  string
	state string
}

func newGlowNode(l *lab, bins binaries, ns, name string) (*glowNode, error) {
	state := filepath.Join(l.dir, name)
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, err
	}
	return &glowNode{l: l, bin: bins.glow, ns: ns, name: name, state: state}, nil
}

// glow runs `glow --state DIR ARGS...` in the node's namespace.
func (g *glowNode) glow(args ...string) (string, error) {
	return run(g.l.ctx, 60*time.Second, "ip", append([]string{"netns", "exec", g.ns, g.bin, "--state", g.state}, args...)...)
}

// up runs `glow up --no-dns --name NAME ARGS...` and registers `glow down`
// with the lab's teardown.
func (g *glowNode) up(args ...string) error {
	if _, err := g.glow(append([]string{"up", "--no-dns", "--name", g.name}, args...)...); err != nil {
		return fmt.Errorf("%w (log %s/glow.log)", err, g.state)
	}
	g.l.onClose(func() {
		if _, err := g.glow("down"); err != nil {
			g.l.log("glow down in %s: %v", g.ns, err)
		}
	})
	return nil
}

// down runs `glow down`.
func (g *glowNode) down() error {
	_, err := g.glow("down")
	return err
}

// invite returns the last line of `glow invite`.
func (g *glowNode) invite() (string, error) {
	out, err := g.glow("invite")
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	code := strings.TrimSpace(lines[len(lines)-1])
	if code == "" || strings.ContainsAny(code, " \t") {
		return "", fmt.Errorf("glow invite in %s: no one-word code on the last line: %q", g.ns, out)
	}
	return code, nil
}

// join brings the node up with an invite from inviter.
func (g *glowNode) join(inviter *glowNode) error {
	code, err := inviter.invite()
	if err != nil {
		return err
	}
	return g.up("--join", code)
}

// ip returns the node's overlay IPv4 address.
func (g *glowNode) ip() (string, error) {
	out, err := g.glow("ip")
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return "", fmt.Errorf("glow ip in %s printed nothing", g.ns)
	}
	return f[0], nil
}

func (g *glowNode) pid() (int, error) {
	return readPidFile(filepath.Join(g.state, "glow.pid"))
}

// peerStatus is one peer of `glow status --json`.
type peerStatus struct {
	Name     string   `json:"name"`
	Online   bool     `json:"online"`
	Path     string   `json:"path"`
	Endpoint string   `json:"endpoint"`
	Via      []string `json:"via"`
	Standby  []string `json:"standby"` // relays of the proven second path
}

// peer returns the node's current view of the peer called name (nil when
// it does not list it).
func (g *glowNode) peer(name string) (*peerStatus, error) {
	out, err := g.glow("status", "--json")
	if err != nil {
		return nil, err
	}
	var st struct {
		Peers []peerStatus `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, err
	}
	for i := range st.Peers {
		if shortName(st.Peers[i].Name) == name {
			return &st.Peers[i], nil
		}
	}
	return nil, nil
}

// is reports whether the peer is online on path ("direct" or "relay")
// through exactly the relays via (for relay), or at an endpoint on the
// address at (for direct; "" = any).
func (p *peerStatus) is(path, at string, via ...string) bool {
	if p == nil || !p.Online || p.Path != path {
		return false
	}
	if path == "direct" && at != "" {
		host, _, err := net.SplitHostPort(p.Endpoint)
		return err == nil && strings.TrimPrefix(host, "::ffff:") == at
	}
	if path == "relay" {
		if len(p.Via) != len(via) {
			return false
		}
		for i := range via {
			if shortName(p.Via[i]) != via[i] {
				return false
			}
		}
	}
	return true
}

func (p *peerStatus) String() string {
	if p == nil {
		return "not listed"
	}
	return fmt.Sprintf("online %v, path %q, endpoint %q, via %v", p.Online, p.Path, p.Endpoint, p.Via)
}

// waitPeer polls g's status until its peer called name passes ok, at most
// limit, and returns when it first did.
func (g *glowNode) waitPeer(name string, limit time.Duration, what string, ok func(*peerStatus) bool) (time.Time, error) {
	var last *peerStatus
	var at time.Time
	err := waitFor(g.l.ctx, limit, 50*time.Millisecond, fmt.Sprintf("%s: %s sees %s %s", g.l.prefix, g.name, name, what), func() (bool, error) {
		p, err := g.peer(name)
		if err != nil {
			return false, err
		}
		last = p
		if ok(p) {
			at = time.Now()
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return at, fmt.Errorf("%w (last: %s)", err, last)
	}
	return at, nil
}

// shortName drops the domain of a node name (r1.bench.glow -> r1).
func shortName(s string) string {
	name, _, _ := strings.Cut(s, ".")
	return name
}

// glowInstance is the instance of glow nodes: iperf3 from client to
// server's overlay IPv4, CPU and memory summed or maxed over all nodes.
func glowInstance(client, server *glowNode, all ...*glowNode) (*instance, error) {
	target, err := server.ip()
	if err != nil {
		return nil, err
	}
	var pids, relays []int
	for _, g := range all {
		pid, err := g.pid()
		if err != nil {
			return nil, err
		}
		pids = append(pids, pid)
		if g != client && g != server {
			relays = append(relays, pid)
		}
	}
	return &instance{client: client.ns, server: server.ns, target: target, daemons: pids, relays: relays}, nil
}

// setupGlowDirect runs one glow daemon in each namespace: a creates user
// bench, b joins with an invite code (found by LAN beacons on the veth);
// it is up when a's status shows b online on a direct path.
func setupGlowDirect(l *lab, bins binaries) (*instance, error) {
	return setupGlowPair(l, bins)
}

// setupGlowMetrics is glow direct with --metrics on both daemons and each
// scraped every 15 s (Prometheus' default interval) from its namespace
// until teardown: the cost of metrics on, against glow direct's off.
func setupGlowMetrics(l *lab, bins binaries) (*instance, error) {
	const addr = "127.0.0.1:9100"
	inst, err := setupGlowPair(l, bins, "--metrics", addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(l.ctx)
	done := make(chan struct{})
	l.onClose(func() { cancel(); <-done })
	go func() {
		defer close(done)
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			for _, ns := range []string{inst.client, inst.server} {
				if _, err := run(ctx, 10*time.Second, "ip", "netns", "exec", ns, "curl", "-sf", "-o", "/dev/null", "http://"+addr+"/metrics"); err != nil && ctx.Err() == nil {
					l.log("scrape in %s: %v", ns, err)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return inst, nil
}

// setupGlowPair is a and b on one veth, each with glow up (extra flags for
// both), b joined by a's invite, up once a sees b direct.
func setupGlowPair(l *lab, bins binaries, extra ...string) (*instance, error) {
	a, b, err := l.pair()
	if err != nil {
		return nil, err
	}
	return glowPairIn(l, bins, a, b, "", extra...)
}

// glowPairIn runs glow in namespaces a and b (extra flags for both): a
// creates user bench, b joins with a's invite code; up once a sees b
// direct at address at ("" = any).
func glowPairIn(l *lab, bins binaries, a, b, at string, extra ...string) (*instance, error) {
	ga, err := newGlowNode(l, bins, a, "a")
	if err != nil {
		return nil, err
	}
	gb, err := newGlowNode(l, bins, b, "b")
	if err != nil {
		return nil, err
	}
	if err := ga.up(append([]string{"--user", "bench"}, extra...)...); err != nil {
		return nil, err
	}
	code, err := ga.invite()
	if err != nil {
		return nil, err
	}
	if err := gb.up(append([]string{"--join", code}, extra...)...); err != nil {
		return nil, err
	}
	if _, err := ga.waitPeer("b", 30*time.Second, "direct", func(p *peerStatus) bool { return p.is("direct", at) }); err != nil {
		return nil, err
	}
	return glowInstance(ga, gb, ga, gb)
}

// setupGlowRelay1 is a - r - b: a and b each on their own veth to r
// (10.78.1.0/24 and 10.78.2.0/24), r does not forward, so a and b have no
// path to each other but through r's glow. r creates user bench and
// invites both; it is up when a's status shows b on path relay via [r].
func setupGlowRelay1(l *lab, bins binaries) (*instance, error) {
	ns, err := l.chain("a", "r", "b")
	if err != nil {
		return nil, err
	}
	a, r, b := ns[0], ns[1], ns[2]
	nodes := map[string]*glowNode{}
	for _, x := range [][2]string{{a, "a"}, {r, "r"}, {b, "b"}} {
		g, err := newGlowNode(l, bins, x[0], x[1])
		if err != nil {
			return nil, err
		}
		nodes[x[1]] = g
	}
	ga, gr, gb := nodes["a"], nodes["r"], nodes["b"]
	if err := gr.up("--user", "bench"); err != nil {
		return nil, err
	}
	if err := ga.join(gr); err != nil {
		return nil, err
	}
	if err := gb.join(gr); err != nil {
		return nil, err
	}
	if _, err := ga.waitPeer("b", 30*time.Second, "relay via [r]", func(p *peerStatus) bool { return p.is("relay", "", "r") }); err != nil {
		return nil, err
	}
	return glowInstance(ga, gb, ga, gr, gb)
}

// setupGlowRelay2 is a - r1 - r2 - b, one veth per hop (10.78.1.0/24,
// 10.78.2.0/24, 10.78.3.0/24), nothing forwards. r1 creates user bench
// and invites a and r2 (its neighbours). Joining needs UDP to the
// inviter, so b joins r1 over a temporary veth (10.78.9.0/24) that is
// deleted right after; b then restarts (glow down, glow up) with r2 as its
// only neighbour. Up when a's status shows b on path relay via [r1 r2].
func setupGlowRelay2(l *lab, bins binaries) (*instance, error) {
	ns, err := l.chain("a", "r1", "r2", "b")
	if err != nil {
		return nil, err
	}
	a, r1, r2, b := ns[0], ns[1], ns[2], ns[3]
	if err := l.veth(r1, "tmp0", "10.78.9.1/24", b, "tmp0", "10.78.9.2/24"); err != nil {
		return nil, err
	}
	nodes := map[string]*glowNode{}
	for _, x := range [][2]string{{a, "a"}, {r1, "r1"}, {r2, "r2"}, {b, "b"}} {
		g, err := newGlowNode(l, bins, x[0], x[1])
		if err != nil {
			return nil, err
		}
		nodes[x[1]] = g
	}
	ga, gr1, gr2, gb := nodes["a"], nodes["r1"], nodes["r2"], nodes["b"]
	if err := gr1.up("--user", "bench"); err != nil {
		return nil, err
	}
	for _, g := range []*glowNode{ga, gr2, gb} {
		if err := g.join(gr1); err != nil {
			return nil, err
		}
	}
	if _, err := run(l.ctx, cmdTimeout, "ip", "-n", b, "link", "del", "tmp0"); err != nil {
		return nil, err
	}
	if err := gb.down(); err != nil {
		return nil, err
	}
	if _, err := gb.glow("up", "--no-dns"); err != nil {
		return nil, fmt.Errorf("%w (log %s/glow.log)", err, gb.state)
	}
	if _, err := ga.waitPeer("b", 30*time.Second, "relay via [r1 r2]", func(p *peerStatus) bool { return p.is("relay", "", "r1", "r2") }); err != nil {
		return nil, err
	}
	return glowInstance(ga, gb, ga, gr1, gr2, gb)
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %v", path, err)
	}
	return pid, nil
}

// configKeys lists the keys -configs accepts.
func configKeys() []string {
	var keys []string
	for _, c := range configs() {
		keys = append(keys, c.key)
	}
	return keys
}
