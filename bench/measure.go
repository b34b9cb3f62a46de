package main

// Measurements of one instance: iperf3 throughput, daemon CPU from
// /proc/PID/stat, machine CPU from /proc/stat, RTT from ping, RSS from
// /proc/PID/status. Each returns plain numbers; measureInstance puts them
// under the metric keys that the table's rows name.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, 100 on every Linux the tool targets.
const clockTicks = 100

type options struct {
	duration  time.Duration // each iperf3 run
	pings     int           // pings per RTT measurement
	pingEvery time.Duration
	settle    time.Duration // how long the idle phase's daemons run idle before idle CPU is measured
	idle      time.Duration // how long idle CPU is measured (0: no idle phase)
	idleOnly  bool          // run the idle phase only
	perfDir   string        // when set, record a perf profile of the daemons
}

// measureInstance runs the whole sequence on one instance (idle CPU and
// RSS are the idle phase's, idle.go). The order matters: RSS after the
// throughput runs.
func measureInstance(l *lab, cfg config, inst *instance, o options) (map[string]float64, error) {
	m := map[string]float64{}
	if _, err := l.start(inst.server, "iperf3-server.log", nil, "iperf3", "-s", "-p", "5201"); err != nil {
		return nil, err
	}
	err := waitFor(l.ctx, 5*time.Second, 50*time.Millisecond, "iperf3 server listening", func() (bool, error) {
		out, err := l.exec(inst.server, "ss", "-Hltn", "sport = :5201")
		return err == nil && strings.TrimSpace(out) != "", err
	})
	if err != nil {
		return nil, err
	}

	rtts, _, err := ping(l, inst, o.pings, o.pingEvery)
	if err != nil {
		return nil, err
	}
	m["rtt50"], m["rtt99"] = percentile(rtts, 50), percentile(rtts, 99)

	for _, streams := range []int{1, 4} {
		cpu0 := daemonCPU(inst.daemons)
		rcpu0 := daemonCPU(inst.relays)
		cs0 := contextSwitches(inst.daemons)
		mach0 := machineCPU()
		r, err := iperf(l, inst, streams, o.duration)
		if err != nil {
			return nil, err
		}
		cpu := daemonCPU(inst.daemons) - cpu0
		cs := contextSwitches(inst.daemons) - cs0
		mach := machineCPU() - mach0
		gb := float64(r.bytes) / 1e9
		suffix := strconv.Itoa(streams)
		m["tput"+suffix] = r.bitsPerSecond / 1e9
		if cfg.daemon {
			m["cpu"+suffix] = cpu / gb
			if len(inst.relays) > 0 {
				m["rcpu"+suffix] = (daemonCPU(inst.relays) - rcpu0) / gb
			}
			m["csw"+suffix] = cs / gb / 1000
		}
		m["ipcpu"+suffix] = r.iperfCPU / gb
		m["mach"+suffix] = mach / gb
	}
	if cfg.daemon {
		m["rss_now"] = maxRSS(inst.daemons, "VmRSS")
		// What stays once the burst is over: a daemon that hands memory
		// back needs a moment (glow frees after 1 s without traffic).
		time.Sleep(3 * time.Second)
		m["rss_after"] = maxRSS(inst.daemons, "VmRSS")
	}

	// RTT under load: a 1-stream iperf3 runs while ping measures.
	type result struct {
		r   iperfResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := iperf(l, inst, 1, o.duration)
		done <- result{r, err}
	}()
	time.Sleep(time.Second) // past TCP slow start
	lrtts, lost, perr := ping(l, inst, o.pings, o.pingEvery)
	res := <-done
	if perr != nil {
		return nil, perr
	}
	if res.err != nil {
		return nil, res.err
	}
	m["lrtt50"], m["lrtt99"] = percentile(lrtts, 50), percentile(lrtts, 99)
	m["lloss"] = 100 * float64(lost) / float64(o.pings)
	if cfg.daemon {
		m["rss_peak"] = maxRSS(inst.daemons, "VmHWM")
	}

	if o.perfDir != "" && cfg.daemon {
		if err := perfProfile(l, cfg, inst, o); err != nil {
			l.log("perf profile of %s: %v", cfg.title, err)
		}
	}
	return m, nil
}

type iperfResult struct {
	bytes         int64
	bitsPerSecond float64
	iperfCPU      float64 // CPU seconds of both iperf3 processes
}

// iperf runs an iperf3 TCP test from client to target with JSON output.
func iperf(l *lab, inst *instance, streams int, d time.Duration) (iperfResult, error) {
	secs := strconv.Itoa(int(d.Round(time.Second) / time.Second))
	out, err := run(l.ctx, d+30*time.Second, "ip", "netns", "exec", inst.client,
		"iperf3", "-c", inst.target, "-p", "5201", "-t", secs, "-P", strconv.Itoa(streams),
		"-J", "--connect-timeout", "5000")
	var j struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				Seconds       float64 `json:"seconds"`
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				HostTotal   float64 `json:"host_total"`
				RemoteTotal float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal([]byte(out), &j); jerr != nil {
		if err != nil {
			return iperfResult{}, err
		}
		return iperfResult{}, fmt.Errorf("iperf3 output: %v", jerr)
	}
	if j.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3 -c %s -P %d: %s", inst.target, streams, j.Error)
	}
	if err != nil {
		return iperfResult{}, err
	}
	s := j.End.SumReceived
	if s.Bytes == 0 {
		return iperfResult{}, fmt.Errorf("iperf3 -c %s -P %d: nothing received", inst.target, streams)
	}
	return iperfResult{
		bytes:         s.Bytes,
		bitsPerSecond: s.BitsPerSecond,
		iperfCPU:      (j.End.CPU.HostTotal + j.End.CPU.RemoteTotal) / 100 * s.Seconds,
	}, nil
}

