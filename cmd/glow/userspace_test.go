package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestUserspaceBeside: `glow up --userspace` on a glow without the
// userspace stack finds glow-userspace beside it, says what to do when it
// is not there, and never hands over to itself.
func TestUserspaceBeside(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "glow")
	if _, err := userspaceBeside(self); !errors.Is(err, errUserspaceMissing) {
		t.Errorf("no glow-userspace: %v", err)
	}
	want := filepath.Join(dir, "glow-userspace")
	if err := os.WriteFile(want, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := userspaceBeside(self); err != nil || got != want {
		t.Errorf("beside: %q %v, want %q", got, err, want)
	}
	if _, err := userspaceBeside(want); !errors.Is(err, errUserspaceSelf) {
		t.Errorf("glow-userspace without the stack handed over to itself: %v", err)
	}
	// A kernel-TUN daemon is this binary, whatever it was built with.
	if got, err := daemonExecutable(false); err != nil || got == "" || filepath.Base(got) == userspaceName {
		t.Errorf("kernel daemon executable: %q %v", got, err)
	}
}
