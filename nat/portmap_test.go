package nat_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"glow/internal/leaktest"
	"glow/internal/testns"
	"glow/nat"
	"glow/nat/igdtest"
)

// The PortMapper tests that send packets run in a network namespace that
// the test creates: the port mapping library sends to the well-known ports
// (5351, 1900) of the gateway and multicasts SSDP, which must reach neither
// the machine's own services nor a real router. The test re-executes its
// own binary inside the namespace (a Go process cannot move all of its
// threads into another namespace), with netnsEnv naming its gateway's
// namespace.
const netnsEnv = "GLOW_NAT_TEST_NETNS"

var (
	testGW   = netip.MustParseAddr("192.168.77.1")
	testSelf = netip.MustParseAddr("192.168.77.2")
)

// inNetns reports whether the test runs inside its namespace. If not, it
// creates one (named glownat-PID-N by testns, deleted in Cleanup) with a LAN where
// testGW and testSelf live, runs the test there and reports false; the
// caller then returns. Without root it skips, loudly.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) != "" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to create a network namespace (the port mapping library talks to ports 5351/1900 and multicasts SSDP)")
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Two namespaces joined by a veth pair: the host (name) and its
	// gateway (gwName). Neither has a route anywhere else.
	name, gwName := testns.New(t, "glownat-"), testns.New(t, "glownat-")
	run("-n", name, "link", "add", "lan0", "type", "veth", "peer", "name", "gw0", "netns", gwName)
	run("-n", name, "addr", "add", testSelf.String()+"/24", "dev", "lan0")
	run("-n", gwName, "addr", "add", testGW.String()+"/24", "dev", "gw0")
	run("-n", name, "link", "set", "lan0", "up")
	run("-n", gwName, "link", "set", "gw0", "up")

	cmd := exec.Command("ip", "netns", "exec", name, os.Args[0],
		"-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), netnsEnv+"="+gwName)
	out, err := cmd.CombinedOutput()
	t.Logf("in namespace %s:\n%s", name, out)
	if err != nil {
		t.Fatalf("test in namespace %s: %v", name, err)
	}
	return false
}

