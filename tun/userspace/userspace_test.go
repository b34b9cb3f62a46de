package userspace

import (
	"net/netip"
	"testing"

	"glow/internal/leaktest"
)

// TestOpenValidates: Open refuses what would make a broken stack, and a
// stack closes twice without a panic (wireguard-go's netstack panics on a
// second close of its device).
func TestOpenValidates(t *testing.T) {
	leaktest.Check(t)
	a4 := netip.MustParseAddr("100.64.0.1")
	for _, c := range []struct {
		addrs []netip.Addr
		mtu   int
	}{
		{nil, 0},
		{[]netip.Addr{a4}, 575},
		{[]netip.Addr{a4}, 65536},
		{[]netip.Addr{{}}, 0},
		{[]netip.Addr{netip.MustParseAddr("::ffff:100.64.0.1")}, 0},
		{[]netip.Addr{netip.MustParseAddr("fe80::1%eth0")}, 0},
	} {
		if s, err := Open(c.addrs, c.mtu); err == nil {
			s.Close()
			t.Errorf("Open(%v, %d) accepted", c.addrs, c.mtu)
		}
	}
	s, err := Open([]netip.Addr{a4, netip.MustParseAddr("fd7a:676c:6f77::1")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if mtu, err := s.Device().MTU(); err != nil || mtu != DefaultMTU {
		t.Errorf("MTU %d %v, want %d", mtu, err, DefaultMTU)
	}
	s.Close()
	s.Close()
}
