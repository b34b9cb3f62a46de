// Package tuntest is the in-memory twin of a glow TUN device, for tests.
//
// It wraps wireguard-go's tun/tuntest.ChannelTUN (packets through Go
// channels) instead of copying it, and adds what glow's tests need on top:
// packet counters on any tun.Device (Counting), and Pipe, which wires two
// devices back to back as if a perfect tunnel joined them, so that two
// netstacks talk without WireGuard in between.
//
// Use:
//
//	ch := tuntest.NewChannel()        // ch.Outbound <- pkt: the device reads pkt
//	dev := ch.TUN()                   // <-ch.Inbound: packets written to dev
//	... ch.Reads.Load(), ch.Writes.Load()
//
//	wait := tuntest.Pipe(a.Device(), b.Device())
//	defer wait()                      // after closing a and b
package tuntest

import (
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
	wgtuntest "golang.zx2c4.com/wireguard/tun/tuntest"
)

// Ping returns an ICMPv4 echo request from src to dst (wireguard-go's builder).
var Ping = wgtuntest.Ping

// Counting wraps a tun.Device and counts the packets that pass through it.
// Reads counts packets the device handed to a reader (after a Linux TUN
// split its GSO super-packets), Writes packets written to it (before
// coalescing).
type Counting struct {
	tun.Device
	Reads, Writes atomic.Uint64
}

// NewCounting returns dev with counters.
func NewCounting(dev tun.Device) *Counting { return &Counting{Device: dev} }

func (c *Counting) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := c.Device.Read(bufs, sizes, offset)
	c.Reads.Add(uint64(max(n, 0)))
	return n, err
}

// Write counts len(bufs) when the write succeeds: wireguard-go's Linux TUN
// returns a byte count there, not the packet count tun.Device documents.
func (c *Counting) Write(bufs [][]byte, offset int) (int, error) {
	n, err := c.Device.Write(bufs, offset)
	if err == nil {
		c.Writes.Add(uint64(len(bufs)))
	} else {
		c.Writes.Add(uint64(min(max(n, 0), len(bufs))))
	}
	return n, err
}

// Channel is a ChannelTUN whose device counts packets. Send packets for the
// device to read on Outbound; receive the packets written to it on Inbound
// (closed when the device closes).
type Channel struct {
	*wgtuntest.ChannelTUN
	*Counting
}

// NewChannel returns a new channel TUN, up.
func NewChannel() *Channel {
	ch := wgtuntest.NewChannelTUN()
	return &Channel{ChannelTUN: ch, Counting: NewCounting(ch.TUN())}
}

// TUN returns the counting device.
func (c *Channel) TUN() tun.Device { return c.Counting }

// Pipe forwards every packet read from a into b and from b into a, each
// direction on its own goroutine. The goroutines exit when a read fails
// (the device was closed); the returned wait blocks until both have exited,
// so call it after closing both devices. A failed write drops the packet,
// as a lossy link would.
func Pipe(a, b tun.Device) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() { forward(a, b) })
	wg.Go(func() { forward(b, a) })
	return wg.Wait
}

// offset leaves headroom in front of each packet, as wireguard-go does; a
// Linux TUN with offloads needs it for its virtio-net header.
const offset = 16

func forward(src, dst tun.Device) {
	n := src.BatchSize()
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, offset+65535)
	}
	sizes := make([]int, n)
	out := make([][]byte, 0, n)
	for {
		k, err := src.Read(bufs, sizes, offset)
		if err != nil {
			return
		}
		out = out[:0]
		for i := range k {
			out = append(out, bufs[i][:offset+sizes[i]])
		}
		dst.Write(out, offset)
	}
}
