//go:build tools

// This file pins the module's main dependencies before every package
// imports them; see README.md for why each one is here.
package tools

import (
	_ "github.com/miekg/dns"
	_ "github.com/pion/stun"
	_ "golang.org/x/crypto/nacl/box"
	_ "golang.org/x/net/ipv4"
	_ "golang.zx2c4.com/wireguard/conn"
	_ "golang.zx2c4.com/wireguard/device"
	_ "golang.zx2c4.com/wireguard/tun"
	_ "golang.zx2c4.com/wireguard/tun/netstack"
)
