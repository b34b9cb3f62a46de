package nat

import (
	"fmt"
	"net"
	"net/netip"
)

// CandidateType says where an endpoint candidate came from.
type CandidateType uint8

// Candidate types, in the order Candidates lists them.
const (
	// Local is an address of one of the host's interfaces with the glow
	// port: reachable from the same LAN, or from anywhere for a public host.
	Local CandidateType = iota + 1
	// Reflexive is a public endpoint seen by a STUN server.
	Reflexive
	// Mapped is a port mapping made on the gateway by UPnP-IGD, NAT-PMP or
	// PCP.
	Mapped
)

func (t CandidateType) String() string {
	switch t {
	case Local:
		return "local"
	case Reflexive:
		return "reflexive"
	case Mapped:
		return "mapped"
	}
	return fmt.Sprintf("CandidateType(%d)", uint8(t))
}

// Candidate is one endpoint that a peer may try to reach this node at.
type Candidate struct {
	Addr netip.AddrPort
	Type CandidateType
}

func (c Candidate) String() string { return c.Type.String() + ":" + c.Addr.String() }

// cgnatPrefix is 100.64.0.0/10, where glow's overlay IPv4 addresses live.
// A carrier-grade NAT also hands out addresses from it, but those are not
// reachable from peers outside the carrier either, and the reflexive
// candidate covers that case.
var cgnatPrefix = netip.MustParsePrefix("100.64.0.0/10")

// Candidates builds the list of endpoints a node advertises: every usable
// interface address with port, then the STUN reflexive endpoints, then the
// port-mapped ones. Local candidates come first because a direct LAN path is
// the best there is; all of them are probed at once anyway.
//
// It drops invalid, unspecified, loopback, multicast and link-local
// addresses (a link-local address needs a zone a peer cannot know), port 0,
// anything in 100.64.0.0/10 and anything in one of the exclude prefixes
// (pass the node's overlay prefixes, e.g. its ULA /48, so that the overlay
// is never used to reach itself). IPv4-mapped IPv6 addresses are unmapped.
// An endpoint listed twice keeps its first (most preferred) type.
func Candidates(ifaceAddrs []netip.Addr, port uint16, reflexive, mapped []netip.AddrPort, exclude ...netip.Prefix) []Candidate {
	var out []Candidate
	seen := make(map[netip.AddrPort]bool)
	add := func(ap netip.AddrPort, t CandidateType) {
		a := ap.Addr().Unmap().WithZone("")
		ap = netip.AddrPortFrom(a, ap.Port())
		if !usable(a, exclude) || ap.Port() == 0 || seen[ap] {
			return
		}
		seen[ap] = true
		out = append(out, Candidate{Addr: ap, Type: t})
	}
	for _, a := range ifaceAddrs {
		add(netip.AddrPortFrom(a, port), Local)
	}
	for _, ap := range reflexive {
		add(ap, Reflexive)
	}
	for _, ap := range mapped {
		add(ap, Mapped)
	}
	return out
}

// usable reports whether a may be advertised as (part of) an endpoint.
func usable(a netip.Addr, exclude []netip.Prefix) bool {
	if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() {
		return false
	}
	if cgnatPrefix.Contains(a) {
		return false
	}
	for _, p := range exclude {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// InterfaceAddrs returns the unicast addresses of the host's interfaces
// that are up and not loopback, minus loopback and link-local addresses.
// Feed the result (with the overlay prefixes as exclude) to Candidates;
// the overlay's own TUN interface is filtered there by its prefixes.
func InterfaceAddrs() ([]netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("nat: listing interfaces: %w", err)
	}
	var out []netip.Addr
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue // interface went away or is unreadable; skip it
		}
		for _, a := range addrs {
			var ip net.IP
			switch v := a.(type) {
			case *net.IPNet:
				ip = v.IP
			case *net.IPAddr:
				ip = v.IP
			default:
				continue
			}
			addr, ok := netip.AddrFromSlice(ip)
			if !ok {
				continue
			}
			addr = addr.Unmap()
			if addr.IsLoopback() || addr.IsLinkLocalUnicast() || addr.IsUnspecified() || addr.IsMulticast() {
				continue
			}
			out = append(out, addr)
		}
	}
	return out, nil
}
