package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestAttackLogGrowsWithoutBound (issue 12, item 7): whatever makes the
// daemon log (peers, outsiders, a long uptime), glow.log stays under its cap
// and one old file is kept; the newest lines are in glow.log.
func TestAttackLogGrowsWithoutBound(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, logName)
	const capBytes = 64 << 10
	// A log left by an earlier run, already over the cap.
	if err := os.WriteFile(path, bytes.Repeat([]byte("old line\n"), 2*capBytes/9), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := openRotatingLog(path, capBytes, false)
	if err != nil {
		t.Fatal(err)
	}
	const total = 1 << 20
	written, lines := 0, 0
	for written < total {
		n, err := fmt.Fprintf(l, "2026/12/02 08:00:00.000000 glow: line %08d from a chatty peer %s\n", lines, bytes.Repeat([]byte("x"), 40))
		if err != nil {
			t.Fatal(err)
		}
		written += n
		lines++
	}
	// One write larger than the cap goes whole into a fresh file.
	huge := append(bytes.Repeat([]byte("y"), capBytes+100), '\n')
	if _, err := l.Write(huge); err != nil {
		t.Fatal(err)
	}
	last := "the last line\n"
	if _, err := l.Write([]byte(last)); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatalf("no %s.1 after %d bytes: %v", logName, written, err)
	}
	t.Logf("wrote %d bytes (%d lines) and one of %d: glow.log %d bytes, glow.log.1 %d bytes", written, lines, len(huge), len(cur), len(old))
	if len(cur) > capBytes || !bytes.Equal(cur, []byte(last)) {
		t.Errorf("glow.log: %d bytes ending %q, want only the last line", len(cur), cur[max(0, len(cur)-40):])
	}
	if !bytes.Equal(old, huge) {
		t.Errorf("glow.log.1: %d bytes, want the oversized write alone (%d)", len(old), len(huge))
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("%d files in the directory, want glow.log and glow.log.1", len(entries))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("new glow.log mode %v (%v), want 0600", fi.Mode(), err)
	}
}

// TestLogRotatesAtCap: a run of ordinary lines keeps both files under the
// cap, and the newest line is in glow.log, the ones before it in glow.log.1.
func TestLogRotatesAtCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), logName)
	const capBytes = 4096
	l, err := openRotatingLog(path, capBytes, false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 1000 {
		fmt.Fprintf(l, "line %04d %s\n", i, bytes.Repeat([]byte("z"), 50))
	}
	cur, _ := os.ReadFile(path)
	old, _ := os.ReadFile(path + ".1")
	if len(cur) == 0 || len(cur) > capBytes || len(old) == 0 || len(old) > capBytes {
		t.Errorf("glow.log %d bytes, glow.log.1 %d bytes: want both in (0, %d]", len(cur), len(old), capBytes)
	}
	if !bytes.Contains(cur, []byte("line 0999 ")) {
		t.Error("the newest line is not in glow.log")
	}
	if !bytes.HasSuffix(bytes.TrimSpace(old), bytes.Repeat([]byte("z"), 50)) || bytes.Contains(old, []byte("line 0999 ")) {
		t.Error("glow.log.1 is not made of the lines before glow.log's")
	}
}
