package main

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"glow/internal/leaktest"
)

// TestAttackProxyOpenToNetwork (issue 12, item 7): --socks5 on an address
// other hosts can reach, without credentials, would hand them this node's
// overlay. It is refused; loopback, unix sockets, and any address with
// --socks5-auth are accepted.
func TestAttackProxyOpenToNetwork(t *testing.T) {
	for _, c := range []struct {
		addr string
		auth bool
		ok   bool
	}{
		{"localhost:1055", false, true},
		{"127.0.0.1:1055", false, true},
		{"127.9.9.9:1055", false, true},
		{"[::1]:1055", false, true},
		{"unix:/run/glow/proxy.sock", false, true},
		{":1055", false, false}, // every address
		{"0.0.0.0:1055", false, false},
		{"[::]:1055", false, false},
		{"10.77.1.10:1055", false, false},
		{"example.com:1055", false, false},
		{"10.77.1.10:1055", true, true},
		{":1055", true, true},
		{"unix:", false, false},
		{"1055", false, false},
	} {
		err := checkSOCKSAddr(c.addr, c.auth)
		if (err == nil) != c.ok {
			t.Errorf("checkSOCKSAddr(%q, auth %v) = %v, want ok %v", c.addr, c.auth, err, c.ok)
		}
	}
}

func TestSOCKSCredentials(t *testing.T) {
	file := filepath.Join(t.TempDir(), "auth")
	os.WriteFile(file, []byte("alice:s3:cret\nignored\n"), 0o600)
	for in, want := range map[string][2]string{
		"":              {"", ""},
		"alice:s3cret":  {"alice", "s3cret"},
		"alice:a:b":     {"alice", "a:b"},
		"@" + file:      {"alice", "s3:cret"},
		"alice":         {"!", ""},
		":pass":         {"!", ""},
		"alice:":        {"!", ""},
		"@/nonexistent": {"!", ""},
	} {
		u, p, err := socksCredentials(in)
		if want[0] == "!" {
			if err == nil {
				t.Errorf("socksCredentials(%q) = %q, %q; want an error", in, u, p)
			}
			continue
		}
		if err != nil || u != want[0] || p != want[1] {
			t.Errorf("socksCredentials(%q) = %q, %q, %v; want %q", in, u, p, err, want)
		}
	}
}

// TestDropFlag: the credentials never reach the daemon's command line.
func TestDropFlag(t *testing.T) {
	args := []string{"--userspace", "--socks5-auth", "a:b", "--name", "x", "-socks5-auth=c:d", "--socks5", "localhost:1", "--", "--socks5-auth"}
	got := dropFlag(args, "socks5-auth")
	want := []string{"--userspace", "--name", "x", "--socks5", "localhost:1", "--", "--socks5-auth"}
	if !slices.Equal(got, want) {
		t.Errorf("dropFlag = %q, want %q", got, want)
	}
}

func TestListenSOCKSUnix(t *testing.T) {
	leaktest.Check(t)
	path := filepath.Join(t.TempDir(), "proxy.sock")
	ln, err := listenSOCKS("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	if _, err := listenSOCKS("unix:" + path); err == nil {
		t.Error("a second listener on a live socket: no error")
	}
	ln.Close() // Go removes the file; leave a stale one as a crash would
	l2, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l2.(*net.UnixListener).SetUnlinkOnClose(false)
	l2.Close()
	ln, err = listenSOCKS("unix:" + path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	ln.Close()
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := listenSOCKS("unix:" + file); err == nil {
		t.Error("listening over a regular file: no error")
	}
}
