package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"glow/overlay/member"
)

// TestUserExportRestore: glow user export FILE --passphrase-file seals the
// state's user key; restoring it into a fresh state writes the same key as
// user.key (0600); a wrong passphrase is a clear error that writes nothing;
// a state that is a node already is refused.
func TestUserExportRestore(t *testing.T) {
	src, dst, tmp := t.TempDir(), t.TempDir(), t.TempDir()
	u, err := member.NewUserKey("alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := (member.State{Dir: src}).SaveUserKey(u); err != nil {
		t.Fatal(err)
	}
	passFile := filepath.Join(tmp, "pass")
	os.WriteFile(passFile, []byte("tr0ub4dor&3 horse\n"), 0o600)
	wrongFile := filepath.Join(tmp, "wrong")
	os.WriteFile(wrongFile, []byte("tr0ub4dor&3 horsE\n"), 0o600)
	file := filepath.Join(tmp, "alice.glowkey")
	var out, errOut bytes.Buffer
	if rc := run([]string{"--state", src, "user", "export", file, "--passphrase-file", passFile}, &out, &errOut); rc != 0 {
		t.Fatalf("export: %d %s", rc, errOut.String())
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	if rc := run([]string{"--state", src, "user", "export", file, "--passphrase-file", passFile}, &out, &errOut); rc == 0 {
		t.Fatal("export replaced an existing file without --force")
	}
	g := &globals{state: dst, out: &out}
	err = restoreUserKey(g, file, wrongFile)
	if !errors.Is(err, member.ErrBadPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "user.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a failed restore wrote user.key")
	}
	if err := restoreUserKey(g, file, passFile); err != nil {
		t.Fatal(err)
	}
	got, err := member.State{Dir: dst}.LoadUserKey()
	if err != nil || !got.Priv.Equal(u.Priv) || got.Name != "alice" {
		t.Fatalf("restored key: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dst, "user.key")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("user.key mode %v", fi.Mode())
	}
	notBackup := filepath.Join(tmp, "nb")
	os.WriteFile(notBackup, []byte("glow user key v1\n"), 0o600)
	if err := restoreUserKey(&globals{state: t.TempDir()}, notBackup, passFile); !errors.Is(err, member.ErrNotBackup) {
		t.Fatalf("not a backup: %v", err)
	}
}
