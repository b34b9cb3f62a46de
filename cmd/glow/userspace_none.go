//go:build !glow_netstack

package main

import (
	"net/netip"

	"glow/tun"
)

// openUserspace is nil: this glow has no userspace stack, and `glow up
// --userspace` runs glow-userspace instead (userspace.go).
var openUserspace func(addrs []netip.Addr, mtu int) (tun.Userspace, error)
