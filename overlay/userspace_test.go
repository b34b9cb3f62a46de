package overlay

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/tun/netstack"

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
