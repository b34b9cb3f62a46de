package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"glow/e2e/lab"
)

// TestUserspaceForeground: `glow up --userspace --foreground` (what the
// systemd unit runs) on glow, which has no userspace stack, execs
// glow-userspace in its own process: the pid a service manager watches
// stays, and that process serves the node (its local API answers).
func TestUserspaceForeground(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	h := l.Host("solo")
	n := newNode(t, h, "solo")
	p, err := h.Start(glowBin, "--state", n.state, "up", "--user", "alice", "--name", "solo", "--userspace", "--no-dns", "--foreground")
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFor(30*time.Second, 200*time.Millisecond, func() error {
		select {
		case <-p.Done():
			return fmt.Errorf("exited: %s", p.Output())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := n.glow(ctx, "status")
		return err
	}); err != nil {
		t.Fatalf("the foreground userspace daemon never answered: %v\n%s", err, p.Output())
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid()))
	if err != nil || filepath.Base(exe) != "glow-userspace" {
		t.Fatalf("process %d (started as glow) runs %q (%v), want glow-userspace", p.Pid(), exe, err)
	}
	if pid, err := n.pid(); err != nil || pid != p.Pid() {
		t.Errorf("glow.pid %d (%v), want the started process %d", pid, err, p.Pid())
	}
}
