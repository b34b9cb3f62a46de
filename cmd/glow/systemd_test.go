package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSystemdNotify: with a fake service manager's socket in
// $NOTIFY_SOCKET, a running node's daemon side says READY=1 (with a
// status line naming the node) once its API answers, then WATCHDOG=1
// while its control loop ticks.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	next := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}

	state, n := startTestDaemon(t)
	notifyReady(state, t.Logf)
	if got := next(); !strings.HasPrefix(got, "READY=1\nSTATUS=n1.alice 100.") {
		t.Fatalf("first notification %q, want READY=1 and a status", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go watchdog(ctx, 200*time.Millisecond, n, t.Logf)
	for i := 0; i < 3; i++ {
		if got := next(); got != "WATCHDOG=1" {
			t.Fatalf("notification %d: %q, want WATCHDOG=1", i, got)
		}
	}
}

// TestLoopHealth: the watchdog is pinged while the tick count moves or
// moved within the stall bound, and not once it has stood still longer,
// nor when the node's lock cannot be had.
func TestLoopHealth(t *testing.T) {
	const stall = 15 * time.Second
	t0 := time.Unix(1000, 0)
	var h loopHealth
	steps := []struct {
		ticks uint64
		ok    bool
		at    time.Duration
		want  bool
	}{
		{1, true, 0, true},
		{2, true, 5 * time.Second, true},
		{2, true, 19 * time.Second, true},  // idle, within the bound
		{2, true, 21 * time.Second, false}, // stood still 16 s
		{2, false, 22 * time.Second, false},
		{3, true, 23 * time.Second, true}, // it moves again
		{0, false, 24 * time.Second, false},
	}
	for i, s := range steps {
		if got := h.healthy(s.ticks, s.ok, t0.Add(s.at), stall); got != s.want {
			t.Errorf("step %d (ticks %d, ok %v, at %v): %v, want %v", i, s.ticks, s.ok, s.at, got, s.want)
		}
	}
}

// TestForegroundLogs: glow up --foreground logs key=value lines (JSON
// lines with --json) whose component is a field; failures at WARN; no
// time under journald.
func TestForegroundLogs(t *testing.T) {
	var buf bytes.Buffer
	slogLogf(&buf, false, true)("glow: DNS: %s names on %v", "alice", []string{"100.100.100.100:53"})
	slogLogf(&buf, false, false)("glow: link tcp://x: dial failed")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), buf.String())
	}
	if want := `level=INFO msg="alice names on [100.100.100.100:53]" component=DNS`; lines[0] != want {
		t.Errorf("under journald: %q, want %q", lines[0], want)
	}
	if !strings.HasPrefix(lines[1], "time=") || !strings.HasSuffix(lines[1], ` level=WARN msg="link tcp://x: dial failed"`) {
		t.Errorf("a failure: %q, want a time and WARN", lines[1])
	}

	buf.Reset()
	slogLogf(&buf, true, true)("glow: metrics on http://%s/metrics", "127.0.0.1:9100")
	var rec map[string]any
	sc := bufio.NewScanner(&buf)
	if !sc.Scan() || json.Unmarshal(sc.Bytes(), &rec) != nil {
		t.Fatalf("not a JSON line: %q", buf.String())
	}
	if rec["msg"] != "metrics on http://127.0.0.1:9100/metrics" || rec["component"] != nil || rec["level"] != "INFO" || rec["time"] != nil {
		t.Errorf("JSON line %v", rec)
	}
}
