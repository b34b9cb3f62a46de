package glow

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestMakeInstall: make install DESTDIR=... PREFIX=/usr lays out the
// binaries (glow and glow-userspace), the systemd unit (ExecStart at the installed binary) and the
// default file, and a second install keeps an edited default file.
// systemd-analyze verify then checks the installed unit, where it exists.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("!!! no make: make install not tested !!!")
	}
	dest := t.TempDir()
	install := func() {
		t.Helper()
		cmd := exec.Command("make", "install", "DESTDIR="+dest, "PREFIX=/usr", "BIN="+filepath.Join(t.TempDir(), "glow"),
			"GO="+filepath.Join(runtime.GOROOT(), "bin", "go"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
	}
	install()
	bin := filepath.Join(dest, "usr/bin/glow")
	if fi, err := os.Stat(bin); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v %v", fi, err)
	}
	if out, err := exec.Command(bin, "version").Output(); err != nil || !strings.HasPrefix(string(out), "glow ") {
		t.Errorf("installed glow version: %q %v", out, err)
	}
	// glow-userspace, which runs --userspace daemons, is installed beside it.
	if out, err := exec.Command(filepath.Join(dest, "usr/bin/glow-userspace"), "version").Output(); err != nil || !strings.HasPrefix(string(out), "glow ") {
		t.Errorf("installed glow-userspace version: %q %v", out, err)
	}
	unitPath := filepath.Join(dest, "usr/lib/systemd/system/glow.service")
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nType=notify\n", "\nWatchdogSec=", "\nStateDirectory=glow\n", "\nRuntimeDirectory=glow\n",
		"\nRestart=on-failure\n", "\nAfter=network-online.target time-sync.target\n", "\nWants=network-online.target\n",
		"\nExecStart=/usr/bin/glow --state /var/lib/glow up --foreground $GLOW_ARGS\n",
		"\nEnvironmentFile=-/etc/default/glow\n", "\nCapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the installed unit lacks %q", strings.TrimSpace(want))
		}
	}
	def := filepath.Join(dest, "etc/default/glow")
	if b, err := os.ReadFile(def); err != nil || !strings.Contains(string(b), "\nGLOW_ARGS=") {
		t.Fatalf("default file: %q %v", b, err)
	}
	edited := []byte("GLOW_ARGS=\"--metrics 9100\"\n")
	os.WriteFile(def, edited, 0o644)
	install()
	if b, _ := os.ReadFile(def); string(b) != string(edited) {
		t.Errorf("a second install replaced the edited default file: %q", b)
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("!!! no systemd-analyze: the unit is not verified !!!")
	}
	// verify wants ExecStart's binary to exist: point it at the staged one.
	check := filepath.Join(t.TempDir(), "glow.service")
	os.WriteFile(check, []byte(strings.ReplaceAll(string(unit), "/usr/bin/glow", bin)), 0o644)
	if out, err := exec.Command(sa, "verify", check).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
