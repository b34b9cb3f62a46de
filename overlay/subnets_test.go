package overlay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

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
		"accept from":    {api.Prefs{AcceptRoutesFrom: []string{"bob", "carol"}}, true},
		"bad friend":     {api.Prefs{AcceptRoutesFrom: []string{"Bob!"}}, false},
		"many friends":   {api.Prefs{AcceptRoutesFrom: slices.Repeat([]string{"bob"}, maxAcceptFrom+1)}, false},
	} {
		if err := validPrefs(c.p); (err == nil) != c.ok {
			t.Errorf("%s: validPrefs = %v, want ok=%v", name, err, c.ok)
		}
	}
}

// TestRouteChoice: three nodes of one user; n1 and n2 both offer
// 10.71.1.0/24, n2 also 10.71.2.0/24, n1 is an exit node. n3 routes the
// shared prefix to one of them (the lower id: both are own and online),
// n2's other prefix to n2, and the default routes to n1 only while n1 is
// its exit node; n1 takes n2's other prefix but not the one it offers
// itself. The packet path and the policy directory agree.
func TestRouteChoice(t *testing.T) {
	lan1, lan2 := netip.MustParsePrefix("10.71.1.0/24"), netip.MustParsePrefix("10.71.2.0/24")
	nodes := joinedNetMod(t, 3, func(i int, c *Config) {
		c.offerUserspace = true // the choice, without kernels to forward
		switch i {
		case 0:
			c.Prefs = &api.PrefsChange{AdvertiseRoutes: &[]netip.Prefix{lan1}, AdvertiseExitNode: ptr(true)}
		case 1:
			c.Prefs = &api.PrefsChange{AdvertiseRoutes: &[]netip.Prefix{lan2, lan1}}
		}
	})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	routes := func(n *Node, peer string) []string {
		for _, p := range n.Status().Peers {
			if p.Name == peer {
				return p.Routes
			}
		}
		return nil
	}
	shared := n1
	if bytes.Compare(n2.id[:], n1.id[:]) < 0 {
		shared = n2
	}
	want := func(n *Node, peer string, rs ...string) {
		t.Helper()
		waitFor(t, 20*time.Second, fmt.Sprintf("%s routes %v through %s", n.Cert().Name, rs, peer), func() bool {
			return slices.Equal(routes(n, peer), rs)
		})
	}
	if shared == n1 {
		want(n3, "n1", "10.71.1.0/24")
		want(n3, "n2", "10.71.2.0/24")
	} else {
		want(n3, "n1")
		want(n3, "n2", "10.71.1.0/24", "10.71.2.0/24")
	}
	want(n1, "n2", "10.71.2.0/24") // not 10.71.1.0/24: n1 offers it itself
	if e := n3.bind.routeFor(netip.MustParseAddr("10.71.2.9")); e == nil || e.ID != n2.id {
		t.Errorf("n3's packet path: 10.71.2.9 goes to %v, want n2", e)
	}
	if p, ok := n3.dir.Lookup(netip.MustParseAddr("10.71.2.9")); !ok || p.Node != "n2" {
		t.Errorf("n3's directory: 10.71.2.9 is %+v, want n2's", p)
	}
	if _, ok := n3.dir.Lookup(netip.MustParseAddr("10.71.3.9")); ok {
		t.Error("n3's directory names an owner for an address nobody routes")
	}

	// Where a userspace node's proxy sends connections (userdial.go).
	way := func(stage, a string, want userDialWay) {
		t.Helper()
		if got := n3.dialWay(netip.MustParseAddr(a)); got != want {
			t.Errorf("%s: n3's proxy sends %s %v, want %v", stage, a, got, want)
		}
	}
	way("no exit node", "198.51.100.7", wayHost)
	way("no exit node", "10.71.2.9", wayOverlay)
	way("no exit node", n2.Cert().IPv4.String(), wayOverlay)

	// The exit node: chosen, then not.
	if _, err := n3.SetPrefs(api.PrefsChange{ExitNode: ptr("n1")}); err != nil {
		t.Fatal(err)
	}
	if shared == n1 {
		want(n3, "n1", "0.0.0.0/0", "10.71.1.0/24", "::/0")
	} else {
		want(n3, "n1", "0.0.0.0/0", "::/0")
	}
	if e := n3.bind.routeFor(netip.MustParseAddr("198.51.100.7")); e == nil || e.ID != n1.id {
		t.Errorf("n3's packet path: an Internet address goes to %v, want n1", e)
	}
	if e := n3.bind.routeFor(netip.MustParseAddr("10.71.2.9")); e == nil || e.ID != n2.id {
		t.Errorf("n3's packet path with an exit node: 10.71.2.9 goes to %v, want n2 (longest prefix)", e)
	}
	way("exit node n1", "198.51.100.7", wayOverlay)
	way("exit node n1", "127.0.0.1", wayHost)
	way("exit node n1", "::1", wayHost)
	if _, err := n3.SetPrefs(api.PrefsChange{ExitNode: ptr("n2")}); err != nil {
		t.Fatal(err) // n2 offers no default route: chosen, routes nothing (fail closed)
	}
	if shared == n1 {
		want(n3, "n1", "10.71.1.0/24")
	} else {
		want(n3, "n1")
	}
	if e := n3.bind.routeFor(netip.MustParseAddr("198.51.100.7")); e != nil {
		t.Errorf("n3's packet path: an Internet address goes to %v through an exit node that offers nothing", e)
	}
	way("exit node n2, which offers none", "198.51.100.7", wayBlocked) // fail closed, not direct
	way("exit node n2, which offers none", "10.71.2.9", wayOverlay)
	if _, err := n3.ResolveName(context.Background(), "example.com"); !errors.Is(err, ErrExitNodeUnavailable) {
		t.Errorf("exit node n2, which offers none: resolving example.com: %v, want ErrExitNodeUnavailable", err)
	}
	if _, err := n3.Dial(context.Background(), "tcp", "198.51.100.7:80"); !errors.Is(err, ErrExitNodeUnavailable) {
		t.Errorf("exit node n2, which offers none: dialling an Internet address: %v, want ErrExitNodeUnavailable", err)
	}
	if _, err := n3.SetPrefs(api.PrefsChange{ExitNode: ptr("nobody")}); err == nil {
		t.Error("SetPrefs took an exit node that is no peer")
	}
	if got := n3.Prefs().ExitNode; got != "n2" {
		t.Errorf("a refused SetPrefs changed the exit node to %q", got)
	}
}

