package overlay

import (
	"errors"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/tun/netstack"

	"glow/internal/leaktest"
	"glow/tun"
	"glow/tun/userspace"
)

// openUserspace is Config.OpenUserspace for the in-process test nodes: each
// runs package userspace's stack, as glow-userspace does.
func openUserspace(addrs []netip.Addr, mtu int) (tun.Userspace, error) {
	s, err := userspace.Open(addrs, mtu)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// stackNet is the socket side of a test node's userspace stack.
func stackNet(n *Node) *netstack.Net { return n.Userspace().(*userspace.Stack).Net() }

// TestStartWithoutUserspaceStack: a Userspace node in a binary without the
// stack (no Config.OpenUserspace) fails to start with ErrNoUserspace, and
// leaves nothing running.
func TestStartWithoutUserspaceStack(t *testing.T) {
	leaktest.Check(t)
	n, err := Start(Config{StateDir: t.TempDir(), UserName: "alice", NodeName: "x", Random: true, Userspace: true,
		NoDiscovery: true, NoPortMap: true, NoDNS: true, HostAddrs: loopback})
	if !errors.Is(err, ErrNoUserspace) {
		if n != nil {
			n.Close()
		}
		t.Fatalf("Start: %v, want ErrNoUserspace", err)
	}
}
