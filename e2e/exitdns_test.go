package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"glow/e2e/lab"
)

// TestExitNodeDNSAndUserspace (issue 16): alice's public VPS offers itself
// as exit node and its LAN (a printer that runs no glow and has no route
// back) as subnet. On the Internet, host web runs a web server and the
// DNS server every host's resolv.conf names (it answers NAME.example.test
// with web's address and notes who asked for what).
//
//   - A phone runs glow with --userspace (no TUN): through its SOCKS5
//     proxy, curl reaches the printer through the VPS's subnet route,
//     and, with no exit node, web by name from the phone's own address
//     (the name resolved by the phone's resolver). With `glow set
//     --exit-node vps` the same URL is fetched from the VPS's address and
//     the name is looked up by the VPS: the DNS server sees the query
//     from the VPS only.
//   - A cafe laptop (kernel TUN) whose resolver is the cafe's own (a DNS
//     server on the cafe's LAN, as DHCP hands out) asks glow's resolver
//     for a name: the cafe's resolver answers without an exit node; once
//     the VPS is its exit node the query leaves from the VPS, to the
//     VPS's resolver, and the cafe's resolver sees nothing.
//   - With the VPS down and still chosen, neither gets anything, and the
//     DNS server and the web server see nothing at all (fail closed);
//     after `--exit-node ”` both go direct again.
func TestExitNodeDNSAndUserspace(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	webH := publicHost(l, "web")
	vpsLAN := l.Bridge("vps-lan")
	printerH := l.Host("printer")
	vpsLAN4 := vpsLAN.Attach(vpsH)
	printer4 := vpsLAN.Attach(printerH)
	cafeLAN := l.Bridge("cafe-lan")
	cafeH, cafeDNSH := l.Host("cafe"), l.Host("cafedns")
	cafeLAN4 := cafeLAN.Attach(cafeH)
	cafeDNS4 := cafeLAN.Attach(cafeDNSH)
	l.Router("cafe-gw", cafeLAN, lab.EasyNAT)
	phoneGW, phoneH := siteHost(l, "hotel", lab.EasyNAT)
	web4, vps4 := webH.IP(), vpsH.IP()
	webSrv := routeServe(t, webH, 8080)
	printerSrv := routeServe(t, printerH, 8080)
	ns := exitDNSServe(t, webH, web4)
	cafeNS := exitDNSServe(t, cafeDNSH, web4)
	for _, h := range []*lab.Host{vpsH, phoneH} {
		writeResolvConf(t, resolvConfPath(h), []byte("nameserver "+web4.String()+"\n"))
	}
	writeResolvConf(t, resolvConfPath(cafeH), []byte("nameserver "+cafeDNS4.String()+"\n"))

	vps := newNode(t, vpsH, "vps")
	cafe := newNode(t, cafeH, "cafe")
	phone := newNode(t, phoneH, "phone")
	vps.up("--user", "alice", "--name", "vps", "--advertise-exit-node", "--advertise-routes", vpsLAN.V4.String())
	cafe.up("--name", "cafe", "--join", vps.invite())
	phone.up("--name", "phone", "--userspace", "--socks5", "127.0.0.1:1055", "--join", vps.invite())
	// glow has no userspace stack: it handed the phone's daemon to
	// glow-userspace beside it, while the kernel-TUN daemons are glow.
	for _, c := range []struct {
		n    *node
		want string
	}{{phone, "glow-userspace"}, {vps, "glow"}} {
		pid, err := c.n.daemonPid()
		if err != nil {
			t.Fatal(err)
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || filepath.Base(exe) != c.want {
			t.Fatalf("%s's daemon runs %q (%v), want %s", c.n.name, exe, err, c.want)
		}
	}
	vpsV4, _ := vps.ips()
	if _, err := waitPing(cafeH, vpsV4, reachTimeout); err != nil {
		t.Fatalf("cafe cannot ping vps over the overlay: %v", err)
	}

	// The phone's proxy uses the VPS's subnet route.
	if err := waitFor(reachTimeout, 250*time.Millisecond, func() error {
		return socksCurl(phoneH, polURL(printer4, 8080), "from "+vpsLAN4.String())
	}); err != nil {
		t.Fatalf("phone (userspace) -> printer through the vps's subnet route: %v\n%s", err, routeStatus(phone))
	}
	if n := printerSrv.count(vpsLAN4); n == 0 {
		t.Errorf("the printer saw no connection from the vps")
	}

	// No exit node: names and connections leave from each site itself.
	if err := socksCurl(phoneH, "http://direct.example.test:8080/", "from "+phoneGW.WAN.String()); err != nil {
		t.Errorf("phone -> web by name, no exit node: %v", err)
	}
	ns.wantFrom(t, "no exit node, phone", "direct.example.test", phoneGW.WAN)
	if err := exitDig(cafeH, "cafe-direct.example.test", web4); err != nil {
		t.Errorf("cafe: no exit node: %v", err)
	}
	cafeNS.wantFrom(t, "no exit node, cafe", "cafe-direct.example.test", cafeLAN4)

	// The VPS as exit node: its address, its resolver.
	phone.mustGlow(20*time.Second, "set", "--exit-node", "vps")
	cafe.mustGlow(20*time.Second, "set", "--exit-node", "vps")
	if err := waitFor(reachTimeout, 250*time.Millisecond, func() error {
		return socksCurl(phoneH, "http://exit.example.test:8080/", "from "+vps4.String())
	}); err != nil {
		t.Errorf("phone -> web through the exit node: %v\n%s", err, routeStatus(phone))
	}
	ns.wantFrom(t, "exit node, phone", "exit.example.test", vps4)
	if err := socksCurl(phoneH, polURL(printer4, 8080), "from "+vpsLAN4.String()); err != nil {
		t.Errorf("phone -> printer while using the exit node: %v", err)
	}
	if err := waitFor(reachTimeout, 250*time.Millisecond, func() error {
		return exitDig(cafeH, "cafe-exit.example.test", web4)
	}); err != nil {
		t.Errorf("cafe: through the exit node: %v\n%s", err, routeStatus(cafe))
	}
	ns.wantFrom(t, "exit node, cafe", "cafe-exit.example.test", vps4)
	if got := cafeNS.all()["cafe-exit.example.test"]; len(got) > 0 {
		t.Errorf("exit node, cafe: the cafe's resolver saw the query too, from %v", got)
	}

	// The exit node goes away: nothing resolves, nothing connects, and
	// neither server sees anything.
	vps.mustGlow(20*time.Second, "down")
	dnsBefore, cafeDNSBefore, webBefore := ns.total(), cafeNS.total(), webSrv.total()
	if err := socksCurl(phoneH, "http://down.example.test:8080/", "from "+phoneGW.WAN.String()); err == nil {
		t.Errorf("phone: exit node down, yet curl by name went through")
	} else {
		t.Logf("phone, exit node down, by name: %v", err)
	}
	if err := socksCurl(phoneH, polURL(web4, 8080), "from "+phoneGW.WAN.String()); err == nil {
		t.Errorf("phone: exit node down, yet curl to %v went through", web4)
	} else {
		t.Logf("phone, exit node down, by address: %v", err)
	}
	if err := exitDig(cafeH, "cafe-down.example.test", web4); err == nil {
		t.Errorf("cafe: exit node down, yet the name resolved")
	} else {
		t.Logf("cafe, exit node down: %v", err)
	}
	if n := ns.total() - dnsBefore; n != 0 {
		t.Errorf("exit node down: the DNS server saw %d queries (leaked): %v", n, ns.all())
	}
	if n := cafeNS.total() - cafeDNSBefore; n != 0 {
		t.Errorf("exit node down: the cafe's resolver saw %d queries (leaked): %v", n, cafeNS.all())
	}
	if n := webSrv.total() - webBefore; n != 0 {
		t.Errorf("exit node down: the web server saw %d connections (leaked)", n)
	}

	// No exit node again: direct.
	phone.mustGlow(20*time.Second, "set", "--exit-node", "")
	cafe.mustGlow(20*time.Second, "set", "--exit-node", "")
	if err := socksCurl(phoneH, "http://again.example.test:8080/", "from "+phoneGW.WAN.String()); err != nil {
		t.Errorf("phone -> web after --exit-node '': %v", err)
	}
	ns.wantFrom(t, "after --exit-node '', phone", "again.example.test", phoneGW.WAN)
	if err := exitDig(cafeH, "cafe-again.example.test", web4); err != nil {
		t.Errorf("cafe: after --exit-node '': %v", err)
	}
	cafeNS.wantFrom(t, "after --exit-node '', cafe", "cafe-again.example.test", cafeLAN4)
}

// socksCurl fetches url in h through the userspace node's proxy at
// 127.0.0.1:1055 (names resolved by the proxy) and wants body.
func socksCurl(h *lab.Host, url, body string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := h.Run(ctx, "curl", "-sS", "-g", "-m", "8", "--socks5-hostname", "127.0.0.1:1055", url)
	if err != nil {
		return fmt.Errorf("curl via socks5 %s: %v: %s", url, err, strings.TrimSpace(res.Stderr))
	}
	if got := strings.TrimSpace(res.Stdout); got != body {
		return fmt.Errorf("curl via socks5 %s: got %q, want %q", url, got, body)
	}
	return nil
}

// exitDig asks glow's resolver in h for name's A record and wants want.
func exitDig(h *lab.Host, name string, want netip.Addr) error {
	out, err := digOut(h, "+short", "@"+magicV4, name, "A")
	if err != nil {
		return fmt.Errorf("dig %s: %v: %s", name, err, out)
	}
	if out != want.String() {
		return fmt.Errorf("dig %s: got %q, want %v", name, out, want)
	}
	return nil
}

// exitNS is a DNS server "on the Internet": it answers NAME.example.test
// with one address and records who asked for which name.
type exitNS struct {
	mu   sync.Mutex
	from map[string][]netip.Addr // lower-case name without the dot -> sources
	n    int
}

// exitDNSServe serves DNS on UDP port 53 of h until the test ends.
func exitDNSServe(t *testing.T, h *lab.Host, answer netip.Addr) *exitNS {
	t.Helper()
	var pc net.PacketConn
	if err := h.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", ":53")
		return err
	}); err != nil {
		t.Fatalf("%s: DNS server: %v", h.Name, err)
	}
	s := &exitNS{from: map[string][]netip.Addr{}}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg).SetReply(req)
		if len(req.Question) == 1 {
			q := req.Question[0]
			name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
			from := w.RemoteAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
			s.mu.Lock()
			s.from[name] = append(s.from[name], from)
			s.n++
			s.mu.Unlock()
			switch {
			case !strings.HasSuffix(name, ".example.test"):
				m.Rcode = dns.RcodeNameError
			case q.Qtype == dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
					A: answer.AsSlice()})
			}
		}
		w.WriteMsg(m)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ActivateAndServe()
	}()
	t.Cleanup(func() {
		srv.Shutdown()
		<-done
	})
	return s
}

func (s *exitNS) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *exitNS) all() map[string][]netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]netip.Addr{}
	for k, v := range s.from {
		out[k] = append([]netip.Addr(nil), v...)
	}
	return out
}

// wantFrom fails t unless name was asked, and only ever by want.
func (s *exitNS) wantFrom(t *testing.T, stage, name string, want netip.Addr) {
	t.Helper()
	s.mu.Lock()
	got := append([]netip.Addr(nil), s.from[name]...)
	s.mu.Unlock()
	if len(got) == 0 {
		t.Errorf("%s: the DNS server saw no query for %s", stage, name)
		return
	}
	for _, a := range got {
		if a != want {
			t.Errorf("%s: the DNS server saw the query for %s from %v, want only from %v (all: %v)", stage, name, a, want, got)
			return
		}
	}
	t.Logf("%s: the DNS server saw %d queries for %s, all from %v", stage, len(got), name, want)
}
