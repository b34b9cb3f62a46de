//go:build !linux

package tun

import (
	"errors"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
)

// Kernel is a kernel TUN interface. It is implemented on Linux only.
type Kernel struct{}

// OpenKernel is implemented on Linux only; elsewhere use a userspace stack (glow/tun/userspace).
func OpenKernel(cfg KernelConfig) (*Kernel, error) {
	return nil, errors.ErrUnsupported
}

func (k *Kernel) Device() tun.Device { return nil }
func (k *Kernel) Name() string       { return "" }
func (k *Kernel) Close() error       { return nil }
func (k *Kernel) Drops() KernelDrops { return KernelDrops{} }

func (k *Kernel) SetRoutes([]netip.Prefix, ...netip.Addr) error { return errors.ErrUnsupported }

func (k *Kernel) SetSubnetRoutes([]netip.Prefix, ...netip.Addr) error { return errors.ErrUnsupported }
func (k *Kernel) SetForwarding(bool) error                            { return errors.ErrUnsupported }
func (k *Kernel) SetExit(bool, bool, ...netip.Addr) error             { return errors.ErrUnsupported }

// RepairRouting does nothing.
func RepairRouting(string) (bool, error) { return false, nil }