// ping sends count ICMP echoes every interval and returns the RTTs in ms
// and how many were lost.
func ping(l *lab, inst *instance, count int, every time.Duration) ([]float64, int, error) {
	limit := time.Duration(count)*every + 15*time.Second
	out, err := run(l.ctx, limit, "ip", "netns", "exec", inst.client,
		"ping", "-n", "-c", strconv.Itoa(count), "-i", fmt.Sprintf("%.3f", every.Seconds()), "-W", "1", inst.target)
	var rtts []float64
	for _, line := range strings.Split(out, "\n") {
		i := strings.Index(line, "time=")
		if i < 0 {
			continue
		}
		f := strings.Fields(line[i+5:])
		if len(f) == 0 {
			continue
		}
		if v, perr := strconv.ParseFloat(f[0], 64); perr == nil {
			rtts = append(rtts, v)
		}
	}
	if len(rtts) == 0 {
		if err == nil {
			err = fmt.Errorf("no replies")
		}
		return nil, 0, fmt.Errorf("ping %s: %w", inst.target, err)
	}
	return rtts, count - len(rtts), nil
}

// waitPing waits until one ping to the target is answered.
func waitPing(l *lab, inst *instance, limit time.Duration) error {
	return waitFor(l.ctx, limit, 100*time.Millisecond, "first ping to "+inst.target, func() (bool, error) {
		_, err := run(l.ctx, 5*time.Second, "ip", "netns", "exec", inst.client, "ping", "-n", "-c", "1", "-W", "1", inst.target)
		return err == nil, nil
	})
}

func percentile(v []float64, p float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(float64(len(s)-1)*p/100 + 0.5)
	return s[i]
}

// daemonCPU is the sum of utime+stime of the pids, in seconds.
func daemonCPU(pids []int) float64 {
	var total float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		// Fields after the command name, which is in parentheses and may
		// hold spaces: state is field 3, utime 14, stime 15.
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		total += (ut + st) / clockTicks
	}
	return total
}

// onCPU is the time the pids' threads spent on a CPU, in seconds, from
// /proc/PID/task/*/schedstat (nanoseconds, unlike stat's 10 ms ticks).
func onCPU(pids []int) float64 {
	var ns float64
	for _, pid := range pids {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			if f := strings.Fields(string(b)); len(f) > 0 {
				x, _ := strconv.ParseFloat(f[0], 64)
				ns += x
			}
		}
	}
	return ns / 1e9
}

// contextSwitches is the sum of voluntary and involuntary context switches
// of every thread of the pids (threads that exited are not counted; Go
// runtimes rarely end threads).
func contextSwitches(pids []int) float64 {
	var total float64
	for _, pid := range pids {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				k, v, ok := strings.Cut(line, ":")
				if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
					x, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
					total += x
				}
			}
		}
	}
	return total
}

// machineCPU is the busy time of all CPUs (everything but idle and
// iowait) from /proc/stat, in seconds.
func machineCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy float64
	for i, v := range f[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest times are inside user
			continue
		}
		busy += x
	}
	return busy / clockTicks
}

// maxRSS is the largest of a /proc/PID/status field (VmRSS, VmHWM) over
// the pids, in MiB.
func maxRSS(pids []int, field string) float64 {
	var best float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					kb, _ := strconv.ParseFloat(f[0], 64)
					best = max(best, kb/1024)
				}
			}
		}
	}
	return best
}

// perfProfile records each daemon with perf during an extra 4-stream run
// and writes the report's top lines, one section per daemon (in the
// instance's order: client, relays, server), to perfDir/<cfg>.txt. It runs
// after the measured runs, so its overhead does not touch the figures.
func perfProfile(l *lab, cfg config, inst *instance, o options) error {
	if err := os.MkdirAll(o.perfDir, 0o755); err != nil {
		return err
	}
	secs := int(o.duration/time.Second) - 1
	ctx, cancel := context.WithTimeout(l.ctx, o.duration+30*time.Second)
	defer cancel()
	done := make(chan error, len(inst.daemons))
	var datas []string
	for i, pid := range inst.daemons {
		data := fmt.Sprintf("%s/%s-%d.perf.data", o.perfDir, cfg.key, i)
		datas = append(datas, data)
		go func() {
			_, err := run(ctx, o.duration+30*time.Second, "perf", "record", "-q", "-F", "999", "-g",
				"-o", data, "-p", strconv.Itoa(pid), "--", "sleep", strconv.Itoa(max(secs, 1)))
			done <- err
		}()
	}
	_, ierr := iperf(l, inst, 4, o.duration)
	for range inst.daemons {
		if err := <-done; err != nil {
			return err
		}
	}
	if ierr != nil {
		return ierr
	}
	var out strings.Builder
	for i, data := range datas {
		rep, err := run(l.ctx, 120*time.Second, "perf", "report", "-i", data, "--stdio", "--no-children",
			"--percent-limit", "0.7", "-g", "none", "--sort", "symbol")
		if err != nil {
			return err
		}
		fmt.Fprintf(&out, "## daemon %d of %d (pid %d; data %s)\n%s\n", i+1, len(datas), inst.daemons[i], data, rep)
	}
	file := fmt.Sprintf("%s/%s.txt", o.perfDir, cfg.key)
	l.log("perf profile of %s: %s", cfg.title, file)
	return os.WriteFile(file, []byte(out.String()), 0o644)
}

// runStdin is run with a string on stdin.
func runStdin(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %v", name, err)
	}
	return string(out), nil
}
