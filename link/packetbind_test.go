package link_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"glow/internal/leaktest"
	"glow/link"
	"glow/link/linktest"
	"glow/nat/natlab"
)

// wgNode is a wireguard-go device on a channel TUN.
type wgNode struct {
	dev  *device.Device
	tun  *tuntest.ChannelTUN
	ip   netip.Addr // inside the tunnel
	priv [32]byte
	pub  [32]byte
	port uint16
}

func newWGNode(t *testing.T, i int, bind conn.Bind) *wgNode {
	t.Helper()
	n := &wgNode{tun: tuntest.NewChannelTUN(), ip: netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)})}
	rand.Read(n.priv[:])
	n.priv[0] &= 248
	n.priv[31] = n.priv[31]&127 | 64
	pub, err := curve25519.X25519(n.priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	copy(n.pub[:], pub)
	n.dev = device.NewDevice(n.tun.TUN(), bind, device.NewLogger(wgLogLevel, fmt.Sprintf("dev%d: ", i)))
	t.Cleanup(n.dev.Close)
	if err := n.dev.IpcSet("private_key=" + hex.EncodeToString(n.priv[:]) + "\nlisten_port=0\n"); err != nil {
		t.Fatal(err)
	}
	if err := n.dev.Up(); err != nil {
		t.Fatal(err)
	}
	cfg, err := n.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(cfg, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			p, _ := strconv.Atoi(v)
			n.port = uint16(p)
		}
	}
	if n.port == 0 {
		t.Fatal("no listen port")
	}
	return n
}

// addPeer makes p a peer of n, at endpoint if it is valid.
func (n *wgNode) addPeer(t *testing.T, p *wgNode, endpoint netip.AddrPort) {
	t.Helper()
	cfg := "public_key=" + hex.EncodeToString(p.pub[:]) + "\nallowed_ip=" + p.ip.String() + "/32\n"
	if endpoint.IsValid() {
		cfg += "endpoint=" + endpoint.String() + "\n"
	}
	if err := n.dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
}

// ping sends an ICMP echo request from a to b through the tunnel and
// reports whether b's TUN received it within wait.
func ping(a, b *wgNode, wait time.Duration) bool {
	a.tun.Outbound <- tuntest.Ping(b.ip, a.ip)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case pkt := <-b.tun.Inbound:
			if len(pkt) >= 20 && netip.AddrFrom4([4]byte(pkt[12:16])) == a.ip {
				return true
			}
		case <-timer.C:
			return false
		}
	}
}

func loopbackListen(port uint16) (net.PacketConn, error) {
	return net.ListenPacket("udp4", "127.0.0.1:"+strconv.Itoa(int(port)))
}

var loopback = netip.MustParseAddr("127.0.0.1")

func TestPacketBindLoopback(t *testing.T) {
	leaktest.Check(t)
	a := newWGNode(t, 0, link.NewPacketBind(loopbackListen))
	b := newWGNode(t, 1, link.NewPacketBind(loopbackListen))
	a.addPeer(t, b, netip.AddrPortFrom(loopback, b.port))
	b.addPeer(t, a, netip.AddrPortFrom(loopback, a.port))
	for i := range 3 {
		if !ping(a, b, 5*time.Second) || !ping(b, a, 5*time.Second) {
			t.Fatalf("ping %d lost", i)
		}
	}
	// wireguard-go closes and reopens the bind on down/up.
	if err := a.dev.Down(); err != nil {
		t.Fatal(err)
	}
	// wireguard-go's handshake timestamps have a granularity of ~17ms; an
	// initiation in the same tick as the last one is taken for a replay.
	time.Sleep(50 * time.Millisecond)
	if err := a.dev.Up(); err != nil {
		t.Fatal(err)
	}
	// a lost its sessions, so a speaks first (b would wait for a rekey).
	if !ping(a, b, 5*time.Second) || !ping(b, a, 5*time.Second) {
		t.Fatal("ping after down/up lost")
	}
}

func TestPacketBindContract(t *testing.T) {
	leaktest.Check(t)
	b := link.NewPacketBind(loopbackListen)
	fns, port, err := b.Open(0)
	if err != nil || len(fns) != 1 || port == 0 {
		t.Fatalf("open: %v %d %v", fns, port, err)
	}
	if _, _, err := b.Open(0); err != conn.ErrBindAlreadyOpen {
		t.Errorf("second open: %v", err)
	}
	ep, err := b.ParseEndpoint(netip.AddrPortFrom(loopback, port).String())
	if err != nil {
		t.Fatal(err)
	}
	if se, ok := ep.(*conn.StdNetEndpoint); !ok || se.AddrPort != netip.AddrPortFrom(loopback, port) {
		t.Fatalf("endpoint %#v", ep)
	}
	if _, err := b.ParseEndpoint("nonsense"); err == nil {
		t.Error("bad endpoint parsed")
	}
	// A batch to ourselves arrives, with our address as the source.
	if err := b.Send([][]byte{[]byte("one"), []byte("two")}, ep); err != nil {
		t.Fatal(err)
	}
	bs := b.BatchSize()
	packets, sizes, eps := make([][]byte, bs), make([]int, bs), make([]conn.Endpoint, bs)
	for i := range packets {
		packets[i] = make([]byte, 1500)
	}
	var got []string
	for len(got) < 2 {
		n, err := fns[0](packets, sizes, eps)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, string(packets[i][:sizes[i]]))
			if se := eps[i].(*conn.StdNetEndpoint); se.AddrPort != netip.AddrPortFrom(loopback, port) {
				t.Errorf("source %v", se.AddrPort)
			}
		}
	}
	if got[0] != "one" || got[1] != "two" {
		t.Errorf("got %q", got)
	}
	// Close makes a blocked receive return net.ErrClosed.
	done := make(chan error, 1)
	go func() { _, err := fns[0](packets, sizes, eps); done <- err }()
	time.Sleep(20 * time.Millisecond)
	b.Close()
	if err := <-done; err != net.ErrClosed {
		t.Errorf("receive after close: %v", err)
	}
	if err := b.Send([][]byte{{1}}, ep); err == nil {
		t.Error("send after close succeeded")
	}
	// Open after Close works.
	fns, _, err = b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if _, err := fns[0](packets, sizes, eps); err != net.ErrClosed {
		t.Errorf("receive after second close: %v", err)
	}
}

