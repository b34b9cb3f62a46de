package tun

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"glow/tun/firewall"
)

// rtprotGlowSubnet tags the routes SetSubnetRoutes makes (the routes
// SetRoutes makes are 'static'): each method replaces only its own.
const rtprotGlowSubnet = 0x67 // 'g'

// forwardingSysctls are the switches a router turns on.
var forwardingSysctls = []string{
	"/proc/sys/net/ipv4/ip_forward",
	"/proc/sys/net/ipv6/conf/all/forwarding",
}

// SetSubnetRoutes makes the routes through the interface for other nodes'
// subnets exactly prefixes, each preferring the source address of its
// family in srcs, as SetRoutes does; unlike SetRoutes, the prefixes are not
// guarded by the firewall (a subnet is a LAN somewhere, whose addresses may
// well arrive on this host's other interfaces). Routes are tagged with
// their own protocol number, so the two methods leave each other's alone.
func (k *Kernel) SetSubnetRoutes(prefixes []netip.Prefix, srcs ...netip.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return net.ErrClosed
	}
	return k.syncRoutesLocked(rtprotGlowSubnet, prefixes, srcs)
}

// SetForwarding makes this host a router for the overlay (on) or stops
// (off): the kernel forwards IPv4 and IPv6 (the sysctls' earlier values
// are kept in KernelConfig.SysctlFile and put back when it stops, at Close,
// or at the next OpenKernel after a crash) and glow's router table
// masquerades and clamps the MSS (firewall.RouterTable). It returns
// net.ErrClosed after Close.
func (k *Kernel) SetForwarding(on bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return net.ErrClosed
	}
	return k.setForwardingLocked(on)
}

func (k *Kernel) setForwardingLocked(on bool) error {
	if on == k.forwarding {
		return nil
	}
	if !on {
		err := firewall.SetRouter(k.nft, k.name, false)
		err = errors.Join(err, restoreSysctls(k.sysctlFile))
		if err == nil {
			k.forwarding = false
		}
		return err
	}
	saved := map[string]string{}
	for _, path := range forwardingSysctls {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("tun: forwarding: %w", err)
		}
		saved[path] = strings.TrimSpace(string(b))
	}
	if k.sysctlFile != "" {
		if _, err := os.Stat(k.sysctlFile); errors.Is(err, fs.ErrNotExist) {
			b, _ := json.Marshal(saved)
			if err := os.WriteFile(k.sysctlFile, b, 0o644); err != nil {
				return fmt.Errorf("tun: forwarding: save the sysctls: %w", err)
			}
		}
	}
	for _, path := range forwardingSysctls {
		if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
			restoreSysctls(k.sysctlFile)
			return fmt.Errorf("tun: forwarding: %w", err)
		}
	}
	if err := firewall.SetRouter(k.nft, k.name, true); err != nil {
		restoreSysctls(k.sysctlFile)
		return err
	}
	k.forwarding = true
	return nil
}

// restoreSysctlsChanged is restoreSysctls, and whether there was a file.
func restoreSysctlsChanged(file string) (bool, error) {
	if file == "" {
		return false, nil
	}
	if _, err := os.Stat(file); err != nil {
		return false, nil
	}
	return true, restoreSysctls(file)
}

// restoreSysctls writes back the values file holds and removes it; no file
// is nothing to do.
func restoreSysctls(file string) error {
	if file == "" {
		return nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tun: forwarding: %w", err)
	}
	var saved map[string]string
	if err := json.Unmarshal(b, &saved); err != nil {
		os.Remove(file) // damaged: nothing to restore from it
		return fmt.Errorf("tun: forwarding: %s: %w", file, err)
	}
	var errs []error
	for _, path := range forwardingSysctls { // only these paths, whatever the file names
		v, ok := saved[path]
		if !ok || (v != "0" && v != "1") {
			continue
		}
		if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		os.Remove(file)
	}
	return errors.Join(errs...)
}

// openRouter makes the nftables connection SetForwarding uses, in this
// thread's netns, and repairs what a crashed daemon left: its router table
// and the sysctls it changed.
func (k *Kernel) openRouter(sysctlFile string) error {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("tun: nftables: %w", err)
	}
	k.nft, k.sysctlFile = c, sysctlFile
	if err := k.setExitLocked(false, false, nil); err != nil {
		return err
	}
	if err := firewall.SetRouter(c, k.name, false); err != nil && !errors.Is(err, unix.EPROTONOSUPPORT) {
		return err
	}
	return restoreSysctls(sysctlFile)
}
