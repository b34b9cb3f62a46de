// Command bench measures glow's data path against plain wireguard-go and a
// raw veth, in Linux network namespaces, and prints one table of medians.
//
// Usage (root; `make bench` runs it):
//
//	go run ./bench                 # build glow and the reference, 3 rounds, write BENCHMARKS.md
//	go run ./bench -rounds 5 -time 10s
//	go run ./bench -glow bin/glow -wireguard /path/to/wireguard -out ''   # prebuilt, no file
//	go run ./bench -perf /tmp/prof # also record a perf profile of each daemon
//	go run ./bench -idle-only -configs wg,glow   # only the idle phase: idle CPU (steady state) and RSS
//
// What it does. Each configuration (a column: raw veth, wireguard-go, glow
// direct, glow through 1 and 2 relays, wireguard-go through the reference
// relay bench/udpfwd, both through a kernel router) is a small struct whose setup builds
// its namespaces (a veth pair, or a chain a - r - b / a - r1 - r2 - b) and
// brings its tunnel up; the lab it was built in is its teardown. One more
// configuration, nat, is not a column: it builds two homes behind easy NATs
// and a public node and measures the NAT rows (time to a direct path,
// failover to the relay when UDP between the homes is cut, back to direct)
// in a table of its own (nat.go). Rounds are interleaved (raw, wg, glow, raw, wg, glow, ...), and
// every configuration is set up afresh in every round, so each round is an
// independent sample and no idle daemon of one configuration runs during
// another's measurement. Before the rounds, an idle phase (idle.go) sets up
// every daemon configuration of every round side by side and measures their
// idle CPU and RSS in one window once they have settled. Per instance the
// rounds then measure, in this order: idle RTT (ping every 10 ms), iperf3 TCP throughput with 1
// and then 4 streams with the CPU time the daemons, the iperf3 processes and
// the whole machine spent on it, RSS after the throughput runs, and RTT while
// a 1-stream iperf3 runs. The table shows the median over rounds; the raw
// per-round values follow it in BENCHMARKS.md. See bench/README.md for what
// each figure means.
//
// The reference wireguard-go is built from the module version in go.mod
// (`go build golang.zx2c4.com/wireguard` inside this module), run as
// `WG_PROCESS_FOREGROUND=1 wireguard -f NAME` and configured with wg(8).
//
// Why this shape. Benchmarks of a VPN lie easily: one-off runs, a
// reference built differently, or daemons left running in the background.
// Medians of interleaved fresh rounds in the same run, against a reference
// from the same dependency graph, make the ratios the trustworthy output;
// absolute numbers depend on the machine. Everything is driven through
// ip(8), wg(8), iperf3 and ping so that each step can be replayed by hand.
//
// Cleanup. Namespaces are named gb-<pid>-r<round>-{a,b}; each lab is
// closed by defer even on failure or SIGINT/SIGTERM, and a run first removes
// the namespaces, wireguard-go sockets and scratch directories of earlier
// runs whose process is gone. Every wait is bounded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	var (
		rounds    = flag.Int("rounds", 3, "interleaved rounds (at least 3 for a meaningful median)")
		duration  = flag.Duration("time", 5*time.Second, "duration of each iperf3 run")
		pings     = flag.Int("pings", 300, "pings per RTT measurement")
		pingEvery = flag.Duration("ping-interval", 10*time.Millisecond, "interval between pings")
		settle    = flag.Duration("idle-settle", 90*time.Second, "how long the idle phase's daemons run idle after set-up before idle CPU is measured (>= 90 s: glow's quiet pace starts a minute after the last change)")
		idle      = flag.Duration("idle", 60*time.Second, "how long idle daemon CPU is measured, all configurations in the same window (0: no idle phase)")
		idleOnly  = flag.Bool("idle-only", false, "run only the idle phase (idle daemon CPU and RSS in the steady state); prints the table, writes no file, runs no Go benchmarks")
		glowBin   = flag.String("glow", "", "prebuilt glow binary (default: build ./cmd/glow)")
		wgBin     = flag.String("wireguard", "", "prebuilt reference wireguard-go binary (default: build from go.mod's version)")
		out       = flag.String("out", "BENCHMARKS.md", "write the report here, relative to the module root ('' = do not write)")
		only      = flag.String("configs", "", "comma-separated configuration keys to run (raw,wg,glow,glowm,relay1,relay2,fwd1,fwd2,wgr,glowr,subnet,exit,nat; default all)")
		goBench   = flag.String("gobench", "BenchmarkThroughput|BenchmarkBindSend|BenchmarkBindReceive|BenchmarkRecordVerify|BenchmarkSharedThroughput|BenchmarkLocalName|BenchmarkServeUDP|BenchmarkForwardUDP|BenchmarkLatency|BenchmarkInbound", "also run these in-process Go benchmarks ('' = skip)")
		perfDir   = flag.String("perf", "", "record a perf profile of each daemon during an extra run in the last round, into this directory")
		verbose   = flag.Bool("v", false, "log every step")
		keep      = flag.Bool("keep", false, "keep the scratch directory (daemon logs, ping logs) instead of removing it")
	)
	flag.Parse()
	if *idleOnly && *idle <= 0 {
		fmt.Fprintln(os.Stderr, "bench: -idle-only needs -idle > 0")
		os.Exit(2)
	}
	if *rounds < 1 || *duration < time.Second || *pings < 10 {
		fmt.Fprintln(os.Stderr, "bench: -rounds must be >= 1, -time >= 1s, -pings >= 10")
		os.Exit(2)
	}
	o := options{duration: *duration, pings: *pings, pingEvery: *pingEvery, settle: *settle, idle: *idle, idleOnly: *idleOnly, perfDir: *perfDir}
	if *idleOnly {
		// A partial table must not overwrite BENCHMARKS.md.
		*out, *goBench, o.perfDir = "", "", ""
	}
	err := benchMain(*rounds, o, *glowBin, *wgBin, *out, *only, *goBench, *verbose, *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func benchMain(rounds int, o options, glowBin, wgBin, out, only, goBench string, verbose, keep bool) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (it creates network namespaces); run `sudo make bench`")
	}
	for _, tool := range []string{"ip", "iperf3", "ping", "ss", "wg"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: install iproute2, iperf3, iputils-ping, wireguard-tools", tool)
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
	vlogf := func(format string, args ...any) {
		if verbose {
			logf(format, args...)
		}
	}
	removeLeftovers(logf)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	work := filepath.Join(os.TempDir(), fmt.Sprintf("glow-bench-%d", os.Getpid()))
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	if keep {
		defer logf("kept %s", work)
	} else {
		defer os.RemoveAll(work)
	}

	bins, wgVersion, err := build(ctx, root, work, glowBin, wgBin, logf)
	if err != nil {
		return err
	}

	var cfgs []config
	for _, c := range configs() {
		if o.idleOnly && !c.daemon {
			continue // raw veth and the NAT rows have no idle daemon figure
		}
		if only == "" || contains(strings.Split(only, ","), c.key) {
			cfgs = append(cfgs, c)
		}
	}
	if len(cfgs) == 0 {
		return fmt.Errorf("-configs %q matches none of %s", only, strings.Join(configKeys(), ", "))
	}
	for _, c := range cfgs {
		if c.key != "nat" {
			continue
		}
		for _, tool := range []string{"iptables", "sysctl"} {
			if _, err := exec.LookPath(tool); err != nil {
				return fmt.Errorf("%s not found (needed by the NAT rows; or leave nat out of -configs)", tool)
			}
		}
	}

	loadStart := loadAverage()
	logf("load average at start: %s", loadStart)
	res := newResults(cfgs, rounds)
	start := time.Now()
	if o.idle > 0 {
		if err := measureIdle(ctx, work, rounds, cfgs, bins, o, res, logf, vlogf); err != nil {
			return err
		}
	}
	for r := 1; r <= rounds && !o.idleOnly; r++ {
		for _, c := range cfgs {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			oo := o
			if r != rounds {
				oo.perfDir = ""
			}
			t0 := time.Now()
			m, err := runOne(ctx, work, r, c, bins, oo, vlogf)
			if m != nil && err != nil {
				res.add(c.key, r, m) // what a NAT round measured before it failed
			}
			if err != nil {
				logf("round %d, %s: %v", r, c.title, err)
				res.errors = append(res.errors, fmt.Sprintf("round %d, %s: %v", r, c.title, err))
				continue
			}
			res.add(c.key, r, m)
			if c.run != nil {
				logf("round %d/%d %-14s %s  [%s]", r, rounds, c.title, natSummary(m), time.Since(t0).Round(time.Second))
				continue
			}
			logf("round %d/%d %-14s %5.2f Gbit/s (1 stream) %5.2f Gbit/s (4)  RTT p50 %.3f ms  [%s]",
				r, rounds, c.title, m["tput1"], m["tput4"], m["rtt50"], time.Since(t0).Round(time.Second))
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	var goLines []string
	if goBench != "" {
		logf("running go test -bench '%s' ./...", goBench)
		goLines, err = runGoBench(ctx, root, goBench)
		if err != nil {
			res.errors = append(res.errors, "go benchmarks: "+err.Error())
		}
	}

	env := describeEnv(ctx, root, wgVersion)
	env.rounds, env.opts, env.elapsed = rounds, o, time.Since(start)
	env.loadStart, env.loadEnd = loadStart, loadAverage()
	table := res.table()
	fmt.Println()
	fmt.Print(table)
	if len(goLines) > 0 {
		fmt.Println()
		fmt.Println(strings.Join(goLines, "\n"))
	}
	if out != "" {
		path := out
		if !filepath.IsAbs(path) {
			path = filepath.Join(root, path)
		}
		if err := os.WriteFile(path, []byte(report(env, res, table, goLines)), 0o644); err != nil {
			return err
		}
		logf("wrote %s", path)
	}
	if len(res.errors) > 0 {
		return fmt.Errorf("%d measurement(s) failed; see above", len(res.errors))
	}
	return nil
}

// runOne sets up one configuration, measures it and tears it down.
func runOne(ctx context.Context, work string, round int, c config, bins binaries, o options, logf func(string, ...any)) (map[string]float64, error) {
	l, err := newLab(ctx, work, round, c.key, logf)
	if err != nil {
		return nil, err
	}
	defer l.close()
	if c.run != nil {
		logf("round %d: %s", round, c.title)
		return c.run(l, bins, o)
	}
	logf("round %d: setting up %s", round, c.title)
	t0 := time.Now()
	inst, err := c.setup(l, bins)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	if err := waitPing(l, inst, 30*time.Second); err != nil {
		return nil, err
	}
	setup := time.Since(t0).Seconds()
	logf("round %d: %s up in %.2fs, measuring", round, c.title, setup)
	m, err := measureInstance(l, c, inst, o)
	if err != nil {
		return nil, err
	}
	m["setup"] = setup
	return m, nil
}

// build returns the glow and wireguard-go binaries to use, building the
// ones not given, and the reference's module version.
func build(ctx context.Context, root, work, glowBin, wgBin string, logf func(string, ...any)) (binaries, string, error) {
	var b binaries
	ver, err := run(ctx, time.Minute, "go", "list", "-C", root, "-m", "-f", "{{.Version}}", "golang.zx2c4.com/wireguard")
	if err != nil {
		return b, "", err
	}
	ver = strings.TrimSpace(ver)
	abs := func(p string) (string, error) {
		p, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		_, err = os.Stat(p)
		return p, err
	}
	if glowBin != "" {
		if b.glow, err = abs(glowBin); err != nil {
			return b, "", err
		}
	} else {
		b.glow = filepath.Join(work, "glow")
		logf("building glow")
		if _, err := run(ctx, 5*time.Minute, "go", "build", "-C", root, "-o", b.glow, "./cmd/glow"); err != nil {
			return b, "", err
		}
	}
	if wgBin != "" {
		if b.wireguard, err = abs(wgBin); err != nil {
			return b, "", err
		}
		ver += " (prebuilt " + b.wireguard + ")"
	} else {
		b.wireguard = filepath.Join(work, "wireguard")
		logf("building reference wireguard-go %s", ver)
		if _, err := run(ctx, 5*time.Minute, "go", "build", "-C", root, "-o", b.wireguard, "golang.zx2c4.com/wireguard"); err != nil {
			return b, "", err
		}
	}
	b.udpfwd = filepath.Join(work, "udpfwd")
	if _, err := run(ctx, 5*time.Minute, "go", "build", "-C", root, "-o", b.udpfwd, "./bench/udpfwd"); err != nil {
		return b, "", err
	}
	return b, ver, nil
}

// runGoBench runs the in-process Go benchmarks and returns the pkg and
// Benchmark lines.
func runGoBench(ctx context.Context, root, pattern string) ([]string, error) {
	out, err := run(ctx, 6*time.Minute, "go", "test", "-C", root, "-run", "^$", "-bench", pattern, "-benchmem", "./...")
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Benchmark") {
			lines = append(lines, line)
		} else if strings.HasPrefix(line, "pkg: ") {
			lines = append(lines, "", line)
		}
	}
	if err != nil {
		return lines, err
	}
	lines = append(lines, dnsTargets(lines)...)
	// Scale figures from the in-process scale tests (METRIC lines): heap
	// per peer, and the simulation of N whole nodes on a synctest clock
	// (TestScaleSim: cold convergence, propagation, control bytes per node
	// per second, in simulated time).
	// 1,000 whole nodes in one process are opt-in
	// (GLOW_SCALE_SIM_SIZES=100,300,1000): they hold a million peers (about
	// 10 GiB) and take far more CPU time than a bench run has on 2 cores
	// (overlay/doc.go, Scale).
	sizes := os.Getenv("GLOW_SCALE_SIM_SIZES")
	if sizes == "" {
		sizes = "100,300"
	}
	cmd := exec.CommandContext(ctx, "go", "test", "-C", root, "-count=1", "-run", "TestScaleHeapPerPeer|TestScaleSim", "-v", "-timeout", "30m", "./overlay/")
	// GOGC=60: 1,000 nodes peak near 19 GB of this machine's 23 at 60, and
	// past it at Go's default. The figures are simulated time and bytes,
	// which the collector's pace does not change.
	cmd.Env = append(os.Environ(), "GLOW_SCALE=1", "GLOW_SCALE_SIM_SIZES="+sizes, "GOGC=60")
	sout, serr := cmd.CombinedOutput()
	lines = append(lines, "", "scale (GLOW_SCALE=1 go test -run 'TestScaleHeapPerPeer|TestScaleSim' ./overlay/, simulated sizes "+sizes+"):")
	metrics := map[string]float64{}
	for _, line := range strings.Split(string(sout), "\n") {
		if i := strings.Index(line, "METRIC "); i >= 0 {
			lines = append(lines, line[i:])
			if f := strings.Fields(line[i:]); len(f) == 3 {
				if v, err := strconv.ParseFloat(f[2], 64); err == nil {
					metrics[f[1]] = v
				}
			}
		}
	}
	lines = append(lines, "", "scale targets (simulated seconds; bytes are UDP payload each node sends):")
	for _, t := range []struct {
		key, what string
		max       float64 // 0: reported, no target
	}{
		{"heap_per_peer_bytes_steady", "live heap per known peer (bytes), 600 peers", 16 << 10},
		{"scale_sim_n1000_propagation_s", "a record change reaches every node of 1,000 (s, median of 3)", 2},
		{"scale_sim_n1000_converged_s", "cold convergence of 1,000 nodes (s)", 60},
		{"scale_sim_n300_propagation_s", "a record change reaches every node of 300 (s, median of 3)", 2},
		{"scale_sim_n300_propagation_churn_s", "the same after a minute of churn", 2},
		{"scale_sim_n300_converged_s", "cold convergence of 300 nodes (s)", 60},
		{"scale_sim_n100_propagation_s", "a record change reaches every node of 100 (s, median of 3)", 2},
		{"scale_sim_n100_converged_s", "cold convergence of 100 nodes (s)", 60},
		{"scale_sim_n100_idle_bytes_node_s", "control bytes per node per second, 100 nodes idle", 0},
		{"scale_sim_n300_idle_bytes_node_s", "control bytes per node per second, 300 nodes idle", 0},
		{"scale_sim_n1000_idle_bytes_node_s", "control bytes per node per second, 1,000 nodes idle", 0},
		{"scale_sim_n100_churn_bytes_node_s", "control bytes per node per second, 100 nodes under churn", 0},
		{"scale_sim_n300_churn_bytes_node_s", "control bytes per node per second, 300 nodes under churn", 0},
		{"scale_sim_n1000_churn_bytes_node_s", "control bytes per node per second, 1,000 nodes under churn", 0},
		{"scale_sim_n300_heap_node_bytes", "live heap per simulated node (bytes), 300 nodes converged", 0},
		{"scale_sim_n1000_heap_node_bytes", "live heap per simulated node (bytes), 1,000 nodes converged", 0},
	} {
		v, ok := metrics[t.key]
		switch {
		case !ok && t.max == 0:
			lines = append(lines, fmt.Sprintf("- %s: not measured", t.what))
		case !ok:
			lines = append(lines, fmt.Sprintf("- %s: not measured (target <= %g)", t.what, t.max))
		case t.max == 0:
			lines = append(lines, fmt.Sprintf("- %s: %g", t.what, v))
		default:
			lines = append(lines, fmt.Sprintf("- %s: %g (target <= %g)%s", t.what, v, t.max, verdict(true, v <= t.max)))
		}
	}
	return lines, serr
}

