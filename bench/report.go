package main

// The table: one row per figure, one column per configuration, then the
// ratio glow / wireguard-go and the target for it.

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"
)

// row is one figure of the table.
type row struct {
	key, label string
	prec       int
	ratio      bool    // show glow / wireguard-go
	maxRatio   float64 // target on the ratio: <= maxRatio (0: none)
	minRatio   float64 // target on the ratio: >= minRatio (0: none)
	maxGlow    float64 // absolute target on glow's figure (0: none)
	unit       string  // of the absolute target
	// relayMin: targets on glow through 1 and 2 relays / glow direct,
	// >= (0: none). Rows with ratio also show those ratios.
	relayMin [2]float64
	relayMax [2]float64 // likewise, <= (0: none)
	// relayOf: the relay columns divide by glow direct's figure of this
	// key instead of the row's own (a figure glow direct does not have).
	relayOf string
}

var rows = []row{
	{key: "tput1", label: "TCP 1 stream (Gbit/s)", prec: 2, ratio: true, minRatio: 0.90, relayMin: [2]float64{0.80, 0.65}},
	{key: "tput4", label: "TCP 4 streams (Gbit/s)", prec: 2, ratio: true, minRatio: 0.90, relayMin: [2]float64{0.80, 0.65}},
	{key: "cpu1", label: "daemon CPU-s/GB, 1 stream", prec: 2, ratio: true, maxRatio: 1.15, relayMax: [2]float64{1.3, 0}},
	{key: "cpu4", label: "daemon CPU-s/GB, 4 streams", prec: 2, ratio: true, maxRatio: 1.15, relayMax: [2]float64{1.3, 0}},
	{key: "rcpu1", label: "relay nodes' CPU-s/GB, 1 stream", prec: 2, ratio: true, relayOf: "cpu1"},
	{key: "rcpu4", label: "relay nodes' CPU-s/GB, 4 streams", prec: 2, ratio: true, relayOf: "cpu4"},
	{key: "csw1", label: "daemon ctx switches/GB (k), 1 stream", prec: 0, ratio: true, maxRatio: 1.2},
	{key: "csw4", label: "daemon ctx switches/GB (k), 4 streams", prec: 0, ratio: true, maxRatio: 1.2},
	{key: "ipcpu1", label: "iperf3 CPU-s/GB, 1 stream", prec: 2, ratio: true},
	{key: "mach1", label: "machine CPU-s/GB, 1 stream", prec: 2, ratio: true},
	{key: "mach4", label: "machine CPU-s/GB, 4 streams", prec: 2, ratio: true},
	{key: "rtt50", label: "RTT p50 idle (ms)", prec: 3, ratio: true},
	{key: "rtt99", label: "RTT p99 idle (ms)", prec: 3, ratio: true},
	{key: "addrtt50", label: "added RTT p50 idle (ms)", prec: 3, ratio: true, maxRatio: 1.2},
	{key: "lrtt50", label: "RTT p50 under load (ms)", prec: 2, ratio: true},
	{key: "lrtt99", label: "RTT p99 under load (ms)", prec: 2, ratio: true},
	{key: "lloss", label: "ping loss under load (%)", prec: 1},
	{key: "idlecpu", label: "idle daemon CPU, 1 peer (ms/s)", prec: 2, ratio: true, maxRatio: 2},
	{key: "rss_idle", label: "idle RSS, 1 peer (MiB)", prec: 1, ratio: true, maxGlow: 25, unit: "MB"},
	{key: "rss_anon", label: "idle RSS, anonymous (MiB)", prec: 1, ratio: true},
	{key: "rss_now", label: "RSS right after throughput (MiB)", prec: 1, ratio: true, maxGlow: 64, unit: "MiB"},
	{key: "rss_after", label: "RSS 3 s after throughput (MiB)", prec: 1, ratio: true},
	{key: "rss_peak", label: "peak RSS, VmHWM (MiB)", prec: 1, ratio: true, maxGlow: 64, unit: "MiB"},
	{key: "setup", label: "setup to first ping (s)", prec: 2},
}

// natRow is one figure of the NAT table (configuration nat; every figure
// is better lower). The target applies to the median over rounds, or to
// the worst round when onWorst.
type natRow struct {
	key, label string
	prec       int
	max        float64 // target: <= max (-1: none)
	onWorst    bool
}

