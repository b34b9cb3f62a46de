package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"glow/tun/firewall"
)

// Kernel is a Linux kernel TUN interface with the node's addresses, up.
//
// Device's contract is wireguard-go's tun.Device; on Linux its BatchSize is
// conn.IdealBatchSize (128) when the kernel accepted the virtio-net header
// offloads, and Read/Write then carry TSO/GRO super-packets split and merged
// by wireguard-go. Kernel's own methods are safe for concurrent use.
type Kernel struct {
	dev   tun.Device
	name  string
	index int

	// mu guards the following, and serialises netlink requests.
	mu     sync.Mutex
	nl     *rtnl              // netlink socket in the netns OpenKernel ran in; nil after Close
	fw     *firewall.Firewall // nil without KernelConfig.Firewall
	fwBase []netip.Prefix     // KernelConfig.Firewall; SetRoutes adds its routes
	closed bool

	// SetForwarding's (subnets_linux.go).
	nft        *nftables.Conn // lasting, in OpenKernel's netns
	sysctlFile string         // KernelConfig.SysctlFile
	forwarding bool
}

// OpenKernel creates the TUN interface cfg describes, in the network
// namespace of the calling thread, sets its MTU and addresses and brings it
// up. If an interface of that name exists and is a TUN device no process
// holds open, it is deleted first (a leftover); any other existing interface
// of that name is an error that names it.
//
// With cfg.Firewall it also installs glow's nftables table (package
// glow/tun/firewall) before the interface gets its addresses; a failure to
// install it is an error (the interface is removed again).
//
// Close removes the interface and the table.
func OpenKernel(cfg KernelConfig) (*Kernel, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// A handle made here keeps its sockets in this thread's netns, so later
	// calls (SetAddrs from any goroutine) still act on the right interface.
	h, err := dialRtnl()
	if err != nil {
		return nil, fmt.Errorf("tun: netlink: %w", err)
	}
	if err := removeStale(h, cfg.Name); err != nil {
		h.Close()
		return nil, err
	}
	dev, err := createTUN(cfg.Name)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("tun: create %s: %w", cfg.Name, err)
	}
	k := &Kernel{dev: dev, name: cfg.Name, nl: h}
	if err := k.setup(cfg); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// createTUN opens TUN interface name as wireguard-go's tun.CreateTUN does
// (IFF_TUN, IFF_NO_PI and IFF_VNET_HDR, so the same offloads and batches),
// but unmonitored: CreateTUN also starts a goroutine that writes nothing to
// the device once a second to learn whether it is up (the "tun status hack")
// and a netlink listener on its own thread for MTU and up/down events. Glow
// sets the MTU once and brings the device up itself (overlay calls the
// wireguard-go device's Up), so neither is needed, and the first cost an
// idle daemon a wake-up and a system call every second, which on the lab VM
// also woke Go's sysmon: without it an idle daemon's CPU halved (0.55-0.66
// to 0.28-0.36 ms/s). If someone sets the interface down, packets stop until it
// is up again, as with kernel WireGuard.
func createTUN(name string) (tun.Device, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if dev, err := openRawTUN(fd, ifr.Name()); err == nil {
		return dev, nil
	}
	// No TCP segmentation offload (an old kernel): wireguard-go's device
	// copes without the virtio-net header.
	dev, _, err := tun.CreateUnmonitoredTUNFromFD(fd) // sets O_NONBLOCK, negotiates what offloads there are
	if err != nil {
		return nil, err // the fd is an *os.File's by now, closed when it is collected
	}
	return dev, nil
}

func (k *Kernel) setup(cfg KernelConfig) error {
	if name, err := k.dev.Name(); err == nil {
		k.name = name
	}
	link, err := k.nl.linkByName(k.name)
	if err != nil {
		return fmt.Errorf("tun: %s: find link: %w", k.name, err)
	}
	k.index = link.Index
	if err := k.openRouter(cfg.SysctlFile); err != nil {
		return err
	}
	if len(cfg.Firewall) > 0 {
		fw, err := firewall.Install(firewall.Config{Interface: k.name, Prefixes: cfg.Firewall})
		if err != nil {
			return err
		}
		k.mu.Lock()
		k.fw, k.fwBase = fw, cfg.Firewall
		k.mu.Unlock()
	}
	// The MTU through the same netlink socket as the rest keeps all
	// configuration in one netns.
	if err := k.nl.linkSetMTU(k.index, cfg.MTU); err != nil {
		return fmt.Errorf("tun: %s: set mtu %d: %w", k.name, cfg.MTU, err)
	}
	if err := k.SetAddrs(cfg.Prefixes, cfg.ExtraAddrs); err != nil {
		return err
	}
	if err := k.nl.linkSetUp(k.index); err != nil {
		return fmt.Errorf("tun: %s: set up: %w", k.name, err)
	}
	return nil
}

// removeStale deletes an interface called name if it is a TUN device that
// no process holds open, and returns an error if name is taken by anything
// else.
//
// "Held open" is decided by the kernel itself: a non-persistent TUN exists
// only while a process holds it; a multi-queue one reports its attached
// queues; for a persistent single-queue one (what `ip tuntap add` makes) we
// try to attach to it, which fails with EBUSY when a process has it.
func removeStale(h *rtnl, name string) error {
	link, err := h.linkByName(name)
	if err != nil {
		if errors.Is(err, errNoLink) {
			return nil
		}
		return fmt.Errorf("tun: look up existing interface %s: %w", name, err)
	}
	inUse := fmt.Errorf("tun: interface %s already exists and is held open by a running process (another glow daemon?)", name)
	tt := link.Tun
	switch {
	case link.Kind != "tun":
		kind := link.Kind
		if kind == "" {
			kind = "device"
		}
		return fmt.Errorf("tun: interface %s already exists and is a %q device, not a TUN; remove it or choose another name", name, kind)
	case tt.Type == unix.IFF_TAP:
		return fmt.Errorf("tun: interface %s already exists and is a TAP device; remove it or choose another name", name)
	case tt.NonPersist:
		return inUse
	case tt.MultiQueue:
		if tt.Queues > 0 {
			return inUse
		}
	default:
		busy, err := tunAttached(name)
		if err != nil {
			return fmt.Errorf("tun: check existing interface %s: %w", name, err)
		}
		if busy {
			return inUse
		}
	}
	if err := h.linkDel(link.Index); err != nil {
		return fmt.Errorf("tun: remove stale TUN interface %s: %w", name, err)
	}
	return nil
}

