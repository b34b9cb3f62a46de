package tun

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"

	"glow/tun/firewall"
)

// glowTable returns the number of rules in table inet glow in the current
// netns, and whether the table exists.
func glowTable(t *testing.T) (rules int, ok bool) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == firewall.Table {
			rs, err := c.GetRules(tb, &nftables.Chain{Name: firewall.Chain, Table: tb})
			if err != nil {
				t.Fatal(err)
			}
			return len(rs), true
		}
	}
	return 0, false
}

// TestKernelFirewall: a kernel TUN with a firewall has table inet glow while
// open, SetRoutes adds its prefixes to it, Close removes it; a table left by
// a crashed daemon is replaced by the next OpenKernel, removed by
// RemoveStale once its interface is gone, and a live one is never touched.
func TestKernelFirewall(t *testing.T) {
	enterNewNetns(t)
	base := []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:676c:6f77::/48")}
	cfg := KernelConfig{Name: "glowfw0", Prefixes: []netip.Prefix{netip.MustParsePrefix("100.64.0.7/10")}, Firewall: base}
	k, err := OpenKernel(cfg)
	if err != nil {
		t.Fatalf("OpenKernel: %v", err)
	}
	defer k.Close()
	if n, ok := glowTable(t); !ok || n != 2+2*len(base) {
		t.Fatalf("after OpenKernel: table %v with %d rules, want %d", ok, n, 2+2*len(base))
	}
	friend := netip.MustParsePrefix("fd12:3456:789a::/48")
	if err := k.SetRoutes([]netip.Prefix{friend}); err != nil {
		t.Fatal(err)
	}
	if n, _ := glowTable(t); n != 2+2*(len(base)+1) {
		t.Errorf("after SetRoutes: %d rules, want %d", n, 2+2*(len(base)+1))
	}
	if got := k.fw.Prefixes(); !slices.Contains(got, friend) {
		t.Errorf("firewall prefixes %v lack the routed %v", got, friend)
	}

	// A second daemon's table in the same netns: refused while glowfw0 lives.
	if _, err := firewall.Install(firewall.Config{Interface: "glowfw1", Prefixes: base}); err == nil || !strings.Contains(err.Error(), "glowfw0") {
		t.Errorf("Install for another interface while glowfw0 exists: %v, want an error naming glowfw0", err)
	}
	if removed, err := firewall.RemoveStale(); err != nil || removed {
		t.Errorf("RemoveStale with glowfw0 alive: removed %v, %v; want nothing removed", removed, err)
	}

	// A crash: the TUN goes (its device closes), the table stays.
	k.dev.Close()
	if _, ok := glowTable(t); !ok {
		t.Fatal("table gone with the device: it must outlive a crash")
	}
	// The next daemon replaces it.
	k2, err := OpenKernel(KernelConfig{Name: "glowfw1", Firewall: base[:1]})
	if err != nil {
		t.Fatalf("OpenKernel after a crash: %v", err)
	}
	if n, ok := glowTable(t); !ok || n != 4 {
		t.Errorf("after OpenKernel over a stale table: %v, %d rules, want 4", ok, n)
	}
	// Crash again; glow down's repair removes it.
	k2.dev.Close()
	if removed, err := firewall.RemoveStale(); err != nil || !removed {
		t.Errorf("RemoveStale after a crash: removed %v, %v; want removed", removed, err)
	}
	if _, ok := glowTable(t); ok {
		t.Error("table still there after RemoveStale")
	}
	k2.Close()

	// A clean Close removes the table.
	k3, err := OpenKernel(KernelConfig{Name: "glowfw2", Firewall: base})
	if err != nil {
		t.Fatal(err)
	}
	if err := k3.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := glowTable(t); ok {
		t.Error("table still there after Close")
	}
	if removed, err := firewall.RemoveStale(); err != nil || removed {
		t.Errorf("RemoveStale with no table: %v, %v", removed, err)
	}
}
