package nat_test

import (
	"net/netip"
	"reflect"
	"testing"

	"glow/nat"
)

func TestCandidates(t *testing.T) {
	ap := netip.MustParseAddrPort
	a := netip.MustParseAddr
	overlay := netip.MustParsePrefix("fd7a:1234:5678::/48")
	got := nat.Candidates(
		[]netip.Addr{
			a("192.168.1.2"),
			a("127.0.0.1"),         // loopback
			a("169.254.3.4"),       // link-local v4
			a("fe80::1"),           // link-local v6
			a("100.64.1.2"),        // glow's overlay v4 range
			a("fd7a:1234:5678::1"), // overlay v6 prefix, passed in
			a("fd00:aaaa::2"),      // another ULA: a real LAN address
			a("::ffff:10.0.0.7"),   // v4-mapped: unmapped
			a("192.168.1.2"),       // duplicate
			a("0.0.0.0"),           // unspecified
			a("2001:db8::2"),
			{}, // invalid
		},
		41641,
		[]netip.AddrPort{ap("203.0.113.1:41641"), ap("203.0.113.1:41641"), ap("192.168.1.2:41641"), ap("203.0.113.1:0")},
		[]netip.AddrPort{ap("203.0.113.1:5000"), ap("[::ffff:203.0.113.1]:41641")},
		overlay,
	)
	want := []nat.Candidate{
		{ap("192.168.1.2:41641"), nat.Local},
		{ap("[fd00:aaaa::2]:41641"), nat.Local},
		{ap("10.0.0.7:41641"), nat.Local},
		{ap("[2001:db8::2]:41641"), nat.Local},
		{ap("203.0.113.1:41641"), nat.Reflexive},
		{ap("203.0.113.1:5000"), nat.Mapped},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Candidates:\n got %v\nwant %v", got, want)
	}
	if s := want[4].String(); s != "reflexive:203.0.113.1:41641" {
		t.Errorf("String() = %q", s)
	}
	if got := nat.Candidates(nil, 1, nil, nil); len(got) != 0 {
		t.Errorf("no input gave %v", got)
	}
}

func TestInterfaceAddrs(t *testing.T) {
	addrs, err := nat.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IsLoopback() || a.IsLinkLocalUnicast() || !a.IsValid() {
			t.Errorf("InterfaceAddrs returned %v", a)
		}
	}
	t.Logf("interface addresses: %v", addrs)
}
