package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"glow/e2e/lab"
)

// TestSubnetRouter (issue 16): alice's home NAS (behind an easy NAT)
// offers its LAN with `glow up --advertise-routes`; a printer on that LAN
// runs no glow and has no route back to the overlay (its gateway is the
// home router). A cafe laptop of alice (behind another NAT) reaches the
// printer's web server by its LAN address, IPv4 and IPv6, through the NAS,
// and the printer sees the NAS's LAN address as the source (masquerade).
// Before the NAS offers the prefix the laptop reaches nothing there;
// `glow set --advertise-routes ”` on the running NAS takes it back.
func TestSubnetRouter(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	homeLAN := l.Bridge("home-lan")
	nasH, printerH := l.Host("nas"), l.Host("printer")
	nasLAN4 := homeLAN.Attach(nasH)
	printer4 := homeLAN.Attach(printerH)
	l.Router("home-gw", homeLAN, lab.EasyNAT)
	_, cafeH := siteHost(l, "cafe", lab.EasyNAT)
	_, bobH := siteHost(l, "bob", lab.EasyNAT)
	printer6, nasLAN6 := lanAddr6(t, printerH), lanAddr6(t, nasH)
	srv := routeServe(t, printerH, 8080)

	vps := newNode(t, vpsH, "vps")
	nas := newNode(t, nasH, "nas")
	cafe := newNode(t, cafeH, "cafe")
	bob := newNode(t, bobH, "laptop")
	vps.up("--user", "alice", "--name", "vps")
	bob.up("--user", "bob", "--name", "laptop")
	nas.up("--name", "nas", "--join", vps.invite())
	cafe.up("--name", "cafe", "--join", vps.invite())
	nasV4, _ := nas.ips()
	if _, err := waitPing(cafeH, nasV4, reachTimeout); err != nil {
		t.Fatalf("cafe cannot ping nas over the overlay: %v", err)
	}

	// Not offered yet: the printer's LAN is out of the cafe's reach.
	routeRefused(t, "before offering", cafeH, printer4, 8080, srv)

	// Offered on the running node with glow set (no restart).
	res := nas.mustGlow(20*time.Second, "set", "--advertise-routes", homeLAN.V4.String()+","+homeLAN.V6.String())
	t.Logf("nas: glow set: %s", res.Stdout)
	took := time.Now()
	for _, c := range []struct{ dst, wantSrc netip.Addr }{{printer4, nasLAN4}, {printer6, nasLAN6}} {
		if err := waitFor(reachTimeout, 250*time.Millisecond, func() error { return routeCurl(cafeH, c.dst, 8080, c.wantSrc) }); err != nil {
			t.Fatalf("cafe -> printer %s through nas: %v\n%s", c.dst, err, routeStatus(cafe))
		}
	}
	metric(t, "subnet_route_first_reach", time.Since(took).Round(time.Millisecond).String())
	if _, err := waitPing(cafeH, printer4, reachTimeout); err != nil {
		t.Errorf("cafe cannot ping the printer %s through nas: %v", printer4, err)
	}
	st, err := cafe.status()
	if err != nil {
		t.Fatal(err)
	}
	if p := peerNamed(st, "nas"); p == nil || !strings.Contains(strings.Join(p.Routes, ","), homeLAN.V4.String()) {
		t.Errorf("cafe's status does not show %v routed through nas: %+v", homeLAN.V4, p)
	}

	// A friend: bob reaches the printer only once he takes alice's routes
	// and alice shares the route.
	code := polLastLine(t, polMust(t, vps, 20*time.Second, "friend", "invite"))
	polMust(t, bob, 30*time.Second, "friend", "add", code)
	polMust(t, vps, 20*time.Second, "share", "nas:icmp", "--with", "bob") // nas becomes bob's peer; its LAN stays closed
	if _, err := waitPing(bobH, nasV4, reachTimeout); err != nil {
		t.Fatalf("bob cannot ping nas after nas:icmp was shared: %v", err)
	}
	// A friend's routes are taken only once bob opts in to alice's.
	if st, err := bob.status(); err != nil {
		t.Fatal(err)
	} else if p := peerNamed(st, "nas"); p == nil || len(p.Routes) > 0 {
		t.Errorf("bob, not opted in, routes through alice's nas: %+v", p)
	}
	polMust(t, bob, 20*time.Second, "set", "--accept-routes-from", "alice")
	if st, err := bob.status(); err != nil {
		t.Fatal(err)
	} else if p := peerNamed(st, "nas"); p == nil || !slices.Contains(p.Routes, homeLAN.V4.String()) {
		t.Errorf("bob, opted in to alice's routes, does not route %v through nas: %+v", homeLAN.V4, p)
	}
	wrongDst := func() uint64 {
		d, raw, err := polDrops(nas)
		if err != nil {
			t.Fatalf("nas drops: %v %s", err, raw)
		}
		return d["filter/wrong-destination"]
	}
	before := wrongDst()
	routeRefused(t, "friend, route not shared", bobH, printer4, 8080, srv)
	// The NAS's filter refused bob's packets (curl's SYN and its retries).
	if n := wrongDst() - before; n == 0 {
		t.Errorf("nas counted no filter/wrong-destination drop while bob tried the unshared route")
	} else {
		t.Logf("nas dropped %d of bob's packets to the unshared route (filter/wrong-destination)", n)
	}
	res = polMust(t, vps, 20*time.Second, "share", "nas", "--route", homeLAN.V4.String(), "--with", "bob")
	t.Logf("vps: glow share nas --route: %s", res.Stdout)
	if err := waitFor(reachTimeout, 250*time.Millisecond, func() error { return routeCurl(bobH, printer4, 8080, nasLAN4) }); err != nil {
		t.Errorf("bob -> printer after the route was shared: %v\n%s", err, routeStatus(bob))
	}
	routeRefused(t, "friend, v4 route shared, v6 not", bobH, printer6, 8080, srv)
	polMust(t, vps, 20*time.Second, "unshare", "nas", "--route", homeLAN.V4.String(), "--with", "bob")
	if err := waitFor(reachTimeout, 250*time.Millisecond, func() error {
		if routeCurl(bobH, printer4, 8080, nasLAN4) == nil {
			return fmt.Errorf("still reachable")
		}
		return nil
	}); err != nil {
		t.Errorf("bob still reaches the printer after unshare: %v", err)
	}
	routeRefused(t, "friend, route unshared", bobH, printer4, 8080, srv)

	// Taken back: refused again, and the NAS has forwarding off again.
	nas.mustGlow(20*time.Second, "set", "--advertise-routes", "")
	if err := waitFor(reachTimeout, 250*time.Millisecond, func() error {
		if err := routeCurl(cafeH, printer4, 8080, nasLAN4); err == nil {
			return fmt.Errorf("still reachable")
		}
		return nil
	}); err != nil {
		t.Errorf("after --advertise-routes '': cafe still reaches the printer: %v", err)
	}
	routeRefused(t, "after taking the offer back", cafeH, printer4, 8080, srv)
	if v := strings.TrimSpace(nasH.MustRun("sysctl", "-n", "net.ipv4.ip_forward")); v != "0" {
		t.Errorf("nas: net.ipv4.ip_forward = %s after the offer was taken back, want 0", v)
	}
	if out := nasH.MustRun("nft", "list", "tables"); strings.Contains(out, "glow-router") {
		t.Errorf("nas: router table still there after the offer was taken back:\n%s", out)
	}

	// A crash while offering leaves forwarding on and the router table
	// (with its MSS clamp); glow down repairs both.
	nas.mustGlow(20*time.Second, "set", "--advertise-routes", homeLAN.V4.String())
	if out := nasH.MustRun("nft", "list", "table", "inet", "glow-router"); !strings.Contains(out, "maxseg size set rt mtu") || !strings.Contains(out, "masquerade") {
		t.Errorf("nas: router table lacks the MSS clamp or the masquerade:\n%s", out)
	}
	dnsKill9(t, nas)
	if v := strings.TrimSpace(nasH.MustRun("sysctl", "-n", "net.ipv4.ip_forward")); v != "1" {
		t.Errorf("nas: net.ipv4.ip_forward = %s after kill -9 while offering, want 1 (else this stage shows nothing)", v)
	}
	res = nas.mustGlow(20*time.Second, "down")
	t.Logf("nas: glow down after kill -9: %s", strings.TrimSpace(res.Stdout))
	if v := strings.TrimSpace(nasH.MustRun("sysctl", "-n", "net.ipv4.ip_forward")); v != "0" {
		t.Errorf("nas: net.ipv4.ip_forward = %s after glow down repaired the crash, want 0", v)
	}
	if out := nasH.MustRun("nft", "list", "tables"); strings.Contains(out, "glow-router") {
		t.Errorf("nas: router table left after glow down repaired the crash:\n%s", out)
	}
}

