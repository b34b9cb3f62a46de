package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"glow/e2e/lab"
)

// TestAttackUnderlayReachesOverlay (issue 12, item 6): a LAN host that runs
// no glow sits next to a glow node and tries to reach the overlay through the
// node's LAN interface:
//
//   - DNS queries to the resolver (100.100.100.53, fd00:676c:6f77::53),
//     routed via the node's LAN addresses;
//   - UDP to the node's overlay addresses (IPv4, IPv6), routed the same way;
//   - UDP from forged overlay source addresses (100.64/10, the user's ULA
//     /48) to the node's LAN addresses, and to its overlay addresses.
//
// A listener on the node (every address, one port) counts what arrives, by
// case; the DNS client counts answers. Nothing of it may arrive, while plain
// LAN-to-LAN datagrams (the control) all do, as do datagrams between the
// two hosts' addresses on a carrier-grade NAT subnet inside 100.64.0.0/10,
// and the node itself still gets answers from its resolver. Then the firewall table's life: it outlives a
// kill -9 and `glow down` removes it, as a later `glow up` replaces it.
func TestAttackUnderlayReachesOverlay(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	lan := l.Bridge("lan")
	gh := l.Host("nas")
	eh := l.Host("evil")
	lan.Attach(gh)
	lan.Attach(eh)
	nas := newNode(t, gh, "nas")
	nas.up("--user", "alice", "--name", "nas")
	v4, v6 := nas.ips()
	ula := netip.PrefixFrom(v6, 48).Masked()
	resolver4 := netip.MustParseAddr(magicV4)
	resolver6 := netip.MustParseAddr(magicV6)

	// The evil host routes the overlay via the node's LAN addresses and
	// holds forged overlay source addresses on its loopback.
	forged4 := netip.MustParseAddr("100.64.250.250")
	forged6 := ula.Addr().Next().Next().Next() // ULA::3, not the node's
	eh.MustRun("ip", "route", "add", "100.64.0.0/10", "via", gh.IP().String())
	eh.MustRun("ip", "-6", "route", "add", ula.String(), "via", gh.IP6().String())
	eh.MustRun("ip", "-6", "route", "add", "fd00:676c:6f77::/48", "via", gh.IP6().String())
	// Both hosts also sit on a carrier-grade NAT subnet (100.64.0.0/10 is
	// that too): traffic on it is not the overlay's and must pass.
	cgnat := netip.MustParsePrefix("100.127.255.0/24")
	if cgnat.Contains(v4) {
		cgnat = netip.MustParsePrefix("100.127.254.0/24")
	}
	cgGlow, cgEvil := cgnat.Addr().Next().Next(), cgnat.Addr().Next().Next().Next()
	gh.MustRun("ip", "addr", "add", netip.PrefixFrom(cgGlow, 24).String(), "dev", "eth0")
	eh.MustRun("ip", "addr", "add", netip.PrefixFrom(cgEvil, 24).String(), "dev", "eth0")
	eh.MustRun("ip", "addr", "add", forged4.String()+"/32", "dev", "lo")
	eh.MustRun("ip", "-6", "addr", "add", forged6.String()+"/128", "dev", "lo", "nodad")

	const port = 47999
	tally := listenTally(t, gh, port)

	const n = 20
	cases := []struct {
		name     string
		src, dst netip.Addr
		control  bool // must be delivered
	}{
		{"dst-overlay-v4", eh.IP(), v4, false},
		{"dst-overlay-v6", eh.IP6(), v6, false},
		{"src-overlay-v4", forged4, gh.IP(), false},
		{"src-overlay-v6", forged6, gh.IP6(), false},
		{"both-overlay-v4", forged4, v4, false},
		{"both-overlay-v6", forged6, v6, false},
		{"dst-resolver-v4", eh.IP(), resolver4, false},
		{"dst-resolver-v6", eh.IP6(), resolver6, false},
		{"control-cgnat-v4", cgEvil, cgGlow, true},
		{"control-lan-v4", eh.IP(), gh.IP(), true}, // last: once these are in, the rest had their chance
		{"control-lan-v6", eh.IP6(), gh.IP6(), true},
	}
	for _, c := range cases {
		if err := sendTagged(eh, c.src, netip.AddrPortFrom(c.dst, port), c.name, n); err != nil {
			t.Fatalf("%s: send: %v", c.name, err)
		}
	}
	if err := waitFor(10*time.Second, 50*time.Millisecond, func() error {
		for _, c := range cases {
			if c.control && tally.get(c.name) < n {
				return fmt.Errorf("%s: %d of %d delivered", c.name, tally.get(c.name), n)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("control datagrams (LAN to LAN) did not arrive: %v", err)
	}
	dnsAnswers := map[string]int{}
	for _, d := range []struct {
		name string
		src  *lab.Host
		to   netip.Addr
	}{
		{"dns-v4", eh, resolver4},
		{"dns-v6", eh, resolver6},
		{"dns-self-v4", gh, resolver4}, // control: the node's own programs
	} {
		got, err := dnsQueries(d.src, d.to, n)
		if err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
		dnsAnswers[d.name] = got
	}

	delivered := 0
	for _, c := range cases {
		got := tally.get(c.name)
		metric(t, "underlay_delivered_"+c.name, fmt.Sprintf("%d/%d", got, n))
		if !c.control {
			delivered += got
			if got != 0 {
				t.Errorf("%s: %s -> %s: %d of %d datagrams delivered, want 0", c.name, c.src, c.dst, got, n)
			}
		}
	}
	for _, name := range []string{"dns-v4", "dns-v6"} {
		metric(t, "underlay_delivered_"+name, fmt.Sprintf("%d/%d", dnsAnswers[name], n))
		delivered += dnsAnswers[name]
		if dnsAnswers[name] != 0 {
			t.Errorf("%s: the resolver answered %d of %d queries from the LAN, want 0", name, dnsAnswers[name], n)
		}
	}
	metric(t, "underlay_delivered_total", fmt.Sprintf("%d/%d", delivered, 10*n))
	if got := dnsAnswers["dns-self-v4"]; got != n {
		t.Errorf("the node's own query to its resolver: %d of %d answered, want all", got, n)
	}
	if t.Failed() {
		return
	}

	// The table's life: there while up, still there after a crash, removed
	// by `glow down`; `glow up` after a crash replaces it.
	hasTable := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := gh.Run(ctx, "nft", "list", "table", "inet", "glow")
		return err == nil
	}
	if !hasTable() {
		t.Fatal("no nftables table inet glow while glow is up")
	}
	dnsKill9(t, nas)
	if !hasTable() {
		t.Fatal("table inet glow vanished with the daemon: a crash test that proves nothing")
	}
	nas.up()
	if got, err := dnsQueries(eh, resolver4, n); err != nil || got != 0 {
		t.Errorf("after kill -9 and up: the resolver answered %d of %d LAN queries (%v), want 0", got, n, err)
	}
	dnsKill9(t, nas)
	res := nas.mustGlow(20*time.Second, "down")
	t.Logf("glow down after kill -9: %s", strings.TrimSpace(res.Stdout))
	if hasTable() {
		t.Error("glow down after a crash left table inet glow behind")
	}
	nas.up()
	nas.mustGlow(20*time.Second, "down")
	if hasTable() {
		t.Error("glow down left table inet glow behind")
	}
}

// tally counts tagged datagrams ("CASE#i") received by a listener.
type tally struct {
	mu sync.Mutex
	n  map[string]int
}

func (t *tally) get(name string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n[name]
}

// listenTally listens on UDP port (every address, both families) in h and
// counts what arrives by tag until the test ends.
func listenTally(t *testing.T, h *lab.Host, port int) *tally {
	t.Helper()
	var pc net.PacketConn
	if err := h.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	tl := &tally{n: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			tag, _, _ := strings.Cut(string(buf[:k]), "#")
			tl.mu.Lock()
			tl.n[tag]++
			tl.mu.Unlock()
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return tl
}

// sendTagged sends count datagrams "tag#i" from src (an address of h) to dst.
func sendTagged(h *lab.Host, src netip.Addr, dst netip.AddrPort, tag string, count int) error {
	var c *net.UDPConn
	if err := h.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	for i := range count {
		// Unconnected: an ICMP error never turns a later send into an error.
		if _, err := c.WriteToUDPAddrPort(fmt.Appendf(nil, "%s#%d", tag, i), dst); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// dnsQueries sends count queries (A nas.alice.glow) from h to the resolver
// at to and returns how many were answered within 2 s of the last.
func dnsQueries(h *lab.Host, to netip.Addr, count int) (int, error) {
	var c net.Conn
	if err := h.Do(func() (err error) {
		c, err = net.Dial("udp", netip.AddrPortFrom(to, 53).String())
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	ids := map[uint16]bool{}
	for i := range count {
		m := new(dns.Msg)
		m.SetQuestion("nas.alice.glow.", dns.TypeA)
		m.Id = uint16(0x4000 + i)
		b, err := m.Pack()
		if err != nil {
			return 0, err
		}
		c.Write(b) // errors (ICMP refused) only mean no answer
		ids[m.Id] = true
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := 0
	buf := make([]byte, 1500)
	for tries := 0; got < count && tries < 10*count; tries++ {
		k, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			continue // ECONNREFUSED from an earlier ICMP: keep reading until the deadline
		}
		if k >= 12 && ids[binary.BigEndian.Uint16(buf[:2])] {
			delete(ids, binary.BigEndian.Uint16(buf[:2]))
			got++
		}
	}
	return got, nil
}
