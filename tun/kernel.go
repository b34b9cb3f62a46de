package tun

import (
	"fmt"
	"net/netip"
)

// DefaultName is the kernel interface name used when KernelConfig.Name is empty.
const DefaultName = "glow0"

// DefaultMTU is the MTU used when KernelConfig.MTU (or userspace.Open's mtu) is 0.
// 1280 is the IPv6 minimum: after WireGuard's 80 bytes of overhead and a relay
// frame header, a packet still fits any path glow uses (Tailscale chose the
// same number for the same reason).
const DefaultMTU = 1280

// KernelDrops counts what a kernel TUN device dropped; both are reported
// in `glow status --json` (tun/unsplittable, tun/write-failed).
type KernelDrops struct {
	// Unsplittable: super-packets read from the kernel that could not be
	// cut into segments. The kernel never makes one; a count is a bug.
	Unsplittable uint64
	// WriteFailed: packets (a merged one counts once) the kernel refused
	// on write, such as one that is neither IPv4 nor IPv6 (EINVAL).
	WriteFailed uint64
}

// KernelConfig configures OpenKernel. It is validated once, by OpenKernel.
type KernelConfig struct {
	// Name of the interface; "" means DefaultName.
	Name string
	// MTU of the interface; 0 means DefaultMTU. It must be at least 1280
	// when there is any IPv6 address (the kernel turns IPv6 off below that).
	MTU int
	// Prefixes are the node's addresses with the overlay prefix length,
	// e.g. 100.64.0.7/10 and fd7a:...::7/48, so that the kernel adds the
	// connected routes for the whole overlay.
	Prefixes []netip.Prefix
	// ExtraAddrs are added as /32 or /128: local service addresses such as
	// the DNS service 100.100.100.53 and fd00:676c:6f77::53.
	ExtraAddrs []netip.Addr
	// Firewall, when not empty, are the overlay's address ranges that
	// glow's nftables table (package glow/tun/firewall) keeps off every
	// other interface: packets with such a source or destination address
	// are dropped unless they arrive on this interface or on loopback.
	// [Kernel.SetRoutes] adds its prefixes to these. Empty: no table.
	Firewall []netip.Prefix
	// SysctlFile is where [Kernel.SetForwarding] keeps the forwarding
	// sysctls' earlier values while it has them on, so that the next
	// OpenKernel puts them back after a crash. "": not kept.
	SysctlFile string
}

// withDefaults returns c with defaults filled in, or an error naming the bad field.
func (c KernelConfig) withDefaults() (KernelConfig, error) {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if len(c.Name) >= 16 { // IFNAMSIZ, including the NUL
		return c, fmt.Errorf("tun: KernelConfig.Name %q is longer than 15 bytes", c.Name)
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return c, fmt.Errorf("tun: KernelConfig.MTU %d is out of range [576, 65535]", c.MTU)
	}
	if _, err := addrSet(c.Prefixes, c.ExtraAddrs); err != nil {
		return c, err
	}
	for _, p := range c.Firewall {
		if !p.IsValid() {
			return c, fmt.Errorf("tun: KernelConfig.Firewall: invalid prefix %v", p)
		}
	}
	if c.MTU < 1280 && hasIPv6(c.Prefixes, c.ExtraAddrs) {
		return c, fmt.Errorf("tun: KernelConfig.MTU %d is below 1280, the IPv6 minimum, but there are IPv6 addresses", c.MTU)
	}
	return c, nil
}

// addrSet returns the interface addresses that prefixes and extra describe,
// as prefixes (extra ones as single-address prefixes), without duplicates.
func addrSet(prefixes []netip.Prefix, extra []netip.Addr) ([]netip.Prefix, error) {
	var out []netip.Prefix
	seen := make(map[netip.Prefix]bool)
	add := func(p netip.Prefix) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, p := range prefixes {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return nil, fmt.Errorf("tun: KernelConfig.Prefixes: invalid prefix %v", p)
		}
		q := netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr()))
		if !q.IsValid() {
			return nil, fmt.Errorf("tun: KernelConfig.Prefixes: invalid prefix %v", p)
		}
		add(q)
	}
	for _, a := range extra {
		if !a.IsValid() || a.Zone() != "" {
			return nil, fmt.Errorf("tun: KernelConfig.ExtraAddrs: invalid address %v", a)
		}
		a = a.Unmap()
		add(netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// unmapBits is how many prefix bits Unmap removes from a.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

func hasIPv6(prefixes []netip.Prefix, extra []netip.Addr) bool {
	for _, p := range prefixes {
		if p.Addr().Unmap().Is6() {
			return true
		}
	}
	for _, a := range extra {
		if a.Unmap().Is6() {
			return true
		}
	}
	return false
}
