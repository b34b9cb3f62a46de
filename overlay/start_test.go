package overlay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"glow/internal/leaktest"
	"glow/internal/testns"
	"glow/nat"
	"glow/nat/igdtest"
)

// Start's teardown, on a real kernel: a node with a kernel TUN, its
// firewall table, the system resolver pointed at glow and a port mapping
// held at a (fake) gateway, whose start then fails at the port mapper, at
// DNS and at TURN, or succeeds and is closed. After each the network
// namespace must be as it was: resolv.conf byte for byte, links, routes and
// nftables rules, the gateway's mappings, and no goroutine left.
//
// The test runs in a network namespace it creates (startNetnsEnv names its
// gateway's namespace):
// the port mapping library talks to the gateway of the routing table on its
// well-known ports, and `ip netns exec` bind-mounts a resolv.conf of the
// namespace's own over /etc/resolv.conf, so the machine's resolver, routes
// and gateway are never touched. The test re-executes its own binary in the
// namespace (a Go process cannot move all of its threads). Without root it
// skips, loudly.
const startNetnsEnv = "GLOW_OVERLAY_START_NETNS"

var (
	startGW   = netip.MustParseAddr("192.168.78.1")
	startSelf = netip.MustParseAddr("192.168.78.2")
)

// inStartNetns reports whether the test runs inside its namespace. If not,
// it creates two (glowstart-PID-N, by testns, joined by a veth pair,
// deleted with their /etc/netns directories in Cleanup), runs the test
// there and reports false; the caller then returns.
func inStartNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(startNetnsEnv) != "" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root for a network namespace with a kernel TUN, a resolv.conf of its own and a fake gateway")
	}
	for _, prog := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("SKIPPED: needs %s: %v", prog, err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	name, gwName := testns.New(t, "glowstart-"), testns.New(t, "glowstart-")
	// The namespace's own resolv.conf, bind-mounted by `ip netns exec`.
	etc := filepath.Join("/etc/netns", name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"),
		[]byte("# "+name+" (TestAttackStartUnwind)\nnameserver 192.168.78.1\nsearch example.test\noptions ndots:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("-n", name, "link", "add", "lan0", "type", "veth", "peer", "name", "gw0", "netns", gwName)
	// No IPv6 link-local address: its routes would appear when DAD ends,
	// in the middle of a comparison.
	run("-n", name, "link", "set", "lan0", "addrgenmode", "none")
	run("-n", name, "addr", "add", startSelf.String()+"/24", "dev", "lan0")
	run("-n", gwName, "addr", "add", startGW.String()+"/24", "dev", "gw0")
	run("-n", name, "link", "set", "lan0", "up")
	run("-n", gwName, "link", "set", "gw0", "up")
	run("-n", name, "route", "add", "default", "via", startGW.String())

	cmd := exec.Command("ip", "netns", "exec", name, os.Args[0],
		"-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), startNetnsEnv+"="+gwName)
	out, err := cmd.CombinedOutput()
	t.Logf("in namespace %s:\n%s", name, out)
	if err != nil {
		t.Fatalf("test in namespace %s: %v", name, err)
	}
	return false
}

// inStartGatewayNetns runs f with the calling thread in the gateway's
// namespace: the sockets f creates stay there.
func inStartGatewayNetns(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	gw, err := os.Open("/run/netns/" + os.Getenv(startNetnsEnv))
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if err := unix.Setns(int(gw.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatalf("setns to the gateway's namespace: %v", err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			t.Fatalf("setns back: %v", err) // the thread stays locked and is retired
		}
		runtime.UnlockOSThread()
	}()
	f()
}

// systemState is what a node may change in its network namespace and must
// put back: the resolver configuration, links, routes, nftables rules.
func systemState(t *testing.T) map[string]string {
	t.Helper()
	st := map[string]string{}
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	st["resolv.conf"] = string(b)
	for name, cmd := range map[string][]string{
		"links":         {"ip", "-o", "link", "show"},
		"routes (IPv4)": {"ip", "-4", "route", "show", "table", "all"},
		"routes (IPv6)": {"ip", "-6", "route", "show", "table", "all"},
		"nftables":      {"nft", "list", "ruleset"},
	} {
		out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd, " "), err, out)
		}
		st[name] = string(out)
	}
	return st
}

// changedLines lists the lines of after that before lacks (+) and the
// lines of before that after lacks (-).
func changedLines(before, after string) []string {
	b, a := strings.Split(before, "\n"), strings.Split(after, "\n")
	var out []string
	for _, l := range a {
		if !slices.Contains(b, l) {
			out = append(out, "+ "+l)
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			out = append(out, "- "+l)
		}
	}
	return out
}

func TestAttackStartUnwind(t *testing.T) {
	if !inStartNetns(t) {
		return
	}
	var gw *igdtest.Gateway
	var err error
	inStartGatewayNetns(t, func() { gw, err = igdtest.New(igdtest.Options{Addr: startGW, PMP: true, Logf: t.Logf}) })
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()

	// The node's port mapper: it fails, or it is the real one and holds
	// a mapping at the gateway before Start goes on, so that the failure
	// comes while the mapping is held.
	var failPortMap bool
	var mapped atomic.Int32
	defer func(orig func(nat.PortMapConfig) (*nat.PortMapper, error)) { newPortMapper = orig }(newPortMapper)
	newPortMapper = func(cfg nat.PortMapConfig) (*nat.PortMapper, error) {
		if failPortMap {
			return nil, errors.New("test: the port mapper fails")
		}
		pm, err := nat.NewPortMapper(cfg)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pm.Mapping(ctx); err != nil {
			pm.Close()
			return nil, fmt.Errorf("test: the fake gateway made no mapping: %w", err)
		}
		mapped.Add(1)
		return pm, nil
	}

	// A UDP address in use, for the TURN server.
	taken, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, cfg *Config)
		wantErr string // "" for none
		mapped  bool   // a mapping was held when Start failed
	}{
		{"port-mapper", func(t *testing.T, cfg *Config) { failPortMap = true }, "test: the port mapper fails", false},
		{"dns", func(t *testing.T, cfg *Config) {
			// A damaged resolv.conf backup marker: DNS set-up refuses
			// to go on (it cannot undo a previous run).
			if err := os.WriteFile(filepath.Join(cfg.StateDir, "resolv.conf.glow.json"), []byte("{damaged"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "DNS set-up", true},
		{"turn", func(t *testing.T, cfg *Config) {
			// A TURN client for a server that never answers, and a
			// TURN server on an address in use.
			cfg.TURN = []string{"turn://u:p@127.0.0.1:9"}
			cfg.TURNServer = taken.LocalAddr().String()
			cfg.TURNUsers = map[string]string{"u": "p"}
		}, "TURN server on", true},
		// No failure: Close runs the same teardown.
		{"close", func(t *testing.T, cfg *Config) {}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaktest.Check(t)
			failPortMap = false
			mappedBefore := mapped.Load()
			cfg := Config{
				StateDir: t.TempDir(), UserName: "alice", NodeName: "n1",
				Random: true, NoDiscovery: true, Logf: t.Logf,
				HostAddrs: func() []netip.Addr { return []netip.Addr{startSelf} },
			}
			tc.prepare(t, &cfg)
			before := systemState(t)
			mappingsBefore := gw.Mappings()

			n, err := Start(cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Start: %v", err)
			case tc.wantErr == "":
				// Up: the resolver names glow, the TUN and its
				// firewall are there; Close must undo all of it.
				up := systemState(t)
				for _, k := range []string{"resolv.conf", "links", "nftables"} {
					if up[k] == before[k] {
						t.Errorf("%s unchanged while the node is up:\n%s", k, up[k])
					}
				}
				n.Close()
			case err == nil:
				n.Close()
				t.Fatalf("Start succeeded, want an error with %q", tc.wantErr)
			case !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("Start: %v, want an error with %q", err, tc.wantErr)
			default:
				t.Logf("Start: %v", err)
			}
			if got := mapped.Load() > mappedBefore; got != tc.mapped {
				t.Fatalf("a mapping was held when Start failed: %v, want %v", got, tc.mapped)
			}

			after := systemState(t)
			left := 0
			for _, k := range slices.Sorted(maps.Keys(before)) {
				if d := changedLines(before[k], after[k]); len(d) > 0 {
					left++
					t.Errorf("%s not as it was after the failed Start:\n%s", k, strings.Join(d, "\n"))
				}
			}
			if m := gw.Mappings(); len(m) != len(mappingsBefore) {
				left++
				t.Errorf("the gateway holds %d mappings after the failed Start, %d before: %+v", len(m), len(mappingsBefore), m)
			}
			t.Logf("%s: %d of resolv.conf, links, routes, nftables, mappings left changed", tc.name, left)
		})
	}
}
