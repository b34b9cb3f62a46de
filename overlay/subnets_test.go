package overlay

import (
	"net/netip"
	"testing"

	"glow/overlay/api"
	"glow/overlay/member"
)

// TestCheckOffer: what a node may offer (and a peer takes) as a subnet.
func TestCheckOffer(t *testing.T) {
	for s, ok := range map[string]bool{
		"10.71.1.0/24":        true,
		"192.168.0.0/16":      true,
		"2001:db8:5::/64":     true,
		"fd77:0:0:1::/64":     true, // a LAN's ULA /64 (users' /48s are checked against the certificates known)
		"10.71.1.5/24":        false,
		"0.0.0.0/0":           false, // --advertise-exit-node instead
		"::/0":                false,
		"100.64.0.0/10":       false,
		"100.100.0.0/16":      false,
		"96.0.0.0/3":          false, // holds the overlay's range
		"127.0.0.0/8":         false,
		"169.254.0.0/16":      false,
		"224.0.0.0/4":         false,
		"fe80::/64":           false,
		"fd00::/8":            false,
		"fd12::/16":           false,
		"::ffff:10.0.0.0/104": false,
	} {
		p := netip.MustParsePrefix(s)
		if err := checkOffer(p); (err == nil) != ok {
			t.Errorf("checkOffer(%s) = %v, want ok=%v", s, err, ok)
		}
	}
}

// TestValidPrefs: glow set and the prefs file get the same checks.
func TestValidPrefs(t *testing.T) {
	many := make([]netip.Prefix, member.MaxRoutes-1)
	for i := range many {
		many[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)
	}
	for name, c := range map[string]struct {
		p  api.Prefs
		ok bool
	}{
		"empty":          {api.Prefs{}, true},
		"routes":         {api.Prefs{AdvertiseRoutes: []netip.Prefix{netip.MustParsePrefix("10.71.1.0/24")}}, true},
		"exit node name": {api.Prefs{ExitNode: "vps.alice"}, true},
		"too many":       {api.Prefs{AdvertiseRoutes: many}, false},
		"overlay route":  {api.Prefs{AdvertiseRoutes: []netip.Prefix{member.IPv4Range}}, false},
		"bad exit name":  {api.Prefs{ExitNode: "VPS!"}, false},
	} {
		if err := validPrefs(c.p); (err == nil) != c.ok {
			t.Errorf("%s: validPrefs = %v, want ok=%v", name, err, c.ok)
		}
	}
}
