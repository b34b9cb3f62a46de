// Package tun gives glow its two packet devices behind one interface,
// wireguard-go's [tun.Device]:
//
//   - [Kernel]: a Linux kernel TUN interface (needs root or CAP_NET_ADMIN).
//     Applications on the machine reach the overlay through it with plain
//     IP: the interface carries the node's overlay addresses with the
//     overlay prefix lengths, so the kernel installs the connected routes
//     (100.64.0.0/10 and the user's ULA /48) by itself and glow installs no
//     routes of its own.
//   - [Userspace]: a userspace TCP/IP stack (package glow/tun/userspace:
//     wireguard-go's netstack, built on gVisor), for machines where glow is
//     not root and for fast in-process tests. Programs reach it through the
//     SOCKS5 / HTTP CONNECT proxy served by [ServeSOCKS5]. It lives in a
//     package of its own so that only binaries that run it link gVisor.
//
// A Kernel opened with KernelConfig.Firewall also carries glow's nftables
// table (package glow/tun/firewall): packets with overlay addresses arriving
// on any other interface are dropped; SetRoutes extends it to the routed
// prefixes, Close removes it.
//
// The overlay hands either Device to wireguard-go's device.NewDevice (through
// its policy wrapper) and does not care which one it got.
//
// # Use
//
//	k, err := tun.OpenKernel(tun.KernelConfig{
//		Prefixes:   []netip.Prefix{netip.MustParsePrefix("100.64.0.7/10"), v6},
//		ExtraAddrs: []netip.Addr{netip.MustParseAddr("100.100.100.53")},
//	})
//	dev := k.Device() // give to wireguard-go
//	defer k.Close()   // removes the interface
//
//	ns, err := userspace.Open(addrs, 1280)
//	go tun.ServeSOCKS5(ctx, ln, tun.ProxyConfig{Dial: ns.DialContext})
//
// # Why this shape
//
// The kernel device is opened as wireguard-go's [tun.CreateTUN] opens it
// (IFF_VNET_HDR, with TSO4/6, and USO4/6 where the kernel has them), but
// without its up/down and MTU monitors (see createTUN: glow sets both
// itself, and the monitor polled once a second), and it is glow's own
// tun.Device, rawTUN: the same offloads as wireguard-go's NativeTun
// (super-packets from the kernel cut into segments on read, segments of a
// flow merged into super-packets on write: vnet.go, after the kernel's own
// rules), so BatchSize stays 128 and a direct path keeps wireguard-go's
// throughput, but with reads and writes made as raw system calls. Go's
// ordinary system call entry wakes the runtime's monitor thread whenever
// the process was idle, and the ends of a WireGuard flow idle between
// bursts thousands of times a second; link/udpbind does the same for the
// UDP side. A super-packet the device cannot cut is dropped and counted
// (wireguard-go's device would stop reading). On a kernel without TSO for
// TUN, wireguard-go's own device is used. This package also adds what
// CreateTUN leaves out: addresses (IPv6 ones with IFA_F_NODAD, so they are
// usable at once, as Tailscale and wg-quick do), MTU and link state, all
// through route netlink rather than by running ip(8).
//
// An interface that already has the configured name is handled as follows:
// if it is a TUN device that no process has open (a persistent TUN, for
// example one a crashed daemon or `ip tuntap add` left behind) it is stale and
// is deleted; any other interface of that name (a TUN some process still
// holds, or a link of another kind) is left alone and OpenKernel returns an
// error naming it. Whether a TUN is held is asked of the kernel (see
// removeStale), never guessed. The TUN glow creates is not persistent: it
// disappears with the process that held it, so a crashed glow daemon leaves
// nothing behind, and a second daemon cannot take over a running one's.
//
// The proxy takes a Dial function instead of a stack (habit 9 of STYLE.md:
// inject the network), so the same code proxies into a netstack, into the
// kernel stack, or into a test fake. Its handshake parser is fuzzed
// (FuzzSOCKSHandshake). Only what applications actually use is implemented:
// RFC 1928 with no authentication, or with username/password (RFC 1929)
// when ProxyConfig.User is set, and the CONNECT command, over IPv4, IPv6
// and domain-name targets; BIND and UDP ASSOCIATE get reply 0x07. Without
// credentials the proxy serves whoever can connect to its listener: on a
// loopback address, every user of the machine. Clients
// that speak HTTP CONNECT instead (curl's and browsers' "HTTP proxy"
// setting) are served on the same listener: the first byte tells them apart
// (0x05 for SOCKS5, an ASCII letter for HTTP); with credentials, HTTP
// clients must send Proxy-Authorization: Basic (else 407).
//
// The in-memory twin of a Device lives in package glow/tun/tuntest.
package tun
