package main

// The lab: network namespaces, processes and files of one configuration in
// one round, all removed by close. Everything is named with the prefix
// gb-<pid>- (namespaces) or gw<pid>... (wireguard-go interfaces), so that
// leftovers of a run that was killed hard can be told from a live run's
// objects and removed by the next run (removeLeftovers, glow/internal/testns).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"glow/internal/testns"
)

// nsFamily is the prefix of every namespace this tool creates.
const nsFamily = "gb-"

// cmdTimeout bounds every set-up command (ip, wg, glow invite...).
const cmdTimeout = 20 * time.Second

// lab owns what one configuration set up for one round.
type lab struct {
	ctx    context.Context
	prefix string // gb-<pid>-r<round>-
	dir    string // scratch directory (state dirs, logs, keys)
	round  int
	log    func(format string, args ...any)

	namespaces []string
	procs      []*exec.Cmd
	closers    []func() // run in reverse order before processes and namespaces go
}

func newLab(ctx context.Context, workDir string, round int, cfg string, logf func(string, ...any)) (*lab, error) {
	dir := filepath.Join(workDir, fmt.Sprintf("r%d-%s", round, cfg))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &lab{
		ctx:    ctx,
		prefix: fmt.Sprintf("%s%d-r%d-", nsFamily, os.Getpid(), round),
		dir:    dir,
		round:  round,
		log:    logf,
	}, nil
}

// ns creates a namespace with lo up and its own (empty) resolv.conf.
func (l *lab) ns(name string) (string, error) {
	full := l.prefix + name
	if err := os.MkdirAll("/etc/netns/"+full, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile("/etc/netns/"+full+"/resolv.conf", []byte("# glow bench\n"), 0o644); err != nil {
		return "", err
	}
	if _, err := run(l.ctx, cmdTimeout, "ip", "netns", "add", full); err != nil {
		return "", err
	}
	l.namespaces = append(l.namespaces, full)
	if _, err := run(l.ctx, cmdTimeout, "ip", "-n", full, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	return full, nil
}

// pair is the topology every configuration starts from: namespaces a
// (client) and b (server) joined by one veth pair, eth0 on both sides,
// 10.78.0.1/24 and 10.78.0.2/24.
func (l *lab) pair() (a, b string, err error) {
	if a, err = l.ns("a"); err != nil {
		return
	}
	if b, err = l.ns("b"); err != nil {
		return
	}
	steps := [][]string{
		{"ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b},
		{"ip", "-n", a, "addr", "add", "10.78.0.1/24", "dev", "eth0"},
		{"ip", "-n", b, "addr", "add", "10.78.0.2/24", "dev", "eth0"},
		{"ip", "-n", a, "link", "set", "eth0", "up"},
		{"ip", "-n", b, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if _, err = run(l.ctx, cmdTimeout, s[0], s[1:]...); err != nil {
			return
		}
	}
	return a, b, nil
}

// veth joins namespaces x and y with a veth pair (interface xIf in x with
// xAddr, yIf in y with yAddr; addresses with their prefix length, "" for
// none) and brings both ends up.
func (l *lab) veth(x, xIf, xAddr, y, yIf, yAddr string) error {
	steps := [][]string{{"ip", "-n", x, "link", "add", xIf, "type", "veth", "peer", "name", yIf, "netns", y}}
	if xAddr != "" {
		steps = append(steps, []string{"ip", "-n", x, "addr", "add", xAddr, "dev", xIf})
	}
	if yAddr != "" {
		steps = append(steps, []string{"ip", "-n", y, "addr", "add", yAddr, "dev", yIf})
	}
	steps = append(steps,
		[]string{"ip", "-n", x, "link", "set", xIf, "up"},
		[]string{"ip", "-n", y, "link", "set", yIf, "up"})
	for _, s := range steps {
		if _, err := run(l.ctx, cmdTimeout, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// sysctl sets key=value inside namespace ns.
func (l *lab) sysctl(ns, key, value string) error {
	_, err := l.exec(ns, "sysctl", "-q", "-w", key+"="+value)
	return err
}

// exec runs a command inside namespace ns, bounded by cmdTimeout.
func (l *lab) exec(ns string, args ...string) (string, error) {
	return run(l.ctx, cmdTimeout, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// start starts a long-running process inside ns (its pid is the program's
// own: ip netns exec execs it); output goes to dir/logName. close kills it.
func (l *lab) start(ns, logName string, env []string, args ...string) (*exec.Cmd, error) {
	f, err := os.Create(filepath.Join(l.dir, logName))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	l.procs = append(l.procs, cmd)
	return cmd, nil
}

// onClose registers a teardown step; steps run in reverse order.
func (l *lab) onClose(f func()) { l.closers = append(l.closers, f) }

// close tears everything down. It never fails; problems are logged.
func (l *lab) close() {
	for i := len(l.closers) - 1; i >= 0; i-- {
		l.closers[i]()
	}
	for _, c := range l.procs {
		stopProcess(c)
	}
	for _, ns := range l.namespaces {
		if err := testns.Remove(ns); err != nil {
			l.log("%v", err)
		}
	}
}

// stopProcess sends SIGTERM, waits up to 3 s, then SIGKILL.
func stopProcess(c *exec.Cmd) {
	if c.Process == nil {
		return
	}
	c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		c.Process.Kill()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
		}
	}
}

// removeLeftovers deletes namespaces, wireguard-go sockets and scratch
// directories of earlier runs whose process is gone.
func removeLeftovers(logf func(string, ...any)) {
	dead := func(pidText string) bool {
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			return false
		}
		return syscall.Kill(pid, 0) == syscall.ESRCH
	}
	for _, msg := range testns.RemoveLeftovers(nsFamily) {
		logf("%s", msg)
	}
	socks, _ := filepath.Glob("/var/run/wireguard/gw*.sock")
	for _, s := range socks {
		name := strings.TrimSuffix(filepath.Base(s), ".sock")
		pid, _, _ := strings.Cut(strings.TrimPrefix(name, "gw"), "r")
		if dead(pid) {
			os.Remove(s)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "glow-bench-*"))
	for _, d := range dirs {
		if dead(strings.TrimPrefix(filepath.Base(d), "glow-bench-")) {
			os.RemoveAll(d)
		}
	}
}

// run runs a command with a timeout and returns its stdout; the error
// carries stderr's last line.
func run(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 2 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
			msg = "timed out after " + timeout.String()
		}
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, msg)
	}
	return string(out), nil
}

// waitFor polls cond every interval until it returns true, an error, or
// the limit passes.
func waitFor(ctx context.Context, limit, interval time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("%s: not within %s (last error: %v)", what, limit, last)
			}
			return fmt.Errorf("%s: not within %s", what, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
