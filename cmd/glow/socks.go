package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
)

// The userspace proxy's listener. It serves every program that can connect
// to it, into the overlay, with this node's identity: on a loopback address
// that is every user of the machine (documented), so --socks5-auth or a
// unix socket (file permissions) narrow it; any other address would open it
// to the network, and is refused unless clients must authenticate.

// socksAuthEnv carries the proxy credentials to the background daemon (and
// may be set by the user instead of the flag).
const socksAuthEnv = "GLOW_SOCKS5_AUTH"

// checkSOCKSAddr accepts unix:PATH, and HOST:PORT where HOST is localhost or
// a loopback address; any other host only when clients must authenticate.
func checkSOCKSAddr(addr string, authenticated bool) error {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return errors.New("unix: needs a path")
		}
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want HOST:PORT or unix:PATH: %v", err)
	}
	if host == "localhost" {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Unmap().IsLoopback() {
		return nil
	}
	if authenticated {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address: every host that reaches it could use this node's overlay; use 127.0.0.1:PORT or unix:PATH, or require credentials with --socks5-auth USER:PASS", host)
}

// socksCredentials parses USER:PASS, or @FILE holding USER:PASS on its first
// line. "" means none.
func socksCredentials(s string) (user, pass string, err error) {
	if s == "" {
		return "", "", nil
	}
	if path, ok := strings.CutPrefix(s, "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", "", err
		}
		s, _, _ = strings.Cut(string(b), "\n")
		s = strings.TrimSpace(s)
	}
	user, pass, ok := strings.Cut(s, ":")
	if !ok || user == "" || pass == "" || len(user) > 255 || len(pass) > 255 {
		return "", "", errors.New("want USER:PASS, each 1 to 255 bytes (or @FILE holding that)")
	}
	return user, pass, nil
}

// listenSOCKS listens on addr (checked by checkSOCKSAddr). A unix socket is
// made 0600 (its owner, root included, only); a stale socket file left by a
// crashed daemon is replaced, any other file at path is an error.
func listenSOCKS(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		return net.Listen("tcp", addr)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another process", path)
		}
		os.Remove(path)
	}
	// Born 0600: no window in which others can connect. The umask is the
	// process's; this runs once, before the daemon's other goroutines
	// create files (and those set their modes explicitly anyway).
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// dropFlag removes --name VALUE, --name=VALUE (and the one-dash forms) from
// args.
func dropFlag(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		bare := strings.TrimLeft(a, "-")
		if a == "--" {
			return append(out, args[i:]...)
		}
		if strings.HasPrefix(a, "-") && bare == name {
			i++ // and its value
			continue
		}
		if strings.HasPrefix(a, "-") && strings.HasPrefix(bare, name+"=") {
			continue
		}
		out = append(out, a)
	}
	return out
}
