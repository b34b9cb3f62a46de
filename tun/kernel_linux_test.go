package tun

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"glow/internal/leaktest"
	"glow/internal/testns"
	"glow/tun/tuntest"
	"glow/tun/userspace"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// enterNewNetns creates a fresh network namespace, moves the test's
// goroutine (locked to its thread) into it, and returns its name. Cleanup
// moves the thread back and deletes the namespace, even when the test fails
// (testns removes those of a killed run). It skips t when not root.
// Everything the test does on the thread then stays inside the namespace.
func enterNewNetns(t *testing.T) string {
	t.Helper()
	name := testns.New(t, "glowtun-")
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("netns.Get: %v", err)
	}
	target, err := netns.GetFromName(name)
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("netns %s: %v", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("enter netns %s: %v", name, err)
	}
	// Registered after the netns deletion, so it runs before it.
	t.Cleanup(func() {
		defer orig.Close()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with the test goroutine
			// instead of running other goroutines in the wrong netns.
			t.Errorf("return to original netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	})
	return name
}

type ipAddrJSON struct {
	IfName   string   `json:"ifname"`
	MTU      int      `json:"mtu"`
	Flags    []string `json:"flags"`
	LinkType string   `json:"link_type"`
	AddrInfo []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
		Tentative bool   `json:"tentative"`
		DADFailed bool   `json:"dadfailed"`
	} `json:"addr_info"`
}

type ipRouteJSON struct {
	Dst      string `json:"dst"`
	Protocol string `json:"protocol"`
	Dev      string `json:"dev"`
}

// ipJSON runs `ip -n ns -j args...` and decodes its output into v.
func ipJSON(t *testing.T, ns string, v any, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns, "-j"}, args...)...).Output()
	if err != nil {
		t.Fatalf("ip -n %s -j %s: %v", ns, strings.Join(args, " "), err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func linkExists(t *testing.T, ns, name string) bool {
	t.Helper()
	return exec.Command("ip", "-n", ns, "link", "show", "dev", name).Run() == nil
}

func TestKernel(t *testing.T) {
	ns := enterNewNetns(t)
	cfg := KernelConfig{
		Name: "glowtest0",
		MTU:  1380,
		Prefixes: []netip.Prefix{
			netip.MustParsePrefix("100.64.0.7/10"),
			netip.MustParsePrefix("fd7a:676c:6f77::7/48"),
		},
		ExtraAddrs: []netip.Addr{
			netip.MustParseAddr("100.100.100.53"),
			netip.MustParseAddr("fd00:676c:6f77::53"),
		},
	}
	k, err := OpenKernel(cfg)
	if err != nil {
		t.Fatalf("OpenKernel: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	if k.Name() != "glowtest0" || k.Device() == nil {
		t.Fatalf("Name %q Device %v", k.Name(), k.Device())
	}
	t.Logf("BatchSize %d (>1: virtio-net header offloads on)", k.Device().BatchSize())
	if k.Device().BatchSize() <= 1 {
		t.Errorf("BatchSize = %d, want > 1 (TUN offloads off?)", k.Device().BatchSize())
	}

	var links []ipAddrJSON
	ipJSON(t, ns, &links, "addr", "show", "dev", "glowtest0")
	if len(links) != 1 {
		t.Fatalf("ip addr: %d links", len(links))
	}
	l := links[0]
	if l.MTU != 1380 {
		t.Errorf("mtu %d, want 1380", l.MTU)
	}
	if !slices.Contains(l.Flags, "UP") {
		t.Errorf("flags %v, want UP", l.Flags)
	}
	got := map[string]bool{}
	for _, a := range l.AddrInfo {
		if strings.HasPrefix(a.Local, "fe80:") {
			continue // the kernel's own link-local address does its DAD in its own time
		}
		if a.Tentative || a.DADFailed {
			t.Errorf("address %s/%d is tentative or failed DAD", a.Local, a.PrefixLen)
		}
		got[fmt.Sprintf("%s/%d", a.Local, a.PrefixLen)] = true
	}
	for _, want := range []string{"100.64.0.7/10", "fd7a:676c:6f77::7/48", "100.100.100.53/32", "fd00:676c:6f77::53/128"} {
		if !got[want] {
			t.Errorf("address %s missing; have %v", want, got)
		}
	}

	routes := map[string]bool{}
	for _, fam := range []string{"-4", "-6"} {
		var rs []ipRouteJSON
		ipJSON(t, ns, &rs, fam, "route", "show", "dev", "glowtest0")
		for _, r := range rs {
			routes[r.Dst] = true
		}
	}
	for _, want := range []string{"100.64.0.0/10", "fd7a:676c:6f77::/48"} {
		if !routes[want] {
			t.Errorf("connected route %s missing; have %v", want, routes)
		}
	}

	// SetAddrs replaces the set, leaving link-local addresses alone.
	if err := k.SetAddrs([]netip.Prefix{netip.MustParsePrefix("100.64.0.8/10")}, nil); err != nil {
		t.Fatalf("SetAddrs: %v", err)
	}
	ipJSON(t, ns, &links, "addr", "show", "dev", "glowtest0")
	var now []string
	for _, a := range links[0].AddrInfo {
		if !strings.HasPrefix(a.Local, "fe80:") {
			now = append(now, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
		}
	}
	if !slices.Equal(now, []string{"100.64.0.8/10"}) {
		t.Errorf("after SetAddrs: %v, want [100.64.0.8/10]", now)
	}

	// A second daemon must not steal the interface.
	if k2, err := OpenKernel(cfg); err == nil {
		k2.Close()
		t.Errorf("second OpenKernel with the same name succeeded")
	} else if !strings.Contains(err.Error(), "glowtest0") {
		t.Errorf("second OpenKernel error does not name the interface: %v", err)
	} else {
		t.Logf("second OpenKernel: %v", err)
	}

	if err := k.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := k.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if linkExists(t, ns, "glowtest0") {
		t.Errorf("interface still exists after Close")
	}
	if err := k.SetAddrs(nil, nil); err == nil {
		t.Errorf("SetAddrs after Close succeeded")
	}
}

func TestKernelExistingInterface(t *testing.T) {
	ns := enterNewNetns(t)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	cfg := KernelConfig{Prefixes: []netip.Prefix{netip.MustParsePrefix("100.64.0.7/10")}}

	// A persistent TUN that a process holds is left alone...
	run("tuntap", "add", "dev", "glow0", "mode", "tun")
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ifr, _ := unix.NewIfreq("glow0")
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Fatalf("attach to glow0: %v", err)
	}
	if k, err := OpenKernel(cfg); err == nil {
		k.Close()
		unix.Close(fd)
		t.Fatalf("OpenKernel over a TUN held by a process succeeded")
	} else {
		t.Logf("over a held persistent TUN: %v", err)
	}
	unix.Close(fd)
	if !linkExists(t, ns, "glow0") {
		t.Fatalf("the held TUN was removed")
	}

	// ...and once nobody holds it (what a crash of a daemon using
	// persistent TUNs leaves), it is removed and replaced.
	k, err := OpenKernel(cfg)
	if err != nil {
		t.Fatalf("OpenKernel over a stale TUN: %v", err)
	}
	if k.Name() != "glow0" {
		t.Errorf("Name %q, want the default glow0", k.Name())
	}
	k.Close()
	if linkExists(t, ns, "glow0") {
		t.Errorf("glow0 still exists after Close")
	}

	// Anything else of that name is left alone.
	for _, kind := range [][]string{
		{"link", "add", "glow0", "type", "bridge"},
		{"tuntap", "add", "dev", "glow0", "mode", "tap"},
	} {
		run(kind...)
		if k, err := OpenKernel(cfg); err == nil {
			k.Close()
			t.Fatalf("OpenKernel over %v succeeded", kind)
		} else if !strings.Contains(err.Error(), "glow0") {
			t.Errorf("error does not name the interface: %v", err)
		} else {
			t.Logf("over %v: %v", kind, err)
		}
		if !linkExists(t, ns, "glow0") {
			t.Fatalf("the existing link %v was removed", kind)
		}
		run("link", "del", "glow0")
	}
}

func TestKernelConfigValidation(t *testing.T) {
	for _, cfg := range []KernelConfig{
		{Name: "a-name-that-is-too-long"},
		{MTU: 100},
		{MTU: 1000, Prefixes: []netip.Prefix{netip.MustParsePrefix("fd7a::1/48")}},
		{Prefixes: []netip.Prefix{{}}},
		{ExtraAddrs: []netip.Addr{{}}},
	} {
		// Only the validation: this test may run outside a netns.
		if _, err := cfg.withDefaults(); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

// TestKernelToNetstack sends TCP from a kernel socket in the namespace,
// through the kernel TUN (with its offloads), into a netstack joined to it
// back to back, and checks the echo.
func TestKernelToNetstack(t *testing.T) {
	leaktest.Check(t)
	enterNewNetns(t)
	k, err := OpenKernel(KernelConfig{Name: "glowtest1", Prefixes: []netip.Prefix{
		netip.MustParsePrefix("100.64.0.7/10"),
		netip.MustParsePrefix("fd7a:676c:6f77::7/48"),
	}})
	if err != nil {
		t.Fatalf("OpenKernel: %v", err)
	}
	s, err := userspace.Open([]netip.Addr{addrB4, addrB6}, 0)
	if err != nil {
		k.Close()
		t.Fatal(err)
	}
	ck := tuntest.NewCounting(k.Device())
	wait := tuntest.Pipe(ck, s.Device())
	t.Cleanup(func() {
		k.Close()
		s.Close()
		wait()
	})
	big := make([]byte, 1<<20) // ~750 segments each way: TSO and GRO at work
	rand.Read(big)
	for _, a := range []netip.Addr{addrB4, addrB6} {
		ln, err := s.Net().ListenTCPAddrPort(netip.AddrPortFrom(a, 7))
		if err != nil {
			t.Fatal(err)
		}
		serveEcho(t, ln)
		// Dialled from this goroutine, locked in the namespace.
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(a, 7).String(), 5*time.Second)
		if err != nil {
			t.Fatalf("dial %v through the TUN: %v", a, err)
		}
		checkEcho(t, c.(*net.TCPConn), big)
		c.Close()
	}
	t.Logf("kernel TUN: %d packets read, %d written (1 MiB each way, twice; fewer packets than MTU-sized segments means TSO/GRO)", ck.Reads.Load(), ck.Writes.Load())
}

// TestKernelUnmonitored: the device is wireguard-go's NativeTun without its
// monitors, so an idle daemon is not woken every second by the null write
// of CreateTUN's status poll, and no thread sits in its netlink listener;
// the MTU wireguard-go reads is still the configured one.
func TestKernelUnmonitored(t *testing.T) {
	enterNewNetns(t)
	k, err := OpenKernel(KernelConfig{Name: "glowtest0", MTU: 1380, Prefixes: []netip.Prefix{netip.MustParsePrefix("100.64.0.7/10")}})
	if err != nil {
		t.Fatalf("OpenKernel: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, monitor := range []string{"routineHackListener", "routineNetlinkListener"} {
		if strings.Contains(stacks, monitor) {
			t.Errorf("wireguard-go's %s runs", monitor)
		}
	}
	if mtu, err := k.Device().MTU(); err != nil || mtu != 1380 {
		t.Errorf("device MTU %d, %v; want 1380", mtu, err)
	}
	if k.Device().BatchSize() <= 1 {
		t.Errorf("BatchSize = %d, want > 1 (TUN offloads off?)", k.Device().BatchSize())
	}
}
