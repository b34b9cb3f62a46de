package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"glow/internal/sdnotify"
	"glow/metrics"
	"glow/overlay"
	"glow/overlay/api"
	"glow/overlay/member"
	"glow/tun"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

type upFlags struct {
	cfg        overlay.Config
	foreground bool
	port       int
	peers      listFlag
	stun       listFlag
	linkListen string
	turn       listFlag
	turnUsers  listFlag
	turnIP     string
	socksAuth  string
	restore    string // a backup of the user key (glow user export)
	passFile   string
	metrics    string
}

func cmdUp(g *globals, args []string) error {
	var f upFlags
	fs := newFlags(g, "up")
	fs.StringVar(&f.cfg.UserName, "user", "", "name of the new user (first run only)")
	fs.StringVar(&f.cfg.NodeName, "name", "", "this node's name (default: host name)")
	fs.StringVar(&f.cfg.JoinCode, "join", "", "join the user that issued this code (glow invite)")
	fs.StringVar(&f.restore, "restore", "", "make this fresh node an admin of the user whose key FILE holds (glow user export)")
	fs.StringVar(&f.passFile, "passphrase-file", "", "with --restore: read the passphrase from this file (default: ask on the terminal)")
	fs.DurationVar(&f.cfg.CertLifetime, "cert-lifetime", 0, "with --user, or on an admin node: how long the user's node certificates last, renewed at half of it (default 8760h, a year; at least 1m)")
	fs.IntVar(&f.port, "port", overlay.DefaultPort, "UDP port, pinned (default: this one, or another if a glow node on the LAN has it; 0 any free)")
	fs.Var(&f.peers, "peer", "HOST:PORT of a node to contact at start (repeatable)")
	fs.Var(&f.stun, "stun", "HOST:PORT of an extra STUN server for netcheck (repeatable)")
	fs.StringVar(&f.linkListen, "link-listen", "", "TCP address for stream links (TCP, WebSocket); default the UDP port's number, 'off' for none")
	fs.Var(&f.turn, "turn", "turn://USER:PASS@HOST:PORT: take a relayed address on this TURN server (repeatable)")
	fs.StringVar(&f.cfg.TURNServer, "turn-server", "", "serve TURN for others on this UDP address (e.g. :3478)")
	fs.Var(&f.turnUsers, "turn-user", "USER:PASS allowed on --turn-server (repeatable)")
	fs.StringVar(&f.turnIP, "turn-public-ip", "", "the IPv4 address --turn-server hands out (default: the host's first public IPv4)")
	fs.BoolVar(&f.cfg.NoPortMap, "no-portmap", false, "do not ask the gateway (UPnP, NAT-PMP, PCP) for a port mapping")
	fs.BoolVar(&f.cfg.Userspace, "userspace", false, "no TUN: a userspace network stack and a SOCKS5 proxy")
	fs.StringVar(&f.cfg.SOCKS5, "socks5", "localhost:1055", "with --userspace: SOCKS5/HTTP proxy address, loopback (any other needs --socks5-auth), or unix:PATH")
	fs.StringVar(&f.socksAuth, "socks5-auth", "", "USER:PASS (or @FILE holding it) that proxy clients must give (SOCKS5 RFC 1929, HTTP Basic); also $GLOW_SOCKS5_AUTH")
	fs.StringVar(&f.cfg.TUNName, "tun", "glow0", "name of the TUN interface")
	fs.BoolVar(&f.cfg.NoDNS, "no-dns", false, "do not touch the system resolver")
	fs.BoolVar(&f.cfg.NoFirewall, "no-firewall", false, "no nftables table keeping other interfaces' traffic off the overlay addresses (not recommended)")
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics (PORT or :PORT: loopback; an IP address for others)")
	fs.BoolVar(&f.foreground, "foreground", false, "stay in the foreground (logs to stderr)")
	rf := addRouteFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if ch, err := rf.change(fs); err != nil {
		return err
	} else if !ch.Empty() {
		f.cfg.Prefs = &ch
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if f.port < 0 || f.port > 65535 {
		return usagef("--port %d: want 0 to 65535", f.port)
	}
	// Without --port the node takes DefaultPort and may move off it when a
	// LAN neighbour uses it too (overlay/portclash.go); --port pins it.
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "port" {
			f.cfg.Port = uint16(f.port)
			f.cfg.Random = f.port == 0
		}
	})
	f.cfg.Peers = f.peers
	f.cfg.TURN = f.turn
	if len(f.turnUsers) > 0 {
		f.cfg.TURNUsers = map[string]string{}
		for _, up := range f.turnUsers {
			u, p, ok := strings.Cut(up, ":")
			if !ok || u == "" || p == "" {
				return usagef("--turn-user %q: want USER:PASS", up)
			}
			f.cfg.TURNUsers[u] = p
		}
	}
	if f.cfg.TURNServer != "" && len(f.cfg.TURNUsers) == 0 {
		return usagef("--turn-server needs at least one --turn-user USER:PASS")
	}
	if f.turnIP != "" {
		ip, err := netip.ParseAddr(f.turnIP)
		if err != nil || !ip.Is4() {
			return usagef("--turn-public-ip %q: want an IPv4 address", f.turnIP)
		}
		f.cfg.TURNPublicIP = ip
	}
	switch f.linkListen {
	case "off":
	case "":
		if f.port != 0 {
			f.cfg.LinkListen = fmt.Sprintf(":%d", f.port)
		}
	default:
		f.cfg.LinkListen = f.linkListen
	}
	f.cfg.STUNServers = f.stun
	f.cfg.StateDir = g.state
	if f.cfg.CertLifetime != 0 {
		if err := member.CheckCertLifetime(f.cfg.CertLifetime); err != nil {
			return usagef("--cert-lifetime: %v", err)
		}
	}
	if f.cfg.JoinCode != "" && f.cfg.UserName != "" {
		return usagef("--user creates a new user and --join joins one: give one of them")
	}
	if f.cfg.JoinCode != "" {
		if _, err := member.ParseInvite(f.cfg.JoinCode); err != nil {
			return usagef("--join: %v", err)
		}
	}
	if f.restore != "" {
		if f.cfg.JoinCode != "" || f.cfg.UserName != "" {
			return usagef("--restore makes this node an admin of an existing user: give neither --user nor --join")
		}
		if err := restoreUserKey(g, f.restore, f.passFile); err != nil {
			return err
		}
		args = dropFlag(dropFlag(args, "restore"), "passphrase-file") // the daemon finds user.key (cmd/glow/user.go)
	}
	if f.socksAuth == "" {
		f.socksAuth = os.Getenv(socksAuthEnv)
	}
	if f.cfg.Userspace {
		if _, _, err := socksCredentials(f.socksAuth); err != nil {
			return usagef("--socks5-auth: %v", err)
		}
		if err := checkSOCKSAddr(f.cfg.SOCKS5, f.socksAuth != ""); err != nil {
			return usagef("--socks5 %s: %v", f.cfg.SOCKS5, err)
		}
	}
	if f.metrics != "" {
		if _, err := metrics.ListenAddr(context.Background(), f.metrics); err != nil {
			return usagef("--metrics %s: %v", f.metrics, err)
		}
	}
	if !f.cfg.Userspace && os.Geteuid() != 0 {
		return errors.New("a TUN interface needs root; run as root, or use --userspace for a SOCKS5 proxy instead")
	}

	c := api.NewClient(g.state)
	if s, err := c.Status(); err == nil {
		if g.json {
			return printJSON(g, s.Self)
		}
		fmt.Fprintf(g.out, "glow is already up: %s.%s %s %s\n", s.Self.Name, s.Self.User, s.Self.IPv4, s.Self.IPv6)
		return nil
	}
	foreground := f.foreground || os.Getenv("GLOW_DAEMON") == "1"
	if f.cfg.Userspace && openUserspace == nil && foreground {
		return execUserspace(g, args)
	}
	if foreground {
		f.cfg.OpenUserspace = openUserspace
		return runDaemon(g, f)
	}
	return startBackground(g, args, f.socksAuth, f.cfg.Userspace)
}

