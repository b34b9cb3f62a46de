package member

import (
	"bytes"
	"errors"
	"testing"
)

// testBackupLogN keeps the tests' scrypt cheap; the format takes any
// log N from minBackupLogN.
const testBackupLogN = minBackupLogN

func TestUserKeyBackupRoundTrip(t *testing.T) {
	u, err := NewUserKey("alice")
	if err != nil {
		t.Fatal(err)
	}
	pass := []byte("correct horse battery")
	b, err := sealUserKey(u, pass, testBackupLogN)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, u.Priv.Seed()) {
		t.Fatal("the backup holds the seed in the clear")
	}
	bk, err := ParseUserKeyBackup(b)
	if err != nil {
		t.Fatal(err)
	}
	if bk.Name != "alice" || !bytes.Equal(bk.User[:], u.Public()) {
		t.Fatalf("header names %s %x", bk.Name, bk.User)
	}
	got, err := OpenUserKey(b, pass)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "alice" || !got.Priv.Equal(u.Priv) {
		t.Fatal("restored key differs")
	}
	if _, err := OpenUserKey(b, []byte("correct horse battery!")); !errors.Is(err, ErrBadPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if _, err := sealUserKey(u, []byte("short"), testBackupLogN); err == nil {
		t.Fatal("a 5-character passphrase was taken")
	}
	// Every header byte is authenticated: a change anywhere fails to open
	// (or to parse), never yields another key.
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x20
		if k, err := OpenUserKey(c, pass); err == nil {
			t.Fatalf("byte %d flipped: opened to %s", i, k.Name)
		}
	}
	// A KDF parameter asking for more than the bound is refused before any work.
	c := bytes.Clone(b)
	c[len(backupMagic)+2] = maxBackupLogN + 1
	if _, err := ParseUserKeyBackup(c); !errors.Is(err, ErrNotBackup) {
		t.Fatalf("log N %d: %v", maxBackupLogN+1, err)
	}
	for _, bad := range [][]byte{nil, []byte("glow user key v1\nname alice\n"), b[:len(b)-1], append(bytes.Clone(b), 0)} {
		if _, err := OpenUserKey(bad, pass); !errors.Is(err, ErrNotBackup) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

func FuzzParseUserKeyBackup(f *testing.F) {
	u, _ := NewUserKey("alice")
	b, _ := sealUserKey(u, []byte("passphrase"), testBackupLogN)
	f.Add(b)
	f.Add([]byte(backupMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		bk, err := ParseUserKeyBackup(b)
		if err != nil {
			return
		}
		if bk.logN > maxBackupLogN || bk.r > maxBackupR || bk.p > maxBackupP || !ValidName(bk.Name) {
			t.Fatalf("parameters out of bounds taken: %d %d %d %q", bk.logN, bk.r, bk.p, bk.Name)
		}
		if bk.logN <= 12 { // opening costs 128*r*2^logN: keep the fuzzer fast
			bk.Open([]byte("passphrase"))
		}
	})
}
