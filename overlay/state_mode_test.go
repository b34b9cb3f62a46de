package overlay

import (
	"os"
	"path/filepath"
	"testing"

	"glow/overlay/member"
)

// TestAttackStateDirReadable (issue 12, item 7): a state directory that
// already exists with mode 0755 (made by hand, by a package, by an older
// glow) would let every local user list it and reach glow.sock and
// glow.log. Init makes it 0700, as it does for a new one.
func TestAttackStateDirReadable(t *testing.T) {
	for _, mode := range []os.FileMode{0o755, 0o777, 0o711, 0o700} {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil { // Mkdir's mode is cut by the umask
			t.Fatal(err)
		}
		if err := (member.State{Dir: dir}).Init(); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("existing %#o -> %#o", mode, fi.Mode().Perm())
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("existing state dir %#o: mode %#o after Init, want 0700", mode, fi.Mode().Perm())
		}
	}
	fresh := filepath.Join(t.TempDir(), "a", "state")
	if err := (member.State{Dir: fresh}).Init(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("new state dir: %v, %v; want 0700", fi.Mode(), err)
	}
}