// startBackground re-runs this command as a detached daemon that logs to
// STATE/glow.log, and returns once its interface is up (or it failed).
//
// The proxy credentials go to the daemon in its environment, never on its
// command line: /proc/PID/cmdline is readable by every local user, and the
// daemon runs for days.
func startBackground(g *globals, args []string, socksAuth string, userspace bool) error {
	if err := os.MkdirAll(g.state, 0o700); err != nil {
		return fmt.Errorf("state directory %s: %w", g.state, err)
	}
	args = dropFlag(args, "socks5-auth")
	logPath := g.state + "/" + logName
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	self, err := daemonExecutable(userspace)
	if err != nil {
		return err
	}
	full := append([]string{"--state", g.state, "up"}, args...)
	cmd := exec.Command(self, full...)
	cmd.Env = append(os.Environ(), "GLOW_DAEMON=1")
	if socksAuth != "" {
		cmd.Env = append(cmd.Env, socksAuthEnv+"="+socksAuth)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	c := api.NewClient(g.state)
	deadline := time.Now().Add(60 * time.Second)
	relay := joinProgress(logPath, os.Stderr)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			relay()
			return fmt.Errorf("the daemon stopped: %s (full log: %s)", lastLogLine(logPath), logPath)
		case <-time.After(100 * time.Millisecond):
		}
		relay()
		if s, err := c.Status(); err == nil {
			printUp(g, s)
			return nil
		}
	}
	cmd.Process.Kill()
	return fmt.Errorf("the daemon did not come up within 60s (see %s)", logPath)
}

