package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"glow/e2e/lab"
)

var (
	wgGoOnce sync.Once
	wgGoBin  string
	wgGoErr  error
)

// wireguardGo returns the reference wireguard-go binary (go.mod's version,
// built once per test binary; GLOW_WG_BIN=/path uses a prebuilt one), as
// bench runs it for its plain WireGuard line.
func wireguardGo(t *testing.T) string {
	t.Helper()
	wgGoOnce.Do(func() {
		if wgGoBin = os.Getenv("GLOW_WG_BIN"); wgGoBin != "" {
			return
		}
		wgGoBin, wgGoErr = goBuild(filepath.Join(buildDir, "wireguard-go"), "golang.zx2c4.com/wireguard")
	})
	if wgGoErr != nil {
		t.Fatalf("no wireguard-go binary: %v", wgGoErr)
	}
	return wgGoBin
}

// wgQuickConf is what the test reads of a wg-quick configuration: the
// [Interface] lines wg-quick acts on itself (wg-quick strip drops them).
type wgQuickConf struct {
	addrs   []netip.Prefix
	dns     []netip.Addr
	allowed []netip.Prefix
}

func parseWGQuick(t *testing.T, text string) wgQuickConf {
	t.Helper()
	var c wgQuickConf
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			switch strings.TrimSpace(k) {
			case "Address":
				c.addrs = append(c.addrs, netip.MustParsePrefix(f))
			case "DNS":
				if a, err := netip.ParseAddr(f); err == nil {
					c.dns = append(c.dns, a)
				}
			case "AllowedIPs":
				c.allowed = append(c.allowed, netip.MustParsePrefix(f))
			}
		}
	}
	if len(c.addrs) == 0 || len(c.dns) == 0 || len(c.allowed) == 0 {
		t.Fatalf("configuration without Address, DNS or AllowedIPs:\n%s", text)
	}
	return c
}

// plainWireGuard brings up interface ifname in h from a wg-quick
// configuration, as wg-quick would but without it (it wants resolvconf):
// wireguard-go, `wg-quick strip` piped into `wg setconf`, then the
// Address lines as addresses and the AllowedIPs as routes.
func plainWireGuard(t *testing.T, h *lab.Host, ifname, config string) wgQuickConf {
	t.Helper()
	c := parseWGQuick(t, config)
	dir := t.TempDir()
	conf := filepath.Join(dir, ifname+".conf")
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	stripped := h.MustRun("wg-quick", "strip", conf)
	if strings.Contains(stripped, "Address") || strings.Contains(stripped, "DNS") {
		t.Fatalf("wg-quick strip left wg-quick's own lines:\n%s", stripped)
	}
	plain := filepath.Join(dir, "plain.conf")
	if err := os.WriteFile(plain, []byte(stripped), 0o600); err != nil {
		t.Fatal(err)
	}
	// /var/run/wireguard is shared by every namespace: the name is unique.
	sock := "/var/run/wireguard/" + ifname + ".sock"
	os.Remove(sock)
	t.Cleanup(func() { os.Remove(sock) })
	wg, err := h.Start("env", "WG_PROCESS_FOREGROUND=1", wireguardGo(t), "-f", ifname)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFor(10*time.Second, 50*time.Millisecond, func() error {
		_, err := os.Stat(sock)
		return err
	}); err != nil {
		t.Fatalf("wireguard-go did not start: %v\n%s", err, wg.Output())
	}
	h.MustRun("wg", "setconf", ifname, plain)
	for _, a := range c.addrs {
		h.MustRun("ip", "addr", "add", a.String(), "dev", ifname)
	}
	h.MustRun("ip", "link", "set", ifname, "mtu", "1420", "up")
	for _, p := range c.allowed {
		h.MustRun("ip", "route", "add", p.String(), "dev", ifname)
	}
	return c
}

