// Package link holds glow's ways of reaching neighbour nodes: the transports
// a link can run over, and discovery of nodes on the local network.
//
// LAN discovery (this file) works with no server and no Internet: every node
// sends a small beacon to a multicast group on each of its up, multicast-capable,
// non-loopback interfaces, and listens on that group. The beacon's content is
// opaque here (the overlay puts its certificate and UDP port in it); the
// receiver learns the sender's LAN address from the datagram's source. The
// socket is separate from the node's main UDP socket so that several nodes on
// one host can all listen (SO_REUSEADDR/SO_REUSEPORT) while each keeps its own
// main port; replies go between main sockets, unicast.
package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"glow/internal/underlay"
)

// DefaultGroup is where beacons go: an administratively scoped IPv4 group
// (RFC 2365) and glow's discovery port.
var DefaultGroup = netip.MustParseAddrPort("239.255.71.71:47471")

// Discovery is a LAN beacon socket.
type Discovery struct {
	group netip.AddrPort
	pc    *ipv4.PacketConn
	conn  net.PacketConn

	mu       sync.Mutex // guards joined, ifaces, ifacesAt and watched
	joined   map[int]bool
	ifaces   []net.Interface // as Refresh last read them
	ifacesAt time.Time
	watched  bool // SetWatched: Refresh runs on every change
}

// SetWatched tells d that its owner calls Refresh whenever the host's
// interfaces change (it watches them), so Announce always sends on the
// interfaces Refresh read and never reads them itself.
func (d *Discovery) SetWatched() {
	d.mu.Lock()
	d.watched = true
	d.mu.Unlock()
}

// ifacesFresh is how long Announce uses the interfaces Refresh read
// instead of reading them again (each read is a netlink dump).
const ifacesFresh = time.Second

// ListenDiscovery opens the beacon socket on group's port and joins the group
// on every suitable interface.
func ListenDiscovery(group netip.AddrPort) (*Discovery, error) {
	if !group.IsValid() {
		group = DefaultGroup
	}
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
		return underlay.Control(network, address, c) // beacons stay on the LAN under an exit node
	}}
	c, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", group.Port()))
	if err != nil {
		return nil, fmt.Errorf("LAN discovery socket on port %d: %w", group.Port(), err)
	}
	d := &Discovery{group: group, conn: c, pc: ipv4.NewPacketConn(c), joined: map[int]bool{}}
	d.pc.SetMulticastLoopback(true)
	d.pc.SetMulticastTTL(1)
	d.Refresh()
	return d, nil
}

// Interfaces returns the interfaces beacons go out on.
func Interfaces() []net.Interface {
	ifs, _ := net.Interfaces()
	var out []net.Interface
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 || ifi.Flags&net.FlagMulticast == 0 {
			continue
		}
		if ifi.Flags&net.FlagPointToPoint != 0 {
			continue // TUN devices, glow's own among them
		}
		out = append(out, ifi)
	}
	return out
}

// Refresh joins the group on interfaces that appeared since the last call.
func (d *Discovery) Refresh() {
	d.mu.Lock()
	defer d.mu.Unlock()
	g := &net.UDPAddr{IP: d.group.Addr().AsSlice()}
	d.ifaces, d.ifacesAt = Interfaces(), time.Now()
	for _, ifi := range d.ifaces {
		if d.joined[ifi.Index] {
			continue
		}
		if err := d.pc.JoinGroup(&ifi, g); err == nil {
			d.joined[ifi.Index] = true
		}
	}
}

// Announce sends payload to the group on every suitable interface. It
// returns an error only if it could send on none.
func (d *Discovery) Announce(payload []byte) error {
	dst := &net.UDPAddr{IP: d.group.Addr().AsSlice(), Port: int(d.group.Port())}
	var sent int
	var lastErr error
	d.mu.Lock()
	ifs := d.ifaces
	if !d.watched && time.Since(d.ifacesAt) > ifacesFresh {
		ifs = Interfaces()
	}
	d.mu.Unlock()
	for _, ifi := range ifs {
		if err := d.pc.SetMulticastInterface(&ifi); err != nil {
			lastErr = err
			continue
		}
		if _, err := d.pc.WriteTo(payload, nil, dst); err != nil {
			lastErr = err
			continue
		}
		sent++
	}
	if sent == 0 {
		if lastErr == nil {
			lastErr = errors.New("no up multicast interface")
		}
		return fmt.Errorf("LAN beacon: %w", lastErr)
	}
	return nil
}

// Read reads one beacon into buf.
func (d *Discovery) Read(buf []byte) (int, netip.AddrPort, error) {
	n, _, src, err := d.pc.ReadFrom(buf)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	ua, _ := src.(*net.UDPAddr)
	if ua == nil {
		return 0, netip.AddrPort{}, errors.New("beacon from a non-UDP address")
	}
	ap := ua.AddrPort()
	return n, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// Close closes the socket; Read returns an error after it.
func (d *Discovery) Close() error { return d.conn.Close() }
