package overlay

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"glow/internal/wire"
	"glow/link/udpbind"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
	"glow/relay"
)

// TestDeviceConfigText: the wg-quick configuration holds the device's
// private key (whose public half is the listed key), its addresses, the
// resolver, the via node's key and endpoint, and the user's ranges.
func TestDeviceConfigText(t *testing.T) {
	u := membertest.NewUser(t, "alice")
	var priv [32]byte
	priv[1] = 5
	d := member.Device{Name: "tv", WG: wgPublic(&priv), IPv4: netip.MustParseAddr("100.70.1.2"), Via: wire.NodeID{3}}
	d.IPv6 = member.NodeAddr6(u.Public(), d.ID())
	via := &member.Cert{Name: "vps", WG: wire.Key{8, 8}}
	copy(via.User[:], u.Public())
	ep := publicEndpoint([]netip.AddrPort{
		netip.MustParseAddrPort("10.0.0.5:47470"), netip.MustParseAddrPort("[2001:db8::5]:47470"),
		netip.MustParseAddrPort("198.51.100.7:47470"), netip.MustParseAddrPort("100.64.0.9:47470"),
	})
	if ep != netip.MustParseAddrPort("198.51.100.7:47470") {
		t.Fatalf("endpoint %v, want the public IPv4 one", ep)
	}
	if got := publicEndpoint([]netip.AddrPort{netip.MustParseAddrPort("[fd00::1]:1"), netip.MustParseAddrPort("10.0.0.5:2")}); got.Port() != 2 {
		t.Fatalf("without a public endpoint: %v, want the private IPv4 one", got)
	}
	text := deviceConfigText(d, priv, via, ep, "alice", []netip.Prefix{netip.MustParsePrefix("10.71.1.0/24")})
	kv := map[string]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		if k, v, ok := strings.Cut(line, " = "); ok && !strings.HasPrefix(line, "#") {
			kv[section+k] = v
		}
	}
	key, err := base64.StdEncoding.DecodeString(kv["[Interface]PrivateKey"])
	if err != nil || wgPublic((*[32]byte)(key)) != d.WG {
		t.Fatalf("private key %q does not belong to the device's public key", kv["[Interface]PrivateKey"])
	}
	want := map[string]string{
		"[Interface]Address":        "100.70.1.2/32, " + d.IPv6.String() + "/128",
		"[Interface]DNS":            "100.100.100.53, fd00:676c:6f77::53, alice.glow",
		"[Peer]PublicKey":           base64.StdEncoding.EncodeToString(via.WG[:]),
		"[Peer]Endpoint":            "198.51.100.7:47470",
		"[Peer]AllowedIPs":          "100.64.0.0/10, " + member.UserPrefix6(u.Public()).String() + ", fd00:676c:6f77::53/128, 10.71.1.0/24",
		"[Peer]PersistentKeepalive": "25",
	}
	for k, v := range want {
		if kv[k] != v {
			t.Errorf("%s = %q, want %q\n%s", k, kv[k], v, text)
		}
	}
	if strings.Contains(deviceConfigText(d, priv, via, netip.AddrPort{}, "alice", nil), "\nEndpoint") {
		t.Error("an endpoint line without an endpoint")
	}
}

// plainDevice runs a plain wireguard-go peer on a userspace stack, as a
// device would from its wg-quick configuration: key priv, addresses addrs,
// one peer (key peerKey at endpoint) for the overlay ranges.
func plainDevice(t *testing.T, priv [32]byte, addrs []netip.Addr, peerKey wire.Key, endpoint netip.AddrPort) (*netstack.Net, *device.Device) {
	t.Helper()
	tdev, tnet, err := netstack.CreateNetTUN(addrs, nil, 1280)
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tdev, conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	cfg := fmt.Sprintf("private_key=%x\nlisten_port=0\npublic_key=%x\nendpoint=%s\nallowed_ip=%s\nallowed_ip=::/0\n",
		priv[:], peerKey[:], endpoint, member.IPv4Range)
	if err := dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Close)
	return tnet, dev
}

