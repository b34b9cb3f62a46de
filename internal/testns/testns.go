// Package testns makes and removes the network namespaces of glow's
// root-only tests and benchmarks, and removes those a dead run left behind.
//
// Every namespace is named family + pid + "-" + more, where family is the
// caller's prefix ("glowtun-", "ge-", "gb-") and pid the creating process.
// A test binary killed by -timeout, or a benchmark killed by a signal, runs
// no cleanup; the next run of the same family finds its namespaces by
// name, sees their owner is gone and removes them, killing whatever still
// runs inside. Namespaces of a live run (another package's tests in
// parallel) are left alone.
package testns

import (
	"context"
	"errors"
	"fmt"
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
)

// commandTimeout bounds each ip(8) command.
const commandTimeout = 20 * time.Second

var (
	seq     atomic.Int64
	sweptMu sync.Mutex
	swept   = map[string]bool{}
)

// Prefix is the start of every namespace name this process makes in family.
func Prefix(family string) string {
	return family + strconv.Itoa(os.Getpid()) + "-"
}

// New makes a namespace of family with lo up and returns its name. It is
// removed (processes inside killed) when t ends, even if t fails. The first
// call for a family in this process first removes that family's leftovers.
// New skips t when not root or when ip(8) is missing.
func New(t testing.TB, family string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING: a network namespace needs root (run as root, e.g. `sudo make test`)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("SKIPPING: ip(8) from iproute2 not found")
	}
	SweepOnce(family, t.Logf)
	ns := Prefix(family) + strconv.FormatInt(seq.Add(1), 10)
	if err := ip("netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Remove(ns); err != nil {
			t.Errorf("removing namespace: %v", err)
		}
	})
	if err := ip("-n", ns, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return ns
}

// SweepOnce calls RemoveLeftovers(family) the first time it is called for
// family in this process and logs what it did with logf.
func SweepOnce(family string, logf func(string, ...any)) {
	sweptMu.Lock()
	defer sweptMu.Unlock()
	if swept[family] {
		return
	}
	swept[family] = true
	for _, msg := range RemoveLeftovers(family) {
		logf("testns: %s", msg)
	}
}

// RemoveLeftovers removes the namespaces (and /etc/netns entries) of family
// whose creating process is gone. It returns one message per namespace
// removed or failed.
func RemoveLeftovers(family string) []string {
	seen := map[string]time.Time{}
	for _, dir := range []string{"/run/netns", "/etc/netns"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), family) {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue
			}
			if t, ok := seen[e.Name()]; !ok || info.ModTime().Before(t) {
				seen[e.Name()] = info.ModTime()
			}
		}
	}
	var msgs []string
	for ns, made := range seen {
		pidText, _, _ := strings.Cut(strings.TrimPrefix(ns, family), "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || ownerAlive(pid, made) {
			continue // not of this naming scheme, or its run is live
		}
		if err := Remove(ns); err != nil {
			msgs = append(msgs, fmt.Sprintf("removing leftover %s: %v", ns, err))
		} else {
			msgs = append(msgs, "removed leftover namespace "+ns)
		}
	}
	return msgs
}

// ownerAlive reports whether pid is this process, or a live process that
// started no later than made, the namespace's creation: a process that
// started after it only reuses the pid of the dead owner.
func ownerAlive(pid int, made time.Time) bool {
	if pid == os.Getpid() {
		return true
	}
	start, err := processStart(pid)
	if err != nil {
		return false // gone, or not readable: not a run we can wait for
	}
	return !start.After(made.Add(time.Second)) // start time has 1/CLK_TCK grain; btime 1 s
}

// processStart is when pid started, from /proc/pid/stat's starttime (clock
// ticks after boot) and /proc/stat's btime.
func processStart(pid int) (time.Time, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, err
	}
	// comm, field 2, is in parentheses and may hold spaces or ')'.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return time.Time{}, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(string(stat[i+1:])) // f[0] is field 3 (state)
	if len(f) < 20 {
		return time.Time{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64) // field 22
	if err != nil {
		return time.Time{}, fmt.Errorf("/proc/%d/stat starttime: %v", pid, err)
	}
	boot, err := bootTime()
	if err != nil {
		return time.Time{}, err
	}
	const clkTck = 100 // USER_HZ: 100 on every Linux architecture Go supports
	return boot.Add(time.Duration(ticks) * time.Second / clkTck), nil
}

func bootTime() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("/proc/stat btime: %v", err)
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, errors.New("/proc/stat: no btime")
}

// Remove kills every process in ns, then deletes ns and /etc/netns/ns.
func Remove(ns string) error {
	errKill := Kill(ns)
	var errDel error
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
		errDel = ip("netns", "del", ns)
	}
	errEtc := os.RemoveAll(filepath.Join("/etc/netns", ns))
	return errors.Join(errKill, errDel, errEtc)
}

// Pids lists the processes inside ns, other than this one.
func Pids(ns string) ([]int, error) {
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	out, err := output("ip", "netns", "pids", ns)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Kill SIGKILLs every process in ns and waits, at most 5 s, until none is
// left.
func Kill(ns string) error {
	var pids []int
	for range 50 {
		var err error
		if pids, err = Pids(ns); err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("namespace %s: processes %v still alive after 5 s of SIGKILL", ns, pids)
}

func ip(args ...string) error {
	_, err := output("ip", args...)
	return err
}

func output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, msg)
	}
	return string(out), nil
}
