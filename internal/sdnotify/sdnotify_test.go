package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// fakeManager listens on a unixgram socket as systemd would and points
// $NOTIFY_SOCKET at it; it returns a function reading the next datagram.
func fakeManager(t *testing.T, abstract bool) func() string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify")
	env := name
	if abstract {
		name = "\x00glow-sdnotify-test-" + strconv.Itoa(os.Getpid())
		env = "@" + name[1:]
	}
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	t.Setenv("NOTIFY_SOCKET", env)
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		next := fakeManager(t, abstract)
		for _, s := range []string{Ready + "\nSTATUS=up", Watchdog, Stopping} {
			if ok, err := Notify(s); !ok || err != nil {
				t.Fatalf("abstract %v: Notify(%q) = %v, %v", abstract, s, ok, err)
			}
			if got := next(); got != s {
				t.Errorf("abstract %v: the manager got %q, want %q", abstract, got, s)
			}
		}
	}
}

func TestNotifyWithoutManager(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if ok, err := Notify(Ready); ok || err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, %v; want false, nil", ok, err)
	}
	t.Setenv("NOTIFY_SOCKET", "relative")
	if _, err := Notify(Ready); err == nil {
		t.Error("a relative NOTIFY_SOCKET was taken")
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody"))
	if ok, err := Notify(Ready); ok || err == nil {
		t.Errorf("a socket nobody listens on: %v, %v; want an error", ok, err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"30000000", "", 30 * time.Second},
		{"30000000", strconv.Itoa(os.Getpid()), 30 * time.Second},
		{"30000000", "1", 0}, // another process's
		{"junk", "", 0},
		{"0", "", 0},
	} {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		if got := WatchdogInterval(); got != c.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, want %v", c.usec, c.pid, got, c.want)
		}
	}
}