// initiation starts a plain device with key priv toward a UDP socket of
// the test and returns the handshake initiation it sends.
func initiation(t *testing.T, priv [32]byte, to wire.Key) []byte {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	self := netip.MustParseAddr("100.64.3.3")
	tnet, _ := plainDevice(t, priv, []netip.Addr{self}, to, pc.LocalAddr().(*net.UDPAddr).AddrPort())
	c, err := tnet.DialUDPAddrPort(netip.AddrPort{}, netip.MustParseAddrPort("100.64.1.1:9"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x")) // makes wireguard-go start a handshake
	buf := make([]byte, 2048)
	for i := 0; i < 10; i++ {
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := pc.ReadFromUDP(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == wgInitiationLen && buf[0] == 1 {
			return append([]byte(nil), buf[:n]...)
		}
	}
	t.Fatal("no handshake initiation")
	return nil
}

// TestDeviceInitiation: the via node's Bind takes a device's handshake
// initiation from an unknown address (and learns the address) only if it
// opens with the device's key and is fresh: a replay from elsewhere, a
// changed byte, another node's key or no devices at all move nothing.
func TestDeviceInitiation(t *testing.T) {
	var viaPriv, devPriv, otherPriv [32]byte
	viaPriv[1], devPriv[1], otherPriv[1] = 1, 2, 3
	viaPub, devPub, otherPub := wgPublic(&viaPriv), wgPublic(&devPriv), wgPublic(&otherPriv)
	b := NewBind(udpbind.New(), wire.NodeID{1}, relay.New(relay.Limits{}), newCtlQueues())
	from := netip.MustParseAddrPort("198.51.100.20:5000")
	elsewhere := netip.MustParseAddrPort("198.51.100.66:6000")
	pkt := initiation(t, devPriv, viaPub)
	if b.deviceInitiation(pkt, from) != nil {
		t.Fatal("taken with no devices")
	}
	dev := deviceConfig{WG: devPub, IPs: []netip.Addr{netip.MustParseAddr("100.64.3.3")}}
	b.setDevices(viaPriv, []deviceConfig{{WG: otherPub}})
	if b.deviceInitiation(pkt, from) != nil || b.dropDevInit.Load() != 1 {
		t.Fatalf("taken for another device's key (refused %d)", b.dropDevInit.Load())
	}
	b.setDevices(viaPriv, []deviceConfig{dev})
	flipped := append([]byte(nil), pkt...)
	flipped[50] ^= 1
	if b.deviceInitiation(flipped, from) != nil {
		t.Fatal("taken with a changed byte")
	}
	e := b.deviceInitiation(pkt, from)
	if e == nil || e.ID != deviceID(dev.WG) {
		t.Fatalf("the device's initiation was not taken: %v", e)
	}
	if got := (*b.byAddr.Load())[from]; got != e {
		t.Fatal("the device's address was not learned")
	}
	if p := e.path.Load(); p == nil || p.addr != from {
		t.Fatal("the device has no path to its address")
	}
	if b.deviceInitiation(pkt, elsewhere) != nil || (*b.byAddr.Load())[elsewhere] != nil || e.path.Load().addr != from {
		t.Fatal("a replayed initiation moved the device")
	}
	// A new initiation (a restarted device: a later timestamp) from a new
	// address moves it there. (wireguard-go's timestamps are rounded down
	// to about 17 ms, so two initiations within that carry the same one.)
	time.Sleep(50 * time.Millisecond)
	later := initiation(t, devPriv, viaPub)
	if b.deviceInitiation(later, elsewhere) != e || e.path.Load().addr != elsewhere {
		t.Fatal("a fresh initiation from a new address did not move the device")
	}
	if got := b.devHandshakes.Load(); got != 2 {
		t.Fatalf("%d handshakes taken, want 2", got)
	}
	// Removed: nothing is taken, the endpoint is gone.
	b.setDevices(viaPriv, nil)
	if b.deviceInitiation(initiation(t, devPriv, viaPub), from) != nil {
		t.Fatal("taken after the device was removed")
	}
	if (*b.byAddr.Load())[from] != nil || (*b.byAddr.Load())[elsewhere] != nil {
		t.Fatal("the removed device's addresses are still learned")
	}
}

// TestDeviceViaNode: a device added on the admin node with another node as
// its via node. Every node names it and routes it to the via node; the via
// node carries it, and a plain wireguard-go peer with the device's key
// reaches the via node's services over the tunnel; once removed, the via
// node refuses its handshakes and nobody names or routes it.
func TestDeviceViaNode(t *testing.T) {
	nodes := joinedNet(t, 2)
	admin, via := nodes[0], nodes[1]
	if _, err := via.AddDevice("tv", "", netip.AddrPort{}); err == nil {
		t.Fatal("a node without the user key added a device")
	}
	if _, err := admin.AddDevice("n2", "n2", netip.AddrPort{}); err == nil {
		t.Fatal("a device took a node's name")
	}
	added, err := admin.AddDevice("tv", "n2", netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddDevice("tv", "n2", netip.AddrPort{}); err == nil {
		t.Fatal("a second device named tv")
	}
	d := added.Device
	if d.Via != "n2" || d.FQDN != "tv.alice.glow" || !member.IPv4Range.Contains(d.IPv4) || !member.UserPrefix6(admin.Cert().User[:]).Contains(d.IPv6) {
		t.Fatalf("added %+v", d)
	}
	var priv [32]byte
	for _, line := range strings.Split(added.Config, "\n") {
		if k, ok := strings.CutPrefix(line, "PrivateKey = "); ok {
			b, _ := base64.StdEncoding.DecodeString(k)
			priv = [32]byte(b)
		}
		if ep, ok := strings.CutPrefix(line, "Endpoint = "); ok && ep != fmt.Sprintf("127.0.0.1:%d", via.Port()) {
			t.Fatalf("endpoint %s, want the via node's 127.0.0.1:%d", ep, via.Port())
		}
	}
	// Every node knows it: the admin routes it to the via node, the via
	// node carries it, both name it.
	viaPeer := func() *Endpoint {
		admin.mu.Lock()
		defer admin.mu.Unlock()
		return admin.paths.peers[via.ID()].ep
	}()
	waitFor(t, 10*time.Second, "the via node to carry the device", func() bool {
		t := via.bind.devs.Load()
		return t != nil && len(t.byKey) == 1
	})
	for _, ip := range []netip.Addr{d.IPv4, d.IPv6} {
		if (*admin.bind.byIP.Load())[ip] != viaPeer {
			t.Fatalf("the admin does not route %v to the via node", ip)
		}
		if p, ok := admin.dir.Lookup(ip); !ok || p.Node != "tv" || p.User != "alice" {
			t.Fatalf("the admin's filter does not know %v as alice's tv: %+v", ip, p)
		}
	}
	for _, n := range nodes {
		addrs, err := n.ResolveName(context.Background(), "tv.alice.glow")
		if err != nil || addrs != d.IPv4 {
			t.Fatalf("%s resolves tv.alice.glow to %v, %v", n.Cert().Name, addrs, err)
		}
	}
	if list := via.Devices(); len(list) != 1 || list[0] != d {
		t.Fatalf("the via node lists %+v", list)
	}

	// The device (a plain wireguard-go peer) reaches the via node's echo
	// service over the tunnel.
	ln, err := stackNet(via).ListenTCPAddrPort(netip.AddrPortFrom(via.Cert().IPv4, 7000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	viaKey := via.Cert().WG
	tnet, wgdev := plainDevice(t, priv, []netip.Addr{d.IPv4, d.IPv6}, viaKey, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), via.Port()))
	echo := func(msg string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := tnet.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(via.Cert().IPv4, 7000))
		cancel()
		if err != nil {
			t.Fatalf("the device cannot reach the via node: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo %q, %v", got, err)
		}
	}
	echo("hello from tv")
	if via.bind.devHandshakes.Load() == 0 {
		t.Fatal("no device handshake counted")
	}
	if list := via.Devices(); len(list) != 1 || !strings.HasPrefix(list[0].Endpoint, "127.0.0.1:") || list[0].LastHandshake == "" {
		t.Fatalf("the via node lists %+v, want the device's endpoint and last handshake", list)
	}
	if list := admin.Devices(); len(list) != 1 || list[0].Endpoint != "" {
		t.Fatalf("the admin (not the via node) lists %+v", list)
	}

	// The device roams (another UDP port, as after a NAT rebinding or a
	// change of network) within its session: its next data packets, from
	// the new address, move its path there, with no new handshake.
	before := via.Devices()[0].Endpoint
	handshakes := via.bind.devHandshakes.Load()
	if err := wgdev.IpcSet("listen_port=0\n"); err != nil {
		t.Fatal(err)
	}
	echo("hello again, from elsewhere")
	after := via.Devices()[0].Endpoint
	if after == before || via.bind.devRoams.Load() == 0 || via.bind.devHandshakes.Load() != handshakes {
		t.Fatalf("roaming: endpoint %s -> %s, %d roams, handshakes %d -> %d", before, after, via.bind.devRoams.Load(), handshakes, via.bind.devHandshakes.Load())
	}
	t.Logf("the device roamed from %s to %s", before, after)

	// Removed everywhere.
	if err := via.RemoveDevice("tv"); err == nil {
		t.Fatal("a node without the user key removed a device")
	}
	if err := admin.RemoveDevice("tv"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the via node to drop the device", func() bool {
		t := via.bind.devs.Load()
		return t != nil && len(t.byKey) == 0
	})
	if (*admin.bind.byIP.Load())[d.IPv4] != nil || len(admin.Devices()) != 0 {
		t.Fatal("the admin still routes or lists the device")
	}
	for _, n := range nodes {
		if addrs, err := n.ResolveName(context.Background(), "tv.alice.glow"); err == nil {
			t.Fatalf("%s still resolves tv.alice.glow: %v", n.Cert().Name, addrs)
		}
	}
	// The device's next handshake (a new one: restarted) is refused.
	refused := via.bind.dropDevInit.Load() + via.bind.dropUnknownSrc.Load()
	tnet, _ = plainDevice(t, priv, []netip.Addr{d.IPv4}, viaKey, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), via.Port()))
	if u, err := tnet.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(via.Cert().IPv4, 9)); err == nil {
		u.Write([]byte("x"))
		u.Close()
	}
	waitFor(t, 10*time.Second, "the removed device's handshake to be refused", func() bool {
		return via.bind.dropDevInit.Load()+via.bind.dropUnknownSrc.Load() > refused
	})
	if n := via.bind.devHandshakes.Load(); n != 1 {
		t.Fatalf("%d device handshakes taken, want the 1 before the removal", n)
	}
}

