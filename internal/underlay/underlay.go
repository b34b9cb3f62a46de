// Package underlay marks glow's own sockets, so that they keep using the
// host's physical routes while an exit node routes everything else into
// the overlay (tun.Kernel.SetExit: its ip rules send packets with Mark to
// the main table, everything else to glow's table).
//
// Control is a net.Dialer / net.ListenConfig Control function; it sets
// SO_MARK while marking is on (Enable) and does nothing otherwise (or on
// systems without SO_MARK). The UDP socket wireguard-go owns is marked
// through its bind (IpcSet fwmark), not here.
package underlay

import (
	"sync/atomic"
	"syscall"
)

// Mark is the socket mark of glow's own traffic: the bits 0xff0000 hold
// 0x08 (0x80000, the value Tailscale gives its own sockets, with the same
// meaning).
const Mark = 0x80000

var on atomic.Bool

// Enable turns marking of new sockets on (kernel TUN nodes, as root).
func Enable() { on.Store(true) }

// Control marks the socket c when marking is on.
func Control(network, address string, c syscall.RawConn) error {
	if !on.Load() {
		return nil
	}
	var serr error
	if err := c.Control(func(fd uintptr) { serr = setMark(int(fd)) }); err != nil {
		return err
	}
	return serr
}
