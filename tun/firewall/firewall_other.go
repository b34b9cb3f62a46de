//go:build !linux

package firewall

import (
	"errors"
	"fmt"
	"net/netip"
)

// Table is the name of glow's nftables table (family inet).
const Table = "glow"

// Config says what the firewall guards.
type Config struct {
	Interface string
	Prefixes  []netip.Prefix
}

// ErrInstall matches every error of Install.
var ErrInstall = errors.New("firewall: not installed")

var errNotLinux = fmt.Errorf("%w: nftables exists only on Linux", ErrInstall)

// Firewall is glow's table; only on Linux.
type Firewall struct{}

// Install fails: nftables exists only on Linux.
func Install(Config) (*Firewall, error) { return nil, errNotLinux }

// SetPrefixes fails: nftables exists only on Linux.
func (*Firewall) SetPrefixes([]netip.Prefix) error { return errNotLinux }

// Prefixes returns nothing.
func (*Firewall) Prefixes() []netip.Prefix { return nil }

// Close does nothing.
func (*Firewall) Close() error { return nil }

// RemoveStale does nothing.
func RemoveStale() (bool, error) { return false, nil }

// RemoveStaleRouter does nothing.
func RemoveStaleRouter() (bool, error) { return false, nil }