// inGatewayNetns runs f with the calling thread in the gateway's
// namespace: sockets that f creates stay there, whichever thread later
// uses them. Only for tests that inNetns started.
func inGatewayNetns(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	gw, err := os.Open("/run/netns/" + os.Getenv(netnsEnv))
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if err := unix.Setns(int(gw.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatalf("setns to the gateway's namespace: %v", err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime then retires it.
			t.Fatalf("setns back: %v", err)
		}
		runtime.UnlockOSThread()
	}()
	f()
}

func testGateway() (gw, self netip.Addr, ok bool) { return testGW, testSelf, true }

func TestPortMapperProtocols(t *testing.T) {
	leaktest.Check(t)
	if !inNetns(t) {
		return
	}
	const localPort = 41641
	for _, tc := range []struct {
		name string
		opts igdtest.Options
		want nat.PortMapProbe
	}{
		{"NAT-PMP", igdtest.Options{PMP: true}, nat.PortMapProbe{PMP: true}},
		{"PCP", igdtest.Options{PCP: true}, nat.PortMapProbe{PCP: true}},
		{"UPnP", igdtest.Options{UPnP: true}, nat.PortMapProbe{UPnP: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Addr = testGW
			tc.opts.Logf = t.Logf
			var gw *igdtest.Gateway
			var err error
			inGatewayNetns(t, func() { gw, err = igdtest.New(tc.opts) })
			if err != nil {
				t.Fatal(err)
			}
			defer gw.Close()

			changes := make(chan netip.AddrPort, 10)
			pm, err := nat.NewPortMapper(nat.PortMapConfig{
				LocalPort: localPort,
				Logf:      t.Logf,
				Gateway:   testGateway,
				OnChange:  func(ap netip.AddrPort) { changes <- ap },
			})
			if err != nil {
				t.Fatal(err)
			}
			defer pm.Close()

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			probe, err := pm.Probe(ctx)
			if err != nil {
				t.Fatalf("Probe: %v", err)
			}
			if probe != tc.want {
				t.Errorf("Probe = %v, want %v", probe, tc.want)
			}

			ext, err := pm.Mapping(ctx)
			if err != nil {
				t.Fatalf("Mapping: %v", err)
			}
			if ext.Addr() != gw.ExternalIP() || ext.Port() == 0 {
				t.Errorf("Mapping = %v, want %v and a port", ext, gw.ExternalIP())
			}
			select {
			case got := <-changes:
				if got != ext {
					t.Errorf("OnChange(%v), want %v", got, ext)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("OnChange not called")
			}
			ms := gw.Mappings()
			if len(ms) != 1 || ms[0].Internal != netip.AddrPortFrom(testSelf, localPort) || ms[0].External != ext {
				t.Errorf("gateway mappings = %+v, want one %v -> %v", ms, ext, netip.AddrPortFrom(testSelf, localPort))
			}

			before := gw.Counters()
			if again, err := pm.Mapping(ctx); err != nil || again != ext {
				t.Errorf("second Mapping = %v, %v; want cached %v", again, err, ext)
			}
			if after := gw.Counters(); after != before {
				t.Errorf("cached Mapping sent requests: %+v -> %+v", before, after)
			}

			if err := pm.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			// NAT-PMP and PCP releases are fire-and-forget datagrams.
			deadline := time.Now().Add(30 * time.Second) // bounds a failing test
			for len(gw.Mappings()) != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			c := gw.Counters()
			t.Logf("gateway counters: %+v", c)
			if ms := gw.Mappings(); len(ms) != 0 {
				t.Errorf("after Close the gateway still maps %+v", ms)
			}
			var maps, deletes int
			switch {
			case tc.opts.PMP:
				maps, deletes = c.PMPMap, c.PMPDelete
			case tc.opts.PCP:
				maps, deletes = c.PCPMap, c.PCPDelete
			case tc.opts.UPnP:
				maps, deletes = c.UPnPAdd, c.UPnPDelete
			}
			if maps != 1 || deletes != 1 {
				t.Errorf("%s: %d map and %d delete requests, want 1 and 1", tc.name, maps, deletes)
			}
			if total := c.PMPMap + c.PCPMap + c.UPnPAdd; total != 1 {
				t.Errorf("%d map requests over all protocols, want 1", total)
			}
			if _, err := pm.Mapping(ctx); !errors.Is(err, nat.ErrPortMapperClosed) {
				t.Errorf("Mapping after Close: %v, want ErrPortMapperClosed", err)
			}
		})
	}
}

func TestPortMapperNoGatewayService(t *testing.T) {
	leaktest.Check(t)
	if !inNetns(t) {
		return
	}
	// The gateway exists (it answers ARP) but runs no service.
	pm, err := nat.NewPortMapper(nat.PortMapConfig{LocalPort: 41641, Logf: t.Logf, Gateway: testGateway})
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	// The context only bounds a failing test: Probe and Mapping must give
	// up on their own (the gateway's port unreachable, their own retry
	// limits), before it ends.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	probe, err := pm.Probe(ctx)
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if probe.Any() || ctx.Err() != nil {
		t.Errorf("Probe = %v (context: %v), want none, found without waiting for the context", probe, ctx.Err())
	}

	ext, err := pm.Mapping(ctx)
	if !errors.Is(err, nat.ErrNoPortMapping) || ctx.Err() != nil {
		t.Errorf("Mapping = %v, %v (context: %v); want ErrNoPortMapping before the context ends", ext, err, ctx.Err())
	}
	t.Logf("Mapping: %v", err)
}

// The tests below send nothing: no namespace needed.

func TestPortMapperNoGateway(t *testing.T) {
	leaktest.Check(t)
	pm, err := nat.NewPortMapper(nat.PortMapConfig{
		LocalPort: 41641,
		Gateway:   func() (gw, self netip.Addr, ok bool) { return },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if p, err := pm.Probe(ctx); err == nil || p.Any() {
		t.Errorf("Probe without gateway = %v, %v; want an error", p, err)
	}
	if _, err := pm.Mapping(ctx); !errors.Is(err, nat.ErrNoPortMapping) {
		t.Errorf("Mapping without gateway: %v, want ErrNoPortMapping", err)
	}
	if err := pm.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := pm.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := pm.Probe(ctx); !errors.Is(err, nat.ErrPortMapperClosed) {
		t.Errorf("Probe after Close: %v", err)
	}
}

func TestPortMapperConfig(t *testing.T) {
	leaktest.Check(t)
	if _, err := nat.NewPortMapper(nat.PortMapConfig{}); err == nil {
		t.Error("NewPortMapper without LocalPort succeeded")
	}
}
