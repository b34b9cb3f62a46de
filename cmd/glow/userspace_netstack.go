//go:build glow_netstack

package main

import (
	"net/netip"

	"glow/tun"
	"glow/tun/userspace"
)

// openUserspace opens the stack of `glow up --userspace` (userspace.go):
// this binary is glow-userspace.
func openUserspace(addrs []netip.Addr, mtu int) (tun.Userspace, error) {
	s, err := userspace.Open(addrs, mtu)
	if err != nil {
		return nil, err
	}
	return s, nil
}