// dnsTargets reads the DNS benchmarks' lines (glow names against forwarded
// ones, over loopback UDP) and checks the targets.
func dnsTargets(lines []string) []string {
	metric := func(bench, unit string) (float64, bool) {
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) == 0 || !strings.HasPrefix(f[0], bench+"-") && f[0] != bench {
				continue
			}
			for i := 1; i < len(f); i++ {
				if f[i] == unit {
					v, err := strconv.ParseFloat(f[i-1], 64)
					return v, err == nil
				}
			}
		}
		return 0, false
	}
	out := []string{"", "DNS (glow names against names forwarded to an upstream on loopback):"}
	qps, ok1 := metric("BenchmarkServeUDP", "qps")
	fqps, ok2 := metric("BenchmarkForwardUDP", "qps")
	p50, ok3 := metric("BenchmarkLatencyLocal", "p50-µs")
	fp50, ok4 := metric("BenchmarkLatencyForward", "p50-µs")
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return append(out, "- not measured")
	}
	return append(out,
		fmt.Sprintf("- .glow lookups per second, 8 clients: %.0f (forwarded: %.0f) (target >= 20000)%s", qps, fqps, verdict(true, qps >= 20000)),
		fmt.Sprintf("- .glow lookup p50: %.0f µs (forwarded: %.0f µs, %.2fx) (target <= 1000 µs)%s", p50, fp50, p50/fp50, verdict(true, p50 <= 1000)))
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module glow\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run it inside the glow module (no go.mod with `module glow` above the current directory)")
		}
		dir = parent
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.TrimSpace(x) == s {
			return true
		}
	}
	return false
}