// TestDevices: a plain WireGuard device, configured only from `glow device
// add`'s output. The VPS (public; the admin) is the device's via node, the
// NAS sits behind its home NAT, the device (the reference wireguard-go,
// set up with wg(8) from `wg-quick strip`) in a cafe behind another NAT.
// The device pings the NAS by overlay address (through the VPS) and
// resolves nas.alice.glow at the DNS address of its configuration (the
// VPS's resolver, over the tunnel); the NAS pings the device by name
// (phone, through its glow resolver). After `glow device remove` the
// device's packets reach the VPS and are dropped there: it reaches nothing,
// and no node names it.
func TestDevices(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	wireguardGo(t)
	vpsH := publicHost(l, "vps")
	_, nasH := siteHost(l, "home", lab.EasyNAT)
	cafeR, cafeH := siteHost(l, "cafe", lab.EasyNAT)
	vps, nas := newNode(t, vpsH, "vps"), newNode(t, nasH, "nas")
	vps.up("--user", "alice", "--name", "vps")
	// The NAS keeps glow's resolver (no --no-dns): its programs resolve
	// glow names, as a user's would.
	res := nas.mustGlow(60*time.Second, "up", "--name", "nas", "--join", vps.invite())
	t.Logf("nas: glow up:\n%s%s", res.Stdout, res.Stderr)
	nasV4, nasV6 := nas.ips()
	if _, err := waitPing(vpsH, nasV4, reachTimeout); err != nil {
		t.Fatalf("vps cannot reach the nas: %v", err)
	}

	// Only the admin adds devices; a bad name is a usage the daemon refuses.
	if res, err := nas.glow(context.Background(), "device", "add", "phone"); err == nil {
		t.Fatalf("the nas (no user key) added a device:\n%s", res.Stdout)
	}
	added := vps.mustGlow(20*time.Second, "device", "add", "phone", "--via", "vps", "--qr")
	t.Logf("glow device add phone --via vps --qr:\n%s%s", added.Stdout, added.Stderr)
	if !strings.Contains(added.Stderr, "█") {
		t.Errorf("--qr printed no QR code on stderr")
	}
	config := added.Stdout
	if !strings.Contains(config, "Endpoint = "+vpsH.IP().String()+":") {
		t.Fatalf("the configuration does not name the vps's public endpoint %s:\n%s", vpsH.IP(), config)
	}
	phoneV4, phoneV6 := vps.ips("phone")
	ifname := "gd" + strconv.Itoa(os.Getpid()%1000000)
	c := plainWireGuard(t, cafeH, ifname, config)
	if c.addrs[0].Addr() != phoneV4 || c.addrs[1].Addr() != phoneV6 {
		t.Fatalf("configuration addresses %v, glow ip phone %v %v", c.addrs, phoneV4, phoneV6)
	}

	// The device reaches the NAS (not its via node) by overlay address.
	took, err := waitPing(cafeH, nasV4, reachTimeout)
	if err != nil {
		t.Fatalf("the device cannot ping the nas at %v: %v\n%s", nasV4, err, cafeH.MustRun("wg", "show", ifname))
	}
	metric(t, "device_first_ping_s", fmt.Sprintf("%.3f", took.Seconds()))
	// ... and resolves its name at the DNS address its configuration gives.
	if out, err := digOut(cafeH, "+short", "+time=2", "+tries=2", "@"+c.dns[0].String(), "nas.alice.glow"); err != nil || out != nasV4.String() {
		t.Errorf("device: dig @%v nas.alice.glow = %q, %v; want %v", c.dns[0], out, err, nasV4)
	}
	if out, err := digOut(cafeH, "+short", "+time=2", "+tries=2", "@"+c.dns[0].String(), "AAAA", "nas.alice.glow"); err != nil || out != nasV6.String() {
		t.Errorf("device: dig @%v AAAA nas.alice.glow = %q, %v; want %v", c.dns[0], out, err, nasV6)
	}
	// The NAS pings the device back by name, through its glow resolver,
	// over IPv4 and IPv6.
	for fam, want := range map[string]netip.Addr{"-4": phoneV4, "-6": phoneV6} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := nasH.Run(ctx, "ping", fam, "-n", "-c2", "-W3", "phone")
		cancel()
		if err != nil || !strings.Contains(res.Stdout, "bytes from "+want.String()) {
			t.Fatalf("nas: ping %s phone: %v\n%s%s", fam, err, res.Stdout, res.Stderr)
		}
		t.Logf("nas: ping %s phone:\n%s", fam, res.Stdout)
	}
	// The device reaches the NAS over IPv6 too.
	if _, err := waitPing(cafeH, nasV6, reachTimeout); err != nil {
		t.Errorf("the device cannot ping the nas at %v: %v", nasV6, err)
	}
	// The cafe's router hands the device a new public port (a reboot, a
	// CGNAT timeout) while it pings the NAS every 200 ms: the VPS follows
	// the device to it with its next authentic packet (WireGuard roaming,
	// for devices only), without waiting for a new handshake.
	epBefore := deviceEndpoint(t, vps, "phone")
	pingProc, err := cafeH.Start("ping", "-n", "-D", "-i", "0.2", "-c", "75", nasV4.String())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // a stretch of steady replies first
	flushed := time.Now()
	cafeR.RemapPorts(41000, 41999)
	if err := pingProc.Wait(40 * time.Second); err != nil {
		t.Logf("ping: %v", err)
	}
	run := parsePing(pingProc.Output())
	lost, recovery := run.lost(), time.Duration(-1)
	for _, r := range run.replies {
		if r.at.After(flushed) && (len(lost) == 0 || r.seq > lost[len(lost)-1]) {
			recovery = r.at.Sub(flushed)
			break
		}
	}
	epAfter := deviceEndpoint(t, vps, "phone")
	t.Logf("new public port: the vps sees the device at %s (was %s); %d pings sent, %d answered, lost %v", epAfter, epBefore, run.transmitted, run.received, lost)
	if recovery < 0 || epAfter == epBefore || !strings.HasPrefix(epAfter, cafeR.WAN.String()+":41") {
		t.Errorf("the device's pings did not come back on its new public port (vps sees it at %s, was %s):\n%s", epAfter, epBefore, pingProc.Output())
	} else {
		metric(t, "device_new_port_recovery_s", fmt.Sprintf("%.3f", recovery.Seconds()))
		metric(t, "device_new_port_lost_pings", fmt.Sprintf("%d/%d", run.transmitted-run.received, run.transmitted))
	}

	// The VPS offers a subnet route, then stops: restoring ip_forward sets
	// every interface's own IPv4 forwarding flag, glow's too; the via node
	// sets its own again, and the device still reaches the NAS.
	ipForward := func(want string) error {
		got := strings.TrimSpace(vpsH.MustRun("cat", "/proc/sys/net/ipv4/ip_forward"))
		if got != want {
			return fmt.Errorf("ip_forward %s, want %s", got, want)
		}
		return nil
	}
	vps.mustGlow(20*time.Second, "set", "--advertise-routes", "10.99.0.0/24")
	if err := waitFor(10*time.Second, 100*time.Millisecond, func() error { return ipForward("1") }); err != nil {
		t.Fatalf("vps offering a route: %v", err)
	}
	vps.mustGlow(20*time.Second, "set", "--advertise-routes", "")
	if err := waitFor(10*time.Second, 100*time.Millisecond, func() error { return ipForward("0") }); err != nil {
		t.Fatalf("vps no longer offering a route: %v", err)
	}
	if _, err := waitPing(cafeH, nasV4, 10*time.Second); err != nil {
		t.Errorf("after the vps stopped offering a route, the device cannot ping the nas: %v (glow0 forwarding %s)",
			err, vpsH.MustRun("cat", "/proc/sys/net/ipv4/conf/glow0/forwarding"))
	}
	list := vps.mustGlow(10*time.Second, "device", "list").Stdout
	if !strings.Contains(list, "phone.alice.glow") || !strings.Contains(list, phoneV4.String()) {
		t.Errorf("glow device list:\n%s", list)
	}

	// Removed: the NAS no longer names it, and its packets reach the VPS
	// and are dropped there (bind/unknown-source grows while its pings go
	// unanswered), to the NAS and to the VPS alike.
	vps.mustGlow(20*time.Second, "device", "remove", "phone")
	if err := waitFor(10*time.Second, 100*time.Millisecond, func() error {
		if res, err := nas.glow(context.Background(), "ip", "phone"); err == nil {
			return fmt.Errorf("nas still knows phone: %s", res.Stdout)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before := vpsDrop(t, vps, "bind/unknown-source")
	vpsV4, _ := vps.ips()
	for _, to := range []netip.Addr{nasV4, vpsV4} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := cafeH.Run(ctx, "ping", "-n", "-c3", "-i", "0.5", "-W2", to.String())
		cancel()
		if err == nil || strings.Contains(res.Stdout, "bytes from") {
			t.Errorf("the removed device still reaches %v:\n%s", to, res.Stdout)
		}
	}
	if err := waitFor(10*time.Second, 200*time.Millisecond, func() error {
		if after := vpsDrop(t, vps, "bind/unknown-source"); after <= before {
			return fmt.Errorf("bind/unknown-source %d, was %d", after, before)
		}
		return nil
	}); err != nil {
		t.Errorf("the removed device's packets did not reach the vps (so the test shows nothing): %v", err)
	}
	t.Logf("vps dropped %d packets of the removed device", vpsDrop(t, vps, "bind/unknown-source")-before)
	if out, err := digOut(nasH, "+short", "+time=2", "+tries=1", "@"+magicV4, "phone.alice.glow"); err != nil || out != "" {
		t.Errorf("nas: phone.alice.glow still resolves: %q, %v", out, err)
	}
}

// vpsDrop reads one drop counter from `glow status --json`.
func vpsDrop(t *testing.T, n *node, name string) uint64 {
	t.Helper()
	st, err := n.status()
	if err != nil {
		t.Fatal(err)
	}
	return st.Drops[name]
}

// deviceEndpoint is where n (the via node) last saw its device name
// (`glow device list --json`).
func deviceEndpoint(t *testing.T, n *node, name string) string {
	t.Helper()
	var list []struct {
		Name     string `json:"name"`
		Endpoint string `json:"endpoint"`
	}
	out := n.mustGlow(10*time.Second, "device", "list", "--json").Stdout
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("glow device list --json: %v in %q", err, out)
	}
	for _, d := range list {
		if d.Name == name {
			return d.Endpoint
		}
	}
	t.Fatalf("glow device list --json has no %s: %s", name, out)
	return ""
}