// lanAddr6 is h's IPv6 address on its LAN (eth0).
func lanAddr6(t *testing.T, h *lab.Host) netip.Addr {
	t.Helper()
	for _, a := range h.Addrs() {
		if a.Is6() && !a.IsLinkLocalUnicast() {
			return a
		}
	}
	t.Fatalf("%s: no IPv6 LAN address in %v", h.Name, h.Addrs())
	return netip.Addr{}
}

// routeServer is a web server in a lab host that answers each request with
// the address it came from, and counts the connections from each address.
type routeServer struct {
	mu   sync.Mutex
	seen map[netip.Addr]int
}

func (s *routeServer) count(a netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[a]
}

func (s *routeServer) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.seen {
		n += c
	}
	return n
}

// routeServe serves on port in h (IPv4 and IPv6) until the test ends.
func routeServe(t *testing.T, h *lab.Host, port int) *routeServer {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatalf("%s: listen on %d: %v", h.Name, port, err)
	}
	s := &routeServer{seen: map[netip.Addr]int{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			from := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			s.mu.Lock()
			s.seen[from]++
			s.mu.Unlock()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4096)
			c.Read(buf) // the request; its content does not matter
			body := "from " + from.String()
			fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			c.Close()
		}
	}()
	return s
}

// routeCurl fetches http://dst:port/ from h and wants the server to have
// seen wantSrc as the source.
func routeCurl(h *lab.Host, dst netip.Addr, port uint16, wantSrc netip.Addr) error {
	return polCurlWant(h, polURL(dst, port), "from "+wantSrc.String())
}