// tunAttached reports whether a process holds the existing single-queue
// TUN device name, by trying to attach to it (and detaching at once).
func tunAttached(name string) (bool, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return false, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	switch err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err {
	case nil:
		return false, nil
	case unix.EBUSY:
		return true, nil
	default:
		return false, err
	}
}

// Device returns the TUN device, to be given to wireguard-go. Closing it
// directly also removes the interface; prefer Kernel.Close.
func (k *Kernel) Device() tun.Device { return k.dev }

// Drops counts what glow's own device dropped (zero on the fallback
// device, wireguard-go's, which only logs a failed write).
func (k *Kernel) Drops() KernelDrops {
	if r, ok := k.dev.(*rawTUN); ok {
		return r.Drops()
	}
	return KernelDrops{}
}

// Name returns the interface name.
func (k *Kernel) Name() string { return k.name }

// Index returns the interface index.
func (k *Kernel) Index() int { return k.index }

// SetAddrs makes the interface's addresses exactly prefixes plus extra (as
// /32 or /128), adding the missing ones and removing the others. Link-local
// addresses the kernel assigned are left alone. IPv6 addresses are added with
// IFA_F_NODAD, so they are usable at once. It returns net.ErrClosed after Close.
func (k *Kernel) SetAddrs(prefixes []netip.Prefix, extra []netip.Addr) error {
	want, err := addrSet(prefixes, extra)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return net.ErrClosed
	}
	cur, err := k.nl.addrs(k.index)
	if err != nil {
		return fmt.Errorf("tun: %s: list addresses: %w", k.name, err)
	}
	have := make(map[netip.Prefix]bool)
	wanted := make(map[netip.Prefix]bool)
	for _, p := range want {
		wanted[p] = true
	}
	for _, p := range cur {
		if p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if wanted[p] {
			have[p] = true
			continue
		}
		if err := k.nl.addrDel(k.index, p); err != nil {
			return fmt.Errorf("tun: %s: remove address %v: %w", k.name, p, err)
		}
	}
	for _, p := range want {
		if have[p] {
			continue
		}
		if err := k.nl.addrAdd(k.index, p); err != nil {
			return fmt.Errorf("tun: %s: add address %v: %w", k.name, p, err)
		}
	}
	return nil
}

// Close closes the TUN device, which removes the interface and its
// addresses and routes, and then removes the firewall table. It is
// idempotent; later calls return nil.
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	fwdErr := errors.Join(k.setForwardingLocked(false), k.setExitLocked(false, false, nil))
	k.closed = true
	if k.nft != nil {
		k.nft.CloseLasting()
	}
	err := k.dev.Close()
	k.nl.Close()
	k.nl = nil
	if err != nil && !errors.Is(err, net.ErrClosed) {
		err = fmt.Errorf("tun: close %s: %w", k.name, err)
	} else {
		err = nil
	}
	if k.fw != nil {
		err = errors.Join(err, k.fw.Close())
	}
	return errors.Join(err, fwdErr)
}

// SetRoutes makes the routes through the interface, besides the connected
// routes of its addresses, exactly prefixes (e.g. the IPv6 prefixes of the
// users whose nodes are shared with this one). Each route prefers the
// source address of its family in srcs (the node's own overlay address), so
// the kernel never picks another address of the interface (such as the DNS
// service address) as the source. Routes are tagged with protocol 'static'
// and scope link; others on the interface are left alone. With a firewall
// (KernelConfig.Firewall), the prefixes are guarded too, before any route
// to them exists. It returns net.ErrClosed after Close.
func (k *Kernel) SetRoutes(prefixes []netip.Prefix, srcs ...netip.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return net.ErrClosed
	}
	if k.fw != nil {
		// The firewall first: a route is a way in once it exists.
		if err := k.fw.SetPrefixes(append(slices.Clone(k.fwBase), prefixes...)); err != nil {
			return fmt.Errorf("tun: %s: %w", k.name, err)
		}
	}
	return k.syncRoutesLocked(unix.RTPROT_STATIC, prefixes, srcs)
}

// syncRoutesLocked makes the routes through the interface tagged with
// protocol proto in the main table exactly prefixes (scope link), each preferring the source
// address of its family in srcs; routes of other protocols are left alone.
// k.mu is held.
func (k *Kernel) syncRoutesLocked(proto uint8, prefixes []netip.Prefix, srcs []netip.Addr) error {
	var want []route
	for _, p := range prefixes {
		r := route{Dst: p.Masked(), Link: k.index, Table: unix.RT_TABLE_MAIN, Scope: unix.RT_SCOPE_LINK, Protocol: proto}
		for _, src := range srcs {
			if src.Is4() == p.Addr().Is4() {
				r.Src = src
			}
		}
		want = append(want, r)
	}
	err := k.nl.syncRoutes(func(r route) bool {
		return r.Table == unix.RT_TABLE_MAIN && r.Link == k.index && r.Protocol == proto
	}, want)
	if err != nil {
		return fmt.Errorf("tun: %s: %w", k.name, err)
	}
	return nil
}
