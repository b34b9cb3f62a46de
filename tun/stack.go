package tun

import (
	"context"
	"net"

	"golang.zx2c4.com/wireguard/tun"
)

// Userspace is a userspace TCP/IP stack behind a [tun.Device]: what a node
// runs instead of a kernel TUN with `glow up --userspace`. Package
// glow/tun/userspace has the one glow uses (*userspace.Stack); it is kept
// out of this package so that a daemon with a kernel TUN does not carry it.
type Userspace interface {
	// Device is the packet side, for wireguard-go; Close closes it.
	Device() tun.Device
	// DialContext dials a TCP or UDP connection from inside the stack.
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	// Close closes the stack and its connections; it is idempotent.
	Close() error
}
