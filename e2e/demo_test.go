package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"glow/e2e/lab"
)

// TestDemo runs `make demo` (scripts/demo.sh, with the binary under test)
// and checks that it tells the whole story: it exits 0, and its output has
// the key lines of each step (joins, a direct and a relayed path in `glow
// status`, ssh by name, the copied file, the share and its refusal after
// unshare, the map's URL). It removes every namespace it made.
func TestDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip(lab.SkipMessage)
	}
	needGlow(t)
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	root, err := moduleRoot(goTool)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "GLOW_BIN="+glowBin, "KEEP=")
	// On timeout the script gets SIGTERM, so its trap cleans up; whatever
	// is left after that is removed below.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	text := string(out)
	if cmd.Process != nil {
		defer demoLeftovers(t, cmd.Process.Pid)
	}
	if err != nil {
		t.Fatalf("scripts/demo.sh: %v after %v\n%s", err, took.Round(time.Millisecond), text)
	}
	metric(t, "demo.seconds", strings.TrimSpace(took.Round(100*time.Millisecond).String()))
	for _, want := range []string{
		`nas\$ glow up --no-dns --user alice --name nas`,
		`desktop\$ glow up --no-dns --name desktop --join glow-`,
		`nas\$ glow link add udp://198\.51\.100\.10:\d+`,
		`glow is up: vps\.alice`,
		`glow is up: laptop\.alice`,
		`(?m)^vps +alice .* direct 198\.51\.100\.10:\d+`,
		`(?m)^nas +alice .* relay via vps`,
		`(?m)^desktop +alice .* direct 10\.77\.1\.11:\d+`,
		`pong from nas\.alice via relay via vps`,
		`laptop\$ ssh nas .*\nlogged in to nas as root`,
		`photos\.tar copied: sha256 [0-9a-f]{64} on both ends`,
		`bob is now a friend`,
		`pc\$ curl http://nas\.alice\.glow:8080/hello\.txt\nhello bob, from alice's nas`,
		`refused \(not shared\)`,
		`refused after unshare`,
		`the map of the NAS: http://127\.0\.0\.1:\d+/\?token=`,
		`  laptop: relay via vps\n`,
		`  pc\.bob: direct\n`,
		`the laptop relayed via the VPS, bob's pc a friend's node: ok`,
		`== demo ok in \d+ s`,
	} {
		if !regexp.MustCompile(want).MatchString(text) {
			t.Errorf("the demo's output has no line matching %q", want)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", text)
	} else {
		t.Logf("demo ok in %v; its output:\n%s", took.Round(time.Millisecond), text)
	}
}

// demoLeftovers fails t if the demo whose shell had pid left namespaces
// (gd-PID-*), and removes them.
func demoLeftovers(t *testing.T, pid int) {
	prefix := "gd-" + strconv.Itoa(pid) + "-"
	left, _ := filepath.Glob("/run/netns/" + prefix + "*")
	if len(left) > 0 {
		t.Errorf("the demo left namespaces behind: %v", left)
		for _, f := range left {
			ns := filepath.Base(f)
			if out, err := exec.Command("sh", "-c", `for p in $(ip netns pids "$1"); do kill -9 "$p"; done; ip netns del "$1"; rm -rf "/etc/netns/$1"`, "sh", ns).CombinedOutput(); err != nil {
				t.Logf("removing %s: %v %s", ns, err, out)
			}
		}
	}
}