// TestAttackDeviceInitiations: initiations forged by someone who knows
// only the via node's public key (enough for a valid mac1) from 200
// addresses at once. Each costs the via node an X25519 only within
// maxDeviceChecks a second; none is taken and no address is learned.
func TestAttackDeviceInitiations(t *testing.T) {
	var viaPriv, devPriv [32]byte
	viaPriv[1], devPriv[1] = 1, 2
	viaPub, devPub := wgPublic(&viaPriv), wgPublic(&devPriv)
	b := NewBind(udpbind.New(), wire.NodeID{1}, relay.New(relay.Limits{}), newCtlQueues())
	b.setDevices(viaPriv, []deviceConfig{{WG: devPub, IPs: []netip.Addr{netip.MustParseAddr("100.64.3.3")}}})
	mac1Key := blake2s.Sum256(append([]byte("mac1----"), viaPub[:]...))
	const forged = 200
	for i := range forged {
		pkt := make([]byte, wgInitiationLen)
		pkt[0] = 1
		rand.Read(pkt[4:116])
		m, _ := blake2s.New128(mac1Key[:])
		m.Write(pkt[:116])
		copy(pkt[116:132], m.Sum(nil))
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 4000)
		if b.deviceInitiation(pkt, from) != nil {
			t.Fatalf("forged initiation %d taken", i)
		}
	}
	opened, limited := b.dropDevInit.Load(), b.dropDevLimited.Load()
	t.Logf("%d forged initiations: %d opened (refused after an X25519), %d refused unopened (over %d a second)", forged, opened, limited, maxDeviceChecks)
	if opened+limited != forged || opened > 2*maxDeviceChecks || b.devHandshakes.Load() != 0 || len(*b.byAddr.Load()) != 0 {
		t.Fatalf("opened %d, limited %d, taken %d, addresses learned %d", opened, limited, b.devHandshakes.Load(), len(*b.byAddr.Load()))
	}
}
