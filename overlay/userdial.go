package overlay

// Where the userspace node's connections go (--userspace: a netstack and
// the SOCKS5/HTTP proxy, no TUN). A userspace node cannot offer routes (it
// has no kernel to forward with) but uses them like a kernel node, as
// Tailscale's userspace networking does:
//
//   - overlay addresses, and prefixes a peer offers as subnet router, go
//     into the netstack and through WireGuard to the peer;
//   - while an exit node is chosen, everything else does too (the exit
//     node's default routes are that peer's allowed IPs), except this
//     machine's own addresses (loopback included) and, with
//     --exit-node-allow-lan-access, the prefixes of its interfaces. Fail
//     closed: when the chosen exit node is unknown or offers no default
//     route of the family, the connection fails at once, and while it is
//     unreachable the netstack's packets go nowhere: never a direct
//     connection;
//   - with no exit node, the rest is dialled from the host's own network
//     stack (the proxy is then a plain proxy to the local network and the
//     Internet).
//
// Names (ResolveName): glow names from the node's directory; other names
// from the exit node's resolver, through the tunnel (dns.Lookup), while
// one is chosen, else from the host's resolver.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"

	glowdns "glow/dns"
	"glow/overlay/member"
)

// ErrExitNodeUnavailable is the error of a connection that would go
// through the exit node chosen when that one is unknown or does not carry
// the destination's address family.
var ErrExitNodeUnavailable = errors.New("exit node chosen but not available: not connecting directly")

// overlay6 holds every user's /48 (and the DNS service's).
var overlay6 = netip.MustParsePrefix("fd00::/8")

// userDialWay is where Dial sends a connection.
type userDialWay int

const (
	wayHost    userDialWay = iota // the host's own network stack
	wayOverlay                    // the netstack, into the overlay
	wayBlocked                    // nowhere: the exit node chosen cannot take it
)

// dialWay decides where a connection to dst goes (see the file comment).
func (n *Node) dialWay(dst netip.Addr) userDialWay {
	dst = dst.Unmap()
	if member.IPv4Range.Contains(dst) || overlay6.Contains(dst) {
		return wayOverlay
	}
	local, lan := hostPrefixes()
	if dst.IsLoopback() || dst.IsUnspecified() || local[dst] {
		return wayHost
	}
	r, routed := n.bind.routeEntryFor(dst)
	if routed && r.p.Bits() > 0 {
		return wayOverlay // a subnet route
	}
	n.mu.Lock()
	exit, allowLAN := n.rt.prefs.ExitNode != "", n.rt.prefs.ExitNodeAllowLANAccess
	n.mu.Unlock()
	switch {
	case !exit:
		return wayHost
	case allowLAN && slices.ContainsFunc(lan, func(p netip.Prefix) bool { return p.Contains(dst) }):
		return wayHost
	case routed:
		return wayOverlay // the exit node's default route
	}
	return wayBlocked
}

// Dial connects a program of this machine that uses the userspace proxy
// to addr ("host:port"; a name is resolved with ResolveName first).
func (n *Node) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	dst, err := netip.ParseAddr(host)
	if err != nil {
		if dst, err = n.ResolveName(ctx, host); err != nil {
			return nil, err
		}
		addr = net.JoinHostPort(dst.String(), port)
	}
	switch n.dialWay(dst) {
	case wayOverlay:
		if n.ns == nil {
			return nil, errors.New("no userspace network stack")
		}
		return n.ns.DialContext(ctx, network, addr)
	case wayBlocked:
		n.mu.Lock()
		name := n.rt.prefs.ExitNode
		n.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("%w (%s): %w", ErrExitNodeUnavailable, name, syscall.EHOSTUNREACH)}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// resolveOther resolves a name that is not glow's (see the file comment).
func (n *Node) resolveOther(ctx context.Context, host string) (netip.Addr, error) {
	n.mu.Lock()
	chosen := n.rt.prefs.ExitNode
	var server netip.Addr
	if p := n.exitPeerLocked(); p != nil && takesDefault(p) {
		for _, a := range p.routed {
			if !server.IsValid() || a.Is4() && !server.Is4() {
				server = a
			}
		}
	}
	n.mu.Unlock()
	var addrs []netip.Addr
	var err error
	switch {
	case chosen == "":
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	case !server.IsValid() || n.ns == nil:
		return netip.Addr{}, fmt.Errorf("resolve %s: %w (%s)", host, ErrExitNodeUnavailable, chosen)
	default:
		addrs, err = glowdns.Lookup(ctx, n.ns.DialContext, netip.AddrPortFrom(server, 53), host)
	}
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs { // IPv4 first: every exit node and LAN carries it
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("%s: %w", host, glowdns.ErrNoHost)
	}
	return addrs[0].Unmap(), nil
}

// isGlowName reports whether host can only be a glow name (NAME.glow).
func isGlowName(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	return h == DNSSuffix || strings.HasSuffix(h, "."+DNSSuffix)
}

// hostPrefixes returns the addresses of this machine's interfaces and the
// prefixes of those that are not loopback.
func hostPrefixes() (map[netip.Addr]bool, []netip.Prefix) {
	local := map[netip.Addr]bool{}
	var lan []netip.Prefix
	eachInterfaceAddr(func(ifi net.Interface, p netip.Prefix) {
		local[p.Addr()] = true
		if ifi.Flags&net.FlagLoopback == 0 && ifi.Flags&net.FlagUp != 0 && !p.Addr().IsLinkLocalUnicast() && p.IsValid() {
			lan = append(lan, p.Masked())
		}
	})
	return local, lan
}
