package udpbind

import "net/netip"

// Endpoint is a UDP address as this Bind gives and takes it. It is never
// changed after it is made, so receive batches share one per source.
type Endpoint struct {
	netip.AddrPort
}

// ClearSrc does nothing: there is no sticky source.
func (*Endpoint) ClearSrc() {}

// SrcToString returns "": the kernel chooses the source.
func (*Endpoint) SrcToString() string { return "" }

// SrcIP returns the zero Addr: the kernel chooses the source.
func (*Endpoint) SrcIP() netip.Addr { return netip.Addr{} }

// DstToString returns the address as ip:port.
func (e *Endpoint) DstToString() string { return e.AddrPort.String() }

// DstIP returns the destination IP address.
func (e *Endpoint) DstIP() netip.Addr { return e.Addr() }

// DstToBytes returns the address in binary, for WireGuard's cookie MACs.
func (e *Endpoint) DstToBytes() []byte {
	b, _ := e.AddrPort.MarshalBinary()
	return b
}

// ParseEndpoint parses ip:port. An IPv4-mapped IPv6 address becomes the
// IPv4 address, so it is sent from the IPv4 socket.
func ParseEndpoint(s string) (*Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &Endpoint{netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}