// joinProgress returns a function that copies to stderr the lines the
// daemon logged since now about a join in progress ("glow: join: ..."):
// what it tried and what to run on a node of the user.
func joinProgress(path string, w io.Writer) func() {
	var off int64
	if fi, err := os.Stat(path); err == nil {
		off = fi.Size()
	}
	return func() {
		f, err := os.Open(path)
		if err != nil {
			return
		}
		defer f.Close()
		data, err := io.ReadAll(io.NewSectionReader(f, off, 1<<20))
		if err != nil && len(data) == 0 {
			return
		}
		end := bytes.LastIndexByte(data, '\n')
		if end < 0 {
			return
		}
		off += int64(end + 1)
		for _, l := range strings.Split(string(data[:end]), "\n") {
			if _, rest, ok := strings.Cut(l, "glow: join: "); ok {
				fmt.Fprintln(w, rest)
			}
		}
	}
}

func lastLogLine(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			// Drop the log timestamp and the "glow up: " prefix.
			if _, rest, ok := strings.Cut(l, "glow up: "); ok {
				return strings.TrimSuffix(rest, ".")
			}
			return l
		}
	}
	return "no log"
}

func printUp(g *globals, s api.Status) {
	if g.json {
		printJSON(g, s.Self)
		return
	}
	fmt.Fprintf(g.out, "glow is up: %s.%s\n  IPv4 %s\n  IPv6 %s\n", s.Self.Name, s.Self.User, s.Self.IPv4, s.Self.IPv6)
	if s.Self.Admin {
		fmt.Fprintf(g.out, "This node is the user's admin node: 'glow invite' adds another device.\n")
	}
}