var natRows = []natRow{
	{key: "nat_first", label: "first packet -> first reply, any path (s)", prec: 2, max: -1},
	{key: "nat_direct", label: "first packet -> first reply over direct path (s)", prec: 2, max: 2},
	{key: "nat_failstatus", label: "UDP cut -> status shows relay via pub (s)", prec: 2, max: -1},
	{key: "nat_pinggap", label: "UDP cut: longest gap between ping replies (s)", prec: 2, max: -1},
	{key: "nat_stall", label: "UDP cut, second path proven: longest TCP stall (s)", prec: 2, max: 1},
	{key: "nat_coldstall", label: "UDP cut, no second path proven: longest TCP stall (s)", prec: 2, max: 3},
	{key: "nat_back", label: "cut lifted -> status shows direct again (s)", prec: 2, max: 15},
	{key: "nat_backstall", label: "cut lifted: longest TCP stall (s)", prec: 2, max: -1},
	{key: "nat_lost", label: "TCP bytes lost across both (sha256 checked)", prec: 0, max: 0, onWorst: true},
	{key: "nat_setup", label: "setup: 3 nodes up, a knows b (s)", prec: 2, max: -1},
}

// results holds the per-round values: cfg key -> metric -> round -> value.
type results struct {
	cfgs   []config
	rounds int
	v      map[string]map[string]map[int]float64
	errors []string
}

func newResults(cfgs []config, rounds int) *results {
	r := &results{cfgs: cfgs, rounds: rounds, v: map[string]map[string]map[int]float64{}}
	for _, c := range cfgs {
		r.v[c.key] = map[string]map[int]float64{}
	}
	return r
}

func (r *results) add(cfg string, round int, m map[string]float64) {
	for k, x := range m {
		if r.v[cfg][k] == nil {
			r.v[cfg][k] = map[int]float64{}
		}
		r.v[cfg][k][round] = x
	}
}

// values returns a metric's per-round values, deriving added RTT (a
// configuration's RTT p50 minus raw veth's in the same round).
func (r *results) values(cfg, key string) map[int]float64 {
	if key != "addrtt50" {
		return r.v[cfg][key]
	}
	if cfg == "raw" {
		return nil
	}
	out := map[int]float64{}
	for round, x := range r.v[cfg]["rtt50"] {
		if base, ok := r.v["raw"]["rtt50"][round]; ok {
			out[round] = x - base
		}
	}
	return out
}

// worst is the largest per-round value.
func (r *results) worst(cfg, key string) (float64, bool) {
	vals := r.values(cfg, key)
	w, ok := 0.0, false
	for _, x := range vals {
		if !ok || x > w {
			w, ok = x, true
		}
	}
	return w, ok
}

// has says whether configuration key ran.
func (r *results) has(key string) bool {
	_, ok := r.v[key]
	return ok
}

// columns are the configurations of the main table (not the NAT one).
func (r *results) columns() []config {
	var out []config
	for _, c := range r.cfgs {
		if c.run == nil {
			out = append(out, c)
		}
	}
	return out
}

func (r *results) median(cfg, key string) (float64, bool) {
	vals := r.values(cfg, key)
	if len(vals) == 0 {
		return 0, false
	}
	s := make([]float64, 0, len(vals))
	for _, x := range vals {
		s = append(s, x)
	}
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2], true
	}
	return (s[n/2-1] + s[n/2]) / 2, true
}

// table renders the medians as aligned Markdown tables: the main one (one
// column per configuration, then the ratios and their targets) and, when
// the nat configuration ran, the NAT table.
func (r *results) table() string {
	var b strings.Builder
	if cols := r.columns(); len(cols) > 0 {
		b.WriteString(r.mainTable(cols))
	}
	if r.has("nat") {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		b.WriteString(r.natTable())
	}
	return b.String()
}

