// Package userspace is glow's userspace TCP/IP stack: wireguard-go's
// netstack, built on gVisor, behind a tun.Device. `glow up --userspace` runs
// it instead of a kernel TUN (programs reach the overlay through the SOCKS5
// / HTTP CONNECT proxy of package glow/tun), and the in-process tests run
// every node on one.
//
// It is a package apart, and the glow binary links it only when built with
// the glow_netstack tag (as glow-userspace; see cmd/glow/userspace.go):
// gVisor is a fifth of glow's code, and on Linux a binary's code is resident
// in every daemon that maps it, run or not. The overlay takes a stack
// through an opener (overlay.Config.OpenUserspace) and sees it as a
// glow/tun.Userspace, so it does not import this package; nor does this
// package import glow/tun, whose tests run the proxy into a Stack.
package userspace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// DefaultMTU is the MTU Open uses when given 0 (as tun.DefaultMTU).
const DefaultMTU = 1280

// Stack is a userspace TCP/IP stack (wireguard-go's netstack on gVisor)
// behind a tun.Device: packets the stack sends are read from Device, packets
// written to Device are delivered to it. Its BatchSize is 1. It is a
// glow/tun.Userspace.
type Stack struct {
	dev tun.Device
	net *netstack.Net

	closeOnce sync.Once
}

// Open creates a userspace stack with the given local addresses and
// MTU (0 means DefaultMTU). The stack has a default route for each address
// family it has an address of, and no DNS servers: names are resolved by the
// caller (see glow/tun.ProxyConfig.Resolve).
func Open(addrs []netip.Addr, mtu int) (*Stack, error) {
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < 576 || mtu > 65535 {
		return nil, fmt.Errorf("userspace: mtu %d is out of range [576, 65535]", mtu)
	}
	if len(addrs) == 0 {
		return nil, errors.New("userspace: a stack needs at least one address")
	}
	for _, a := range addrs {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			return nil, fmt.Errorf("userspace: invalid address %v", a)
		}
	}
	dev, n, err := netstack.CreateNetTUN(addrs, nil, mtu)
	if err != nil {
		return nil, fmt.Errorf("userspace: %w", err)
	}
	return &Stack{dev: dev, net: n}, nil
}

// Device returns the packet side of the stack, to be given to wireguard-go.
// Do not close it directly: use Stack.Close.
func (s *Stack) Device() tun.Device { return s.dev }

// Net returns the socket side of the stack (Dial, Listen, ...).
func (s *Stack) Net() *netstack.Net { return s.net }

// DialContext dials through the stack like netstack.Net.DialContext, but
// returns the connect failures as syscall errors (ECONNREFUSED,
// ENETUNREACH, EHOSTUNREACH, ETIMEDOUT) wrapped in a *net.OpError, so that
// callers such as the proxy can tell them apart with errors.Is: gVisor's
// adapter only gives their text.
func (s *Stack) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := s.net.DialContext(ctx, network, addr)
	if err != nil {
		return nil, errnoFromNetstack(err)
	}
	return c, nil
}

// gvisorErrnos maps gVisor's tcpip error texts (tcpip.Err*.String) to errnos.
var gvisorErrnos = []struct {
	text  string
	errno syscall.Errno
}{
	{"connection was refused", syscall.ECONNREFUSED},
	{"network is unreachable", syscall.ENETUNREACH},
	{"no route to host", syscall.EHOSTUNREACH},
	{"host is down", syscall.EHOSTDOWN},
	{"operation timed out", syscall.ETIMEDOUT},
	{"connection reset by peer", syscall.ECONNRESET},
}

func errnoFromNetstack(err error) error {
	var op *net.OpError
	if !errors.As(err, &op) || op.Err == nil {
		return err
	}
	var errno syscall.Errno
	if errors.As(op.Err, &errno) {
		return err
	}
	msg := op.Err.Error()
	for _, m := range gvisorErrnos {
		if strings.Contains(msg, m.text) {
			op2 := *op
			op2.Err = m.errno
			return &op2
		}
	}
	return err
}

// Close closes the stack and its connections. It is idempotent.
//
// wireguard-go's netstack panics if a packet is being handed to Read while
// it closes, and if it is closed twice; Close drains Read while it closes so
// neither happens. Readers of Device get os.ErrClosed afterwards.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			bufs := [][]byte{make([]byte, 65535)}
			sizes := []int{0}
			for {
				if _, err := s.dev.Read(bufs, sizes, 0); err != nil {
					return
				}
			}
		}()
		s.dev.Close()
		<-done
	})
	return nil
}
