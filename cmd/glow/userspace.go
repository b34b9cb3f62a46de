package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// userspaceName is the binary that runs the daemon of `glow up
// --userspace` for a glow built without the userspace network stack: glow
// built with the glow_netstack tag (userspace_netstack.go), installed
// beside glow by make build and make install.
//
// The split keeps gVisor (package glow/tun/userspace) out of every daemon
// with a kernel TUN: on Linux a binary's code is resident in each process
// that maps it, run or not, and gVisor is a fifth of glow's. The user
// types the same command either way; glow hands the daemon over to
// glow-userspace, whose other commands are glow's own.
const userspaceName = "glow-userspace"

// daemonExecutable returns the binary to run this node's daemon: this one,
// or, for --userspace when this one has no userspace stack, glow-userspace
// beside it.
func daemonExecutable(userspace bool) (string, error) {
	self, err := os.Executable()
	if err != nil || !userspace || openUserspace != nil {
		return self, err
	}
	return userspaceBeside(self)
}

// userspaceBeside returns glow-userspace in self's directory, if it is
// there and is not self.
func userspaceBeside(self string) (string, error) {
	p := filepath.Join(filepath.Dir(self), userspaceName)
	if p == self {
		return "", fmt.Errorf("--userspace: %s %w", self, errUserspaceSelf)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("--userspace: %w (make build and make install put it there; or: go build -tags glow_netstack -o %s ./cmd/glow)", errUserspaceMissing, p)
	}
	return p, nil
}

var (
	errUserspaceMissing = errors.New("this glow has no userspace network stack, and glow-userspace is not beside it")
	errUserspaceSelf    = errors.New("was built without the userspace network stack: build it with -tags glow_netstack")
)

// execUserspace replaces this process with glow-userspace running the same
// `glow up` (args: up's own, as the daemon is to get them), in the
// foreground: the process id stays, so a service manager keeps tracking it.
func execUserspace(g *globals, args []string) error {
	bin, err := daemonExecutable(true)
	if err != nil {
		return err
	}
	argv := []string{bin, "--state", g.state}
	if g.json {
		argv = append(argv, "--json") // its logs are JSON lines
	}
	argv = append(append(argv, "up"), args...)
	return fmt.Errorf("exec %s: %w", bin, syscall.Exec(bin, argv, os.Environ()))
}