func (r *results) mainTable(cols []config) string {
	header := []string{"figure (median of " + fmt.Sprint(r.rounds) + ")"}
	for _, c := range cols {
		header = append(header, c.title)
	}
	withRatio := r.has("wg") && r.has("glow")
	if withRatio {
		header = append(header, "glow / wg-go", "target")
	}
	// Glow through relays, a subnet router and an exit node, each divided
	// by glow direct of the same run; then wireguard-go through the
	// reference relay (bench/udpfwd) divided by wireguard-go direct: what
	// any userspace relay costs here; and glow against wireguard-go through
	// a kernel router (see bench/README.md).
	relays := []struct{ key, title, base string }{{"relay1", "1 relay / direct", "glow"}, {"relay2", "2 relays / direct", "glow"},
		{"subnet", "subnet / direct", "glow"}, {"exit", "exit / direct", "glow"},
		{"fwd1", "wg-go 1 fwd / wg-go", "wg"}, {"fwd2", "wg-go 2 fwd / wg-go", "wg"},
		{"glowr", "glow routed / wg-go routed", "wgr"}}
	var relayCols []int // indexes into relays
	for i, rl := range relays {
		if r.has(rl.key) && r.has(rl.base) {
			relayCols = append(relayCols, i)
			header = append(header, rl.title)
		}
	}
	relayTargets := r.has("glow") && (r.has("relay1") || r.has("relay2"))
	if relayTargets {
		header = append(header, "relay targets")
	}
	var cells [][]string
	for _, rw := range rows {
		line := []string{rw.label}
		for _, c := range cols {
			if x, ok := r.median(c.key, rw.key); ok {
				line = append(line, fmt.Sprintf("%.*f", rw.prec, x))
			} else {
				line = append(line, "-")
			}
		}
		if withRatio {
			ratio, target := "", ""
			g, okG := r.median("glow", rw.key)
			w, okW := r.median("wg", rw.key)
			var q float64
			if rw.ratio && okG && okW && w > 0 {
				q = g / w
				ratio = fmt.Sprintf("%.2f", q)
			}
			switch {
			case rw.minRatio > 0:
				target = fmt.Sprintf(">= %.2f", rw.minRatio) + verdict(ratio != "", q >= rw.minRatio)
			case rw.maxRatio > 0:
				target = fmt.Sprintf("<= %.2f", rw.maxRatio) + verdict(ratio != "", q <= rw.maxRatio)
			case rw.maxGlow > 0:
				target = fmt.Sprintf("glow <= %g %s", rw.maxGlow, rw.unit) + verdict(okG, g <= rw.maxGlow)
			}
			line = append(line, ratio, target)
		}
		var targets []string
		for _, i := range relayCols {
			ratio := ""
			gk := rw.key
			if rw.relayOf != "" {
				gk = rw.relayOf
			}
			g, okG := r.median(relays[i].base, gk)
			x, okX := r.median(relays[i].key, rw.key)
			var q float64
			if rw.ratio && okG && okX && g > 0 {
				q = x / g
				ratio = fmt.Sprintf("%.2f", q)
			}
			line = append(line, ratio)
			if i < len(rw.relayMin) && rw.relayMin[i] > 0 {
				lo := rw.relayMin[i]
				targets = append(targets, fmt.Sprintf("%d: >= %.2f", i+1, lo)+verdict(ratio != "", q >= lo))
			}
			if i < len(rw.relayMax) && rw.relayMax[i] > 0 {
				hi := rw.relayMax[i]
				targets = append(targets, fmt.Sprintf("%d: <= %.2f", i+1, hi)+verdict(ratio != "", q <= hi))
			}
		}
		if relayTargets {
			line = append(line, strings.Join(targets, ", "))
		}
		cells = append(cells, line)
	}
	return markdownTable(header, cells)
}

// natTable is the NAT rows: median and worst round, and the target.
func (r *results) natTable() string {
	header := []string{"glow, two homes behind easy NATs + pub (" + fmt.Sprint(r.rounds) + " rounds)", "median", "worst", "target"}
	var cells [][]string
	for _, rw := range natRows {
		line := []string{rw.label}
		med, okM := r.median("nat", rw.key)
		worst, okW := r.worst("nat", rw.key)
		for _, v := range []struct {
			x  float64
			ok bool
		}{{med, okM}, {worst, okW}} {
			if v.ok {
				line = append(line, fmt.Sprintf("%.*f", rw.prec, v.x))
			} else {
				line = append(line, "-")
			}
		}
		target := ""
		if rw.max >= 0 {
			x, ok, on := med, okM, "median"
			if rw.onWorst {
				x, ok, on = worst, okW, "worst"
			}
			op := "<="
			if rw.max == 0 {
				op = "="
			}
			target = fmt.Sprintf("%s %s %g", on, op, rw.max) + verdict(ok, x <= rw.max)
		}
		cells = append(cells, append(line, target))
	}
	return markdownTable(header, cells)
}

func verdict(known, ok bool) string {
	switch {
	case !known:
		return ""
	case ok:
		return " ok"
	default:
		return " MISSED"
	}
}

