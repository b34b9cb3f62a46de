package overlay

import (
	"net/netip"
	"testing"
)

type noKernel struct{}

func (noKernel) SetSubnetRoutes([]netip.Prefix, ...netip.Addr) error { return nil }
func (noKernel) SetForwarding(bool) error                            { return nil }
func (noKernel) SetExit(bool, bool, ...netip.Addr) error             { return nil }

// TestInTunnel: the underlay never uses an address the kernel routes into
// glow's TUN; a network the host is on wins over a wider prefix taken, and
// a userspace node (no kernel routes) routes nothing of the host's.
func TestInTunnel(t *testing.T) {
	pfx := netip.MustParsePrefix
	n := &Node{}
	n.rt.kernel = noKernel{}
	n.rt.applied.Subnets = []netip.Prefix{pfx("10.71.0.0/16"), pfx("192.168.7.0/24"), pfx("2001:db8:7::/48")}
	n.rt.connected = []netip.Prefix{pfx("10.71.5.0/24"), pfx("192.168.1.0/24")}
	for _, c := range []struct {
		a    string
		want bool
	}{
		{"10.71.1.1", true},        // a router's LAN address: inside a prefix taken
		{"192.168.7.254", true},    //
		{"2001:db8:7::1", true},    //
		{"::ffff:10.71.1.1", true}, // mapped: the same address
		{"10.71.5.9", false},       // our own LAN inside the /16: the kernel's longest match keeps it direct
		{"192.168.1.20", false},    // our LAN
		{"198.51.100.7", false},    // the Internet
		{"2001:db8:8::1", false},
	} {
		if got := n.inTunnelLocked(netip.MustParseAddr(c.a)); got != c.want {
			t.Errorf("inTunnel(%s) = %v, want %v", c.a, got, c.want)
		}
	}
	n.rt.kernel = nil // userspace: the host's sockets never enter the netstack
	if n.inTunnelLocked(netip.MustParseAddr("10.71.1.1")) {
		t.Error("a userspace node reports a subnet address as inside its tunnel")
	}
}