// routeRefused fails t if h reaches dst:port, or if the server saw any new
// connection meanwhile.
func routeRefused(t *testing.T, stage string, h *lab.Host, dst netip.Addr, port uint16, srv *routeServer) {
	t.Helper()
	before := srv.total()
	polDenied(t, stage, h, dst, port)
	if n := srv.total() - before; n != 0 {
		t.Errorf("%s: the server saw %d connection(s) it should not have", stage, n)
	}
}

// routeStatus is n's glow status, for failure messages.
func routeStatus(n *node) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.glow(ctx, "status")
	if err != nil {
		return fmt.Sprintf("glow status: %v", err)
	}
	return res.Stdout
}

// TestExitNode (issue 16): alice's public VPS offers itself as an exit
// node (`glow up --advertise-exit-node`). Her cafe laptop, behind a NAT,
// told `glow set --exit-node vps`, reaches a web server on the Internet
// (a host that runs no glow) from the VPS's address, over IPv4 and over
// IPv6 (which the cafe has no route for of its own). A friend, bob, whose
// exit node is set to the VPS, gets nothing through it until alice runs
// `glow share vps --exit --with bob`. Once the VPS is down the cafe's
// traffic to the server fails and the server sees nothing (fail closed);
// after `glow set --exit-node ”` it sees the cafe's own address again;
// `glow down` on the cafe leaves no ip rule or route of glow's behind.
func TestExitNode(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	webH := publicHost(l, "web")
	cafeGW, cafeH := siteHost(l, "cafe", lab.EasyNAT)
	bobGW, bobH := siteHost(l, "bob", lab.EasyNAT)
	web4, web6 := webH.IP(), lanAddr6(t, webH)
	vps4, vps6 := vpsH.IP(), lanAddr6(t, vpsH)
	srv := routeServe(t, webH, 8080)

	vps := newNode(t, vpsH, "vps")
	cafe := newNode(t, cafeH, "cafe")
	bob := newNode(t, bobH, "laptop")
	vps.up("--user", "alice", "--name", "vps", "--advertise-exit-node")
	cafe.up("--name", "cafe", "--join", vps.invite())
	bob.up("--user", "bob", "--name", "laptop")
	vpsV4, _ := vps.ips()
	if _, err := waitPing(cafeH, vpsV4, reachTimeout); err != nil {
		t.Fatalf("cafe cannot ping vps over the overlay: %v", err)
	}

	// Without an exit node the server sees the cafe's NAT.
	if err := routeCurl(cafeH, web4, 8080, cafeGW.WAN); err != nil {
		t.Fatalf("cafe -> web directly: %v", err)
	}

	res := cafe.mustGlow(20*time.Second, "set", "--exit-node", "vps")
	t.Logf("cafe: glow set --exit-node vps: %s", res.Stdout)
	took := time.Now()
	if err := waitFor(reachTimeout, 250*time.Millisecond, func() error { return routeCurl(cafeH, web4, 8080, vps4) }); err != nil {
		t.Fatalf("cafe -> web through the exit node: %v\n%s", err, routeStatus(cafe))
	}
	metric(t, "exit_node_first_reach", time.Since(took).Round(time.Millisecond).String())
	if err := routeCurl(cafeH, web6, 8080, vps6); err != nil {
		t.Errorf("cafe -> web over IPv6 through the exit node: %v", err)
	}
	if _, err := waitPing(cafeH, vpsV4, reachTimeout); err != nil {
		t.Errorf("cafe cannot ping vps over the overlay while using it as exit node: %v", err)
	}
	if out := routeStatus(cafe); !strings.Contains(out, "exit node: vps (in use)") {
		t.Errorf("cafe's status does not show the exit node in use:\n%s", out)
	}

	// A friend: refused until the exit node is shared with him.
	code := polLastLine(t, polMust(t, vps, 20*time.Second, "friend", "invite"))
	polMust(t, bob, 30*time.Second, "friend", "add", code)
	polMust(t, vps, 20*time.Second, "share", "vps:icmp", "--with", "bob") // vps becomes bob's peer
	if _, err := waitPing(bobH, vpsV4, reachTimeout); err != nil {
		t.Fatalf("bob cannot ping vps after vps:icmp was shared: %v", err)
	}
	polMust(t, bob, 20*time.Second, "set", "--exit-node", "vps")
	bobBefore := srv.count(bobGW.WAN) + srv.count(vps4)
	polDenied(t, "friend, exit not shared", bobH, web4, 8080)
	if n := srv.count(bobGW.WAN) + srv.count(vps4) - bobBefore; n != 0 {
		t.Errorf("friend, exit not shared: the server saw %d connection(s) from bob or the vps", n)
	}
	polMust(t, vps, 20*time.Second, "share", "vps", "--exit", "--with", "bob")
	if err := waitFor(reachTimeout, 250*time.Millisecond, func() error { return routeCurl(bobH, web4, 8080, vps4) }); err != nil {
		t.Errorf("bob -> web through the shared exit node: %v\n%s", err, routeStatus(bob))
	}
	polMust(t, bob, 20*time.Second, "set", "--exit-node", "")

	// The exit node goes away: the cafe's traffic goes nowhere.
	vps.mustGlow(20*time.Second, "down")
	before, beforeCafe := srv.total(), srv.count(cafeGW.WAN)
	for _, dst := range []netip.Addr{web4, web6} {
		polDenied(t, "exit node down", cafeH, dst, 8080)
	}
	if n := srv.total() - before; n != 0 {
		t.Errorf("exit node down: the server saw %d connection(s) (%d from the cafe's own address)", n, srv.count(cafeGW.WAN)-beforeCafe)
	}
	if out := routeStatus(cafe); !strings.Contains(out, "Internet traffic blocked") {
		t.Errorf("cafe's status does not say its Internet traffic is blocked:\n%s", out)
	}

	cafe.mustGlow(20*time.Second, "set", "--exit-node", "")
	if err := waitFor(reachTimeout, 250*time.Millisecond, func() error { return routeCurl(cafeH, web4, 8080, cafeGW.WAN) }); err != nil {
		t.Errorf("cafe -> web after --exit-node '': %v", err)
	}

	// Set again and brought down: glow down removes the rules and routes.
	cafe.mustGlow(20*time.Second, "set", "--exit-node", "vps")
	if out := cafeH.MustRun("ip", "rule", "list"); !strings.Contains(out, "5270") {
		t.Errorf("cafe: no glow rule while an exit node is set:\n%s", out)
	}
	cafe.mustGlow(20*time.Second, "down")
	for _, fam := range []string{"-4", "-6"} {
		if out := cafeH.MustRun("ip", fam, "rule", "list"); strings.Contains(out, "5270") || strings.Contains(out, "0x80000") {
			t.Errorf("cafe: glow's rules left after glow down (ip %s rule):\n%s", fam, out)
		}
	}
	if err := routeCurl(cafeH, web4, 8080, cafeGW.WAN); err != nil {
		t.Errorf("cafe -> web after glow down: %v", err)
	}

	// The exit node is kept across a restart (STATE/prefs.json); a crash
	// leaves the rules, and glow down removes them.
	cafe.up()
	if out := cafeH.MustRun("ip", "rule", "list"); !strings.Contains(out, "5270") {
		t.Errorf("cafe: no glow rule after a restart with an exit node set:\n%s", out)
	}
	polDenied(t, "restarted, exit node still down", cafeH, web4, 8080)
	dnsKill9(t, cafe)
	if out := cafeH.MustRun("ip", "rule", "list"); !strings.Contains(out, "5270") {
		t.Errorf("cafe: glow's rules gone right after kill -9 (this stage shows nothing):\n%s", out)
	}
	cafe.mustGlow(20*time.Second, "down")
	if out := cafeH.MustRun("ip", "rule", "list"); strings.Contains(out, "5270") || strings.Contains(out, "0x80000") {
		t.Errorf("cafe: glow's rules left after glow down repaired the crash:\n%s", out)
	}
}
