package tun

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestKernelRouting drives the routes and rules the node asks the kernel
// for, in a namespace of its own, and reads them back with ip(8): SetRoutes
// (friends' prefixes, protocol static), SetSubnetRoutes (other nodes' LANs,
// protocol 0x67), SetExit (glow's table and four rules per family, with and
// without the host's LAN kept out), and RepairRouting after a crash. Each
// method replaces only its own routes, whatever the others hold.
func TestKernelRouting(t *testing.T) {
	ns := enterNewNetns(t)
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	// The host's LAN: a veth interface with a prefix of each family.
	ip("link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
	ip("addr", "add", "192.168.77.1/24", "dev", "lan0")
	ip("addr", "add", "fd77::1/64", "dev", "lan0", "nodad")
	ip("link", "set", "lan0", "up")
	ip("link", "set", "lan1", "up")

	self4, self6 := netip.MustParseAddr("100.64.0.7"), netip.MustParseAddr("fd7a:676c:6f77::7")
	k, err := OpenKernel(KernelConfig{Name: "glowtest0", Prefixes: []netip.Prefix{
		netip.PrefixFrom(self4, 10), netip.PrefixFrom(self6, 48)}})
	if err != nil {
		t.Fatalf("OpenKernel: %v", err)
	}
	t.Cleanup(func() { k.Close() })

	type routeJSON struct {
		Type     string `json:"type"`
		Dst      string `json:"dst"`
		Dev      string `json:"dev"`
		Protocol string `json:"protocol"`
		PrefSrc  string `json:"prefsrc"`
	}
	// routes returns "type dst dev proto src" for each route of table whose
	// protocol is proto ("" for any), sorted.
	routes := func(table, proto string) []string {
		t.Helper()
		var out []string
		for _, fam := range []string{"-4", "-6"} {
			var rs []routeJSON
			args := []string{"-j", fam, "route", "show", "table", table}
			if proto != "" {
				args = append(args, "proto", proto)
			}
			if err := json.Unmarshal([]byte(ip(args...)), &rs); err != nil {
				t.Fatalf("ip %v: %v", args, err)
			}
			for _, r := range rs {
				typ := r.Type
				if typ == "" {
					typ = "unicast"
				}
				out = append(out, strings.TrimSpace(fmt.Sprintf("%s %s %s %s", typ, r.Dst, r.Dev, r.PrefSrc)))
			}
		}
		slices.Sort(out)
		return out
	}
	want := func(what string, got []string, want ...string) {
		t.Helper()
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", what, got, want)
		}
	}
	type ruleJSON struct {
		Priority int    `json:"priority"`
		Table    string `json:"table"`
		Action   string `json:"action"`
		FwMark   string `json:"fwmark"`
		FwMask   string `json:"fwmask"`
	}
	// rules returns glow's rules (priorities 5200-5299) of both families.
	rules := func() []string {
		t.Helper()
		var out []string
		for _, fam := range []string{"-4", "-6"} {
			var rs []ruleJSON
			if err := json.Unmarshal([]byte(ip("-j", fam, "rule", "show")), &rs); err != nil {
				t.Fatalf("ip rule: %v", err)
			}
			for _, r := range rs {
				if r.Priority >= 5200 && r.Priority < 5300 {
					what := "lookup " + r.Table
					if r.Action != "" {
						what = r.Action
					}
					out = append(out, strings.TrimSpace(fmt.Sprintf("%s %d %s %s/%s", fam, r.Priority, what, r.FwMark, r.FwMask)))
				}
			}
		}
		slices.Sort(out)
		return out
	}
	exitRulesWant := func() []string {
		var out []string
		for _, fam := range []string{"-4", "-6"} {
			out = append(out,
				fam+" 5210 lookup main 0x80000/0xff0000",
				fam+" 5230 lookup default 0x80000/0xff0000",
				fam+" 5250 unreachable 0x80000/0xff0000",
				fam+" 5270 lookup 5263 /")
		}
		return out
	}

	friends := []netip.Prefix{netip.MustParsePrefix("fd7a:676c:1::/64"), netip.MustParsePrefix("100.80.0.0/16")}
	if err := k.SetRoutes(friends, self4, self6); err != nil {
		t.Fatalf("SetRoutes: %v", err)
	}
	subnets := []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24"), netip.MustParsePrefix("fd09::/64")}
	if err := k.SetSubnetRoutes(subnets, self4, self6); err != nil {
		t.Fatalf("SetSubnetRoutes: %v", err)
	}
	if err := k.SetExit(true, true, self4, self6); err != nil {
		t.Fatalf("SetExit: %v", err)
	}
	want("static routes", routes("main", "static"),
		"unicast 100.80.0.0/16 glowtest0 100.64.0.7", "unicast fd7a:676c:1::/64 glowtest0 fd7a:676c:6f77::7")
	want("subnet routes", routes("main", "103"),
		"unicast 10.9.0.0/24 glowtest0 100.64.0.7", "unicast fd09::/64 glowtest0 fd7a:676c:6f77::7")
	exitWithLAN := []string{"unicast default glowtest0 100.64.0.7", "unicast default glowtest0 fd7a:676c:6f77::7",
		"throw 192.168.77.0/24", "throw fd77::/64 lo"} // the kernel shows IPv6 non-unicast routes on lo
	want("exit table, LAN allowed", routes("5263", ""), exitWithLAN...)
	want("exit rules", rules(), exitRulesWant()...)

	// Each method replaces only its own routes.
	if err := k.SetSubnetRoutes(subnets[:1], self4, self6); err != nil {
		t.Fatalf("SetSubnetRoutes: %v", err)
	}
	if err := k.SetRoutes(nil); err != nil {
		t.Fatalf("SetRoutes: %v", err)
	}
	want("static routes after SetRoutes(nil)", routes("main", "static"))
	want("subnet routes after one left", routes("main", "103"), "unicast 10.9.0.0/24 glowtest0 100.64.0.7")
	want("exit table untouched", routes("5263", ""), exitWithLAN...)

	// Without the LAN: the throw routes go, the default routes and rules
	// stay (turning it on twice adds no second rule).
	if err := k.SetExit(true, false, self4, self6); err != nil {
		t.Fatalf("SetExit without LAN: %v", err)
	}
	want("exit table, no LAN", routes("5263", ""),
		"unicast default glowtest0 100.64.0.7", "unicast default glowtest0 fd7a:676c:6f77::7")
	want("exit rules, second SetExit", rules(), exitRulesWant()...)

	if err := k.SetExit(false, false); err != nil {
		t.Fatalf("SetExit off: %v", err)
	}
	want("exit table off", routes("5263", ""))
	want("exit rules off", rules())
	want("subnet routes after exit off", routes("main", "103"), "unicast 10.9.0.0/24 glowtest0 100.64.0.7")

	// After a crash: rules whose table still holds routes belong to a live
	// daemon and stay; with the table empty they are removed.
	if err := k.SetExit(true, false, self4, self6); err != nil {
		t.Fatalf("SetExit: %v", err)
	}
	if changed, err := RepairRouting(""); err != nil || changed {
		t.Errorf("RepairRouting with a live exit table = %v, %v; want false, nil", changed, err)
	}
	want("exit rules kept for a live daemon", rules(), exitRulesWant()...)
	ip("-4", "route", "flush", "table", "5263")
	ip("-6", "route", "flush", "table", "5263")
	if changed, err := RepairRouting(""); err != nil || !changed {
		t.Errorf("RepairRouting after the table emptied = %v, %v; want true, nil", changed, err)
	}
	want("exit rules after repair", rules())

	if err := k.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	want("routes after Close", routes("main", "103"))
}