func natlabListen(h *natlab.Host) func(uint16) (net.PacketConn, error) {
	return func(port uint16) (net.PacketConn, error) { return h.ListenPacket(port) }
}

func TestPacketBindNatlab(t *testing.T) {
	leaktest.Check(t)
	in := natlab.NewInternet()
	ha := in.NewHost(netip.MustParseAddr("198.51.100.1"))
	hb := in.NewHost(netip.MustParseAddr("198.51.100.2"))
	a := newWGNode(t, 0, link.NewPacketBind(natlabListen(ha)))
	b := newWGNode(t, 1, link.NewPacketBind(natlabListen(hb)))
	a.addPeer(t, b, netip.AddrPortFrom(hb.Addr(), b.port))
	b.addPeer(t, a, netip.AddrPortFrom(ha.Addr(), a.port))
	if !ping(a, b, 5*time.Second) || !ping(b, a, 5*time.Second) {
		t.Fatal("ping between public hosts lost")
	}

	// A node behind a NAT reaches a public one that knows no endpoint
	// for it; the public node answers to the mapped address it learnt.
	gw := in.NewNAT(natlab.NATConfig{
		Public:    netip.MustParseAddr("203.0.113.1"),
		Mapping:   natlab.EndpointIndependent,
		Filtering: natlab.AddressAndPortRestricted,
		Timeout:   time.Minute,
	})
	hc := gw.NewHost(netip.MustParseAddr("192.168.1.2"))
	c := newWGNode(t, 2, link.NewPacketBind(natlabListen(hc)))
	c.addPeer(t, b, netip.AddrPortFrom(hb.Addr(), b.port))
	b.addPeer(t, c, netip.AddrPort{})
	if !ping(c, b, 5*time.Second) || !ping(b, c, 5*time.Second) {
		t.Fatal("ping through the NAT lost")
	}
	if st := gw.Stats(); st.MappingsCreated == 0 || st.InForwarded == 0 {
		t.Errorf("traffic did not cross the NAT: %+v", st)
	}
}

// TestFilterBindLine runs five devices in a line, A-B-C-D-E, each linked to
// its neighbours over loopback, and cuts and heals links at run time.
func TestFilterBindLine(t *testing.T) {
	leaktest.Check(t)
	f := linktest.NewFilter()
	var nodes []*wgNode
	var binds []*linktest.FilterBind
	for i := range 5 {
		fb := f.Wrap(link.NewPacketBind(loopbackListen), loopback)
		binds = append(binds, fb)
		nodes = append(nodes, newWGNode(t, i, fb))
	}
	for i := range 4 {
		a, b := nodes[i], nodes[i+1]
		a.addPeer(t, b, binds[i+1].Local())
		b.addPeer(t, a, binds[i].Local())
	}
	for i := range 4 {
		if !ping(nodes[i], nodes[i+1], 5*time.Second) || !ping(nodes[i+1], nodes[i], 5*time.Second) {
			t.Fatalf("link %d-%d down before any block", i, i+1)
		}
	}
	if f.Dropped() != 0 {
		t.Fatalf("dropped %d before any block", f.Dropped())
	}
	// Cut B-C: B and C no longer hear each other; A-B and C-D still work.
	f.Block(binds[1].Local(), binds[2].Local())
	if ping(nodes[1], nodes[2], 300*time.Millisecond) || ping(nodes[2], nodes[1], 300*time.Millisecond) {
		t.Error("blocked link B-C carried a ping")
	}
	if !ping(nodes[0], nodes[1], 5*time.Second) || !ping(nodes[2], nodes[3], 5*time.Second) {
		t.Error("unblocked links stopped working")
	}
	if f.Dropped() < 2 {
		t.Errorf("dropped %d, want >= 2", f.Dropped())
	}
	f.Unblock(binds[2].Local(), binds[1].Local()) // either order
	if !ping(nodes[1], nodes[2], 5*time.Second) {
		t.Error("B-C still down after unblock")
	}
	// Isolate D: C-D and D-E both go down.
	f.BlockAll(binds[3].Local())
	if ping(nodes[2], nodes[3], 300*time.Millisecond) || ping(nodes[4], nodes[3], 300*time.Millisecond) {
		t.Error("isolated D got a ping")
	}
	f.UnblockAll(binds[3].Local())
	if !ping(nodes[3], nodes[4], 5*time.Second) || !ping(nodes[2], nodes[3], 5*time.Second) {
		t.Error("D still isolated after UnblockAll")
	}
}

// wgLogLevel is the devices' log level; set it to LogLevelVerbose to debug.
var wgLogLevel = device.LogLevelError
