package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJoinProgress: glow up --join (in the background) shows on stderr the
// daemon's join lines logged since it started, each once, and nothing else.
func TestJoinProgress(t *testing.T) {
	path := filepath.Join(t.TempDir(), "glow.log")
	os.WriteFile(path, []byte("old glow: join: from an earlier run\n"), 0o600)
	var out strings.Builder
	relay := joinProgress(path, &out)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	defer f.Close()
	f.WriteString("12:00:00 glow up: glow: join: no answer yet\n12:00:00 glow: other\n12:00:01 glow: join:     glow link add udp://198.51.100.9:47470\n12:00:02 glow: join: partial")
	relay()
	relay()
	f.WriteString(" line\n")
	relay()
	want := "no answer yet\n    glow link add udp://198.51.100.9:47470\npartial line\n"
	if out.String() != want {
		t.Fatalf("stderr:\n%q\nwant\n%q", out.String(), want)
	}
}
