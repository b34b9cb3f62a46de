package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"glow/overlay/member"
)

// interfaceAddrs returns this host's addresses that peers could reach:
// up interfaces, not loopback, not link-local, not the overlay's own.
func interfaceAddrs() []netip.Addr {
	addrs, _ := readInterfaces()
	return addrs
}

// interfaceNets returns the networks this host is directly on: the
// prefixes of interfaceAddrs' addresses (masked). A peer's offered prefix
// equal to one of them is not routed through the tunnel (subnets.go).
func interfaceNets() []netip.Prefix {
	_, nets := readInterfaces()
	return nets
}

// readInterfaces reads interfaceAddrs and interfaceNets in one pass.
func readInterfaces() (addrs []netip.Addr, nets []netip.Prefix) {
	eachInterfaceAddr(func(ifi net.Interface, p netip.Prefix) {
		ip := p.Addr()
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 || ifi.Flags&net.FlagPointToPoint != 0 ||
			ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || member.IPv4Range.Contains(ip) {
			return
		}
		addrs = append(addrs, ip)
		if p.IsValid() && !slices.Contains(nets, p.Masked()) {
			nets = append(nets, p.Masked())
		}
	})
	return addrs, nets
}

// eachInterfaceAddr calls f with every address of every interface of this
// host, unmapped, as a prefix of its mask's length (the address alone, in
// a prefix that is not IsValid, when the mask does not fit it).
func eachInterfaceAddr(f func(ifi net.Interface, p netip.Prefix)) {
	ifs, err := net.Interfaces()
	if err != nil {
		return
	}
	for _, ifi := range ifs {
		as, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			ones, bits := ipn.Mask.Size()
			if ip.Is4() && bits == 128 {
				ones, bits = ones-96, 32
			}
			p := netip.PrefixFrom(ip, -1)
			if bits == ip.BitLen() {
				p = netip.PrefixFrom(ip, ones)
			}
			f(ifi, p)
		}
	}
}

// ifaceWatch learns of changes to the host's interfaces and addresses from
// the kernel (a netlink socket subscribed to link and address
// notifications), so that an idle node need not dump them on a timer: the
// addresses it publishes are read again after a change, and only then
// (hostAddrs), and the control loop is woken (changed) to publish them and
// to join the beacon group on a new interface at once.
type ifaceWatch struct {
	f       *os.File
	gen     atomic.Uint64 // notifications received (and overruns)
	changed chan struct{} // a notification since the loop last looked (cap 1)
	done    chan struct{} // run has returned

	mu      sync.Mutex
	readGen uint64         // gen when addrs was read (valid once read)
	read    bool           // addrs holds a reading
	addrs   []netip.Addr   // interfaceAddrs at readGen
	nets    []netip.Prefix // interfaceNets at readGen
}

// watchInterfaces opens the notification socket and starts reading it.
func watchInterfaces() (*ifaceWatch, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	w := &ifaceWatch{f: os.NewFile(uintptr(fd), "netlink-ifaces"), changed: make(chan struct{}, 1), done: make(chan struct{})}
	go w.run()
	return w, nil
}

// run counts notifications until the socket is closed. What changed does
// not matter: any change means reading the interfaces again. A receive
// buffer overrun (ENOBUFS: notifications lost) counts as a change too.
func (w *ifaceWatch) run() {
	defer close(w.done)
	buf := make([]byte, 32<<10)
	for {
		_, err := w.f.Read(buf)
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			return // closed
		}
		w.gen.Add(1)
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
}

// close stops the watch and waits for run to return.
func (w *ifaceWatch) close() {
	w.f.Close()
	<-w.done
}

// hostAddrs is interfaceAddrs, read again only after a notification.
func (w *ifaceWatch) hostAddrs() []netip.Addr {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.readLocked()
	return slices.Clone(w.addrs)
}

// hostNets is interfaceNets, read again only after a notification.
func (w *ifaceWatch) hostNets() []netip.Prefix {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.readLocked()
	return slices.Clone(w.nets)
}

func (w *ifaceWatch) readLocked() {
	// gen is loaded before the dump: a change during it reads again next time.
	if g := w.gen.Load(); !w.read || g != w.readGen {
		w.addrs, w.nets = readInterfaces()
		w.readGen, w.read = g, true
	}
}

// watchInterfaces has the node read its host addresses through a watch
// (Start calls it before any goroutine reads n.cfg.HostAddrs). Without one
// the control loop reads them on its info timer, as before.
func (n *Node) watchInterfaces() {
	w, err := watchInterfaces()
	if err != nil {
		n.logf("glow: interface changes not watched (%v): reading them every %v", err, infoEvery)
		return
	}
	n.ifw, n.cfg.HostAddrs, n.cfg.HostNets = w, w.hostAddrs, w.hostNets
	n.atClose(w.close)
}
