package dns

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestApplyRealBindMount runs Apply and Restore on a resolv.conf that is
// really bind-mounted, as "ip netns exec" does. It needs root and
// unshare(1): it re-runs itself in a private mount namespace, so the mount
// never shows outside this test.
func TestApplyRealBindMount(t *testing.T) {
	if dir := os.Getenv("GLOW_DNS_BINDMOUNT_CHILD"); dir != "" {
		bindMountChild(t, dir)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to bind-mount a file (TestApplyBindMount covers the logic)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("SKIPPED: no unshare(1)")
	}
	dir := t.TempDir()
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", os.Args[0],
		"-test.run", "^TestApplyRealBindMount$", "-test.v")
	cmd.Env = append(os.Environ(), "GLOW_DNS_BINDMOUNT_CHILD="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func bindMountChild(t *testing.T, dir string) {
	cfg := osTest(t, origResolvConf)
	src := filepath.Join(dir, "netns-resolv.conf")
	if err := os.WriteFile(src, []byte(origResolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(src, cfg.ResolvConf, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(cfg.ResolvConf, 0)
	// Sanity: rename onto it really fails.
	tmp := cfg.ResolvConf + ".x"
	os.WriteFile(tmp, nil, 0o644)
	if err := os.Rename(tmp, cfg.ResolvConf); err == nil {
		t.Fatal("rename onto a bind mount succeeded; test is not testing anything")
	}
	os.Remove(tmp)

	if _, err := Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, src); !strings.Contains(got, "nameserver 100.100.100.53") {
		t.Errorf("bind-mounted file not rewritten:\n%s", got)
	}
	if err := Restore(cfg); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, src); got != origResolvConf {
		t.Errorf("restored file differs:\n%s", got)
	}
}