func ptr[T any](v T) *T { return &v }

// TestUserspaceCannotOffer: a --userspace node has no kernel to forward
// with, so it refuses to offer routes or itself as exit node with glow set
// (its peers' traffic would go nowhere), and drops the offers of a state
// file that a run with a kernel TUN saved; it may still choose an exit
// node.
func TestUserspaceCannotOffer(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, prefsFile), []byte(`{"advertise_routes":["10.71.1.0/24"],"advertise_exit_node":true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testNode(t, "n1", func(c *Config) { c.StateDir, c.UserName = dir, "alice" })
	if off := n.Status().Self.Offered; len(off) != 0 {
		t.Errorf("a userspace node offers %v from its state file", off)
	}
	if _, err := n.SetPrefs(api.PrefsChange{AdvertiseExitNode: ptr(true)}); err == nil {
		t.Error("glow set --advertise-exit-node taken by a userspace node")
	}
	if _, err := n.SetPrefs(api.PrefsChange{AdvertiseRoutes: &[]netip.Prefix{netip.MustParsePrefix("10.71.1.0/24")}}); err == nil {
		t.Error("glow set --advertise-routes taken by a userspace node")
	}
	if off := n.Status().Self.Offered; len(off) != 0 {
		t.Errorf("a userspace node offers %v after refused glow sets", off)
	}
	if _, err := n.SetPrefs(api.PrefsChange{ExitNodeAllowLANAccess: ptr(true)}); err != nil {
		t.Errorf("glow set of a pref a userspace node may use: %v", err)
	}
}