// runDaemon runs the node in this process until SIGINT/SIGTERM or 'glow down'.
// daemonMemoryLimit is the daemon's soft memory limit (runtime/debug
// SetMemoryLimit) unless GOMEMLIMIT says otherwise. wireguard-go gives each
// packet in flight a 64 KiB buffer from a sync.Pool; the overlay bounds the
// packets in flight (overlay/inflight.go), and this limit makes the garbage
// collector reuse freed buffers before the heap doubles, so a daemon that
// has just carried gigabytes stays below 64 MiB resident (BENCHMARKS.md:
// "RSS right after throughput"; ~16 MiB of the limit is receive buffers
// that are never touched). Tighter limits cost throughput: at 64 MiB the
// collector ran often enough to cost ~5% CPU per GB.
const daemonMemoryLimit = 72 << 20

// noHeapProfile turns the runtime's heap profiler off in the daemon
// (runtime.MemProfileRate = 0) unless GODEBUG=memprofilerate=N asks for it.
// Nothing in glow reads a heap profile, but the profiler is linked (a
// dependency links runtime/pprof), so by default every ~512 KiB allocated
// records its call stack: a walk of the stack through the binary's
// function tables (.gopclntab), whose pages then stay resident. On an
// idle daemon (bench -idle-only) that was 0.3 MiB of .gopclntab.
func noHeapProfile() {
	if !strings.Contains(os.Getenv("GODEBUG"), "memprofilerate=") {
		runtime.MemProfileRate = 0
	}
}

func runDaemon(g *globals, f upFlags) error {
	var out io.Writer = os.Stderr
	if !f.foreground {
		// The background daemon (started by startBackground with its
		// stdio on glow.log) writes the log itself, with a size cap.
		if err := os.MkdirAll(g.state, 0o700); err != nil {
			return fmt.Errorf("state directory %s: %w", g.state, err)
		}
		lf, err := openRotatingLog(g.state+"/"+logName, logMaxSize, true)
		if err != nil {
			return err
		}
		defer lf.Close()
		out = lf
	}
	logf := log.New(out, "", log.LstdFlags|log.Lmicroseconds).Printf
	if f.foreground {
		// Structured lines (log/slog), which journald and log shippers
		// keep as fields; JSON lines with --json.
		logf = slogLogf(os.Stderr, g.json, underJournal())
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(daemonMemoryLimit)
	}
	noHeapProfile()

	f.cfg.Logf = logf
	var metricsLn net.Listener
	if f.metrics != "" {
		// Before the node starts: a port taken fails the start, not later.
		ln, err := listenMetrics(context.Background(), f.metrics)
		if err != nil {
			return err
		}
		metricsLn = ln
		defer ln.Close()
	}
	n, err := overlay.Start(f.cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	os.WriteFile(g.state+"/glow.pid", []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	defer os.Remove(g.state + "/glow.pid")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if n.Userspace() != nil && f.cfg.SOCKS5 != "" {
		user, pass, _ := socksCredentials(f.socksAuth)
		ln, err := listenSOCKS(f.cfg.SOCKS5)
		if err != nil {
			return fmt.Errorf("SOCKS5 proxy on %s: %w", f.cfg.SOCKS5, err)
		}
		go tun.ServeSOCKS5(ctx, ln, tun.ProxyConfig{Dial: n.Dial, Resolve: n.ResolveName, Logf: logf,
			User: user, Password: pass})
		who := "every local user may use it (--socks5-auth to require credentials)"
		if user != "" {
			who = "clients must give the --socks5-auth credentials"
		}
		logf("glow: SOCKS5/HTTP proxy on %s %s; %s", ln.Addr().Network(), ln.Addr(), who)
	}
	if metricsLn != nil {
		go serveMetrics(ctx, metricsLn, n, logf)
	}
	apiErr := make(chan error, 1)
	go func() { apiErr <- n.ServeAPI(ctx, cancel) }()
	notifyReady(g.state, logf)
	go watchdog(ctx, sdnotify.WatchdogInterval(), n, logf)
	defer sdnotify.Notify(sdnotify.Stopping)
	select {
	case <-ctx.Done():
	case err := <-apiErr:
		if err != nil {
			return err
		}
	}
	logf("glow: shutting down")
	return nil
}