func markdownTable(header []string, cells [][]string) string {
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = len(h)
	}
	for _, line := range cells {
		for i, c := range line {
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	write := func(line []string) {
		b.WriteString("|")
		for i, c := range line {
			if i == 0 {
				fmt.Fprintf(&b, " %-*s |", width[i], c)
			} else {
				fmt.Fprintf(&b, " %*s |", width[i], c)
			}
		}
		b.WriteString("\n")
	}
	write(header)
	b.WriteString("|")
	for i, w := range width {
		if i == 0 {
			b.WriteString(" " + strings.Repeat("-", w) + " |")
		} else {
			b.WriteString(" " + strings.Repeat("-", w-1) + ": |")
		}
	}
	b.WriteString("\n")
	for _, line := range cells {
		write(line)
	}
	return b.String()
}

type environment struct {
	date, kernel, cpu, goVersion, glowRev, wgVersion string
	loadStart, loadEnd                               string // /proc/loadavg
	cpus                                             int
	rounds                                           int
	opts                                             options
	elapsed                                          time.Duration
}

func describeEnv(ctx context.Context, root, wgVersion string) environment {
	e := environment{
		date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		goVersion: runtime.Version(),
		wgVersion: wgVersion,
		cpus:      runtime.NumCPU(),
		cpu:       "unknown",
	}
	if out, err := run(ctx, 5*time.Second, "uname", "-r"); err == nil {
		e.kernel = strings.TrimSpace(out)
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := run(ctx, 10*time.Second, "go", "version"); err == nil {
		e.goVersion = strings.TrimPrefix(strings.TrimSpace(out), "go version ")
	}
	if out, err := run(ctx, 10*time.Second, "git", "-C", root, "describe", "--always", "--dirty"); err == nil {
		e.glowRev = strings.TrimSpace(out)
	}
	return e
}

// loadAverage is the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// report is the content of BENCHMARKS.md.
// roundCells is one line of the per-round table: label, configuration, then
// each round's value ("-" when missing).
func (r *results) roundCells(label, config string, vals map[int]float64, prec int) []string {
	line := []string{label, config}
	for i := 1; i <= r.rounds; i++ {
		if x, ok := vals[i]; ok && !math.IsNaN(x) {
			line = append(line, fmt.Sprintf("%.*f", prec, x))
		} else {
			line = append(line, "-")
		}
	}
	return line
}

func report(e environment, r *results, table string, goLines []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Glow benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (the tool in bench/; bench/README.md says what each figure means). Absolute numbers depend on the machine; compare the ratios, which come from the same run.\n\n")
	fmt.Fprintf(&b, "- date: %s\n", e.date)
	fmt.Fprintf(&b, "- kernel: %s\n", e.kernel)
	fmt.Fprintf(&b, "- CPU: %s, %d CPUs\n", e.cpu, e.cpus)
	fmt.Fprintf(&b, "- Go: %s; glow: %s; reference: golang.zx2c4.com/wireguard %s\n", e.goVersion, e.glowRev, e.wgVersion)
	fmt.Fprintf(&b, "- load average (1, 5, 15 min) at start: %s; at end: %s (other work on the machine makes the absolute figures noisy)\n", e.loadStart, e.loadEnd)
	fmt.Fprintf(&b, "- %d interleaved rounds, each configuration set up afresh per round; iperf3 %s per run; %d pings every %s; took %s\n",
		e.rounds, e.opts.duration, e.opts.pings, e.opts.pingEvery, e.elapsed.Round(time.Second))
	if e.opts.idle > 0 {
		fmt.Fprintf(&b, "- idle rows (steady state): every daemon configuration of every round set up side by side before the rounds, idle for %s, then measured together over %s\n", e.opts.settle, e.opts.idle)
	}
	b.WriteString("\n")
	b.WriteString(table)
	if len(r.errors) > 0 {
		b.WriteString("\nFailures (medians above leave these rounds out):\n\n")
		for _, s := range r.errors {
			fmt.Fprintf(&b, "- %s\n", s)
		}
	}
	b.WriteString("\n## Per-round values\n\n")
	header := []string{"figure", "configuration"}
	for i := 1; i <= r.rounds; i++ {
		header = append(header, fmt.Sprintf("round %d", i))
	}
	var cells [][]string
	for _, rw := range rows {
		for _, c := range r.columns() {
			vals := r.values(c.key, rw.key)
			if len(vals) == 0 {
				continue
			}
			cells = append(cells, r.roundCells(rw.label, c.title, vals, rw.prec))
		}
	}
	if r.has("nat") {
		for _, rw := range natRows {
			vals := r.values("nat", rw.key)
			if len(vals) == 0 {
				continue
			}
			cells = append(cells, r.roundCells(rw.label, "glow easy NATs", vals, rw.prec))
		}
	}
	b.WriteString(markdownTable(header, cells))
	if len(goLines) > 0 {
		b.WriteString("\n## In-process Go benchmarks\n\n```\n")
		b.WriteString(strings.TrimLeft(strings.Join(goLines, "\n"), "\n"))
		b.WriteString("\n```\n")
	}
	return b.String()
}
