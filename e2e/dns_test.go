package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"glow/e2e/lab"
)

// The resolver's fixed service addresses (dns.ServiceV4, dns.ServiceV6),
// written out: the test checks what a user sees, not the package's constants.
const (
	magicV4 = "100.100.100.53"
	magicV6 = "fd00:676c:6f77::53"
)

// upstreamTestV4 is what the "ISP resolver" (dnsmasq) answers for
// upstream.test: an address no glow name has.
const upstreamTestV4 = "10.77.0.99"

// TestDNS is MagicDNS on a real kernel: n1 (admin of user alice) and nas on a
// LAN whose "ISP resolver" is dnsmasq on a third host. After `glow up` on n1
// (with DNS), every program there resolves nas.alice.glow and the short name
// nas through the system resolver, other names still come from dnsmasq
// (forwarded by glow), dig sees A, AAAA, PTR, NXDOMAIN over UDP and TCP, and
// `glow down` puts resolv.conf back byte for byte, also after a kill -9 of
// the daemon (repaired by the next `glow down` or `glow up`). A node with
// --no-dns leaves its resolv.conf alone.
func TestDNS(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	lan := l.Bridge("lan")
	isp, h1, hnas := l.Host("isp"), l.Host("n1"), l.Host("nas")
	ispIP := lan.Attach(isp)
	lan.Attach(h1)
	lan.Attach(hnas)

	// The ISP resolver. --pid-file= (empty) writes no pid file, -k stays in
	// the foreground so that the lab kills it at cleanup.
	dm, err := isp.Start("dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--pid-file=",
		"--listen-address="+ispIP.String(), "--bind-interfaces", "--log-facility=-",
		"--address=/upstream.test/"+upstreamTestV4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("==== dnsmasq output ====\n%s==== end of dnsmasq output ====", dm.Output())
		}
	})
	if err := waitFor(10*time.Second, 100*time.Millisecond, func() error {
		out, err := digOut(h1, "+short", "+time=1", "+tries=1", "upstream.test", "@"+ispIP.String())
		if err != nil {
			return err
		}
		if out != upstreamTestV4 {
			return fmt.Errorf("dnsmasq answers %q for upstream.test", out)
		}
		return nil
	}); err != nil {
		t.Fatalf("dnsmasq on %s does not answer: %v (output %q)", ispIP, err, dm.Output())
	}

	// n1's resolver configuration before glow: dnsmasq, a search domain,
	// options, comments of both kinds, a blank line with spaces and no
	// newline at the end, so that "byte for byte" means something.
	rc1 := resolvConfPath(h1)
	orig := []byte("# n1: the ISP's resolver (written by TestDNS)\n" +
		"; kept as it is\n" +
		"nameserver " + ispIP.String() + "\n" +
		"search example.test\n" +
		"options ndots:1 timeout:2\n" +
		"   \n" +
		"# end, without a newline")
	writeResolvConf(t, rc1, orig)
	// nas runs with --no-dns (node.up): its file must stay as it is.
	rcNas := resolvConfPath(hnas)
	origNas := []byte("# nas: untouched by glow --no-dns\nnameserver " + ispIP.String() + "\nsearch nas.example.test\n")
	writeResolvConf(t, rcNas, origNas)

	n1 := newNode(t, h1, "n1")
	nas := newNode(t, hnas, "nas")
	state1 := n1.state

	upDNS := func(n *node, args ...string) {
		t.Helper()
		res := n.mustGlow(60*time.Second, "up", args...)
		t.Logf("%s: glow up (with DNS) (%v):\n%s%s", n.name, res.Took.Round(time.Millisecond), res.Stdout, res.Stderr)
	}
	upDNS(n1, "--user", "alice", "--name", "n1")
	nas.up("--name", "nas", "--join", n1.invite())

	// nas's addresses, as n1's status says.
	var nasV4, nasV6 netip.Addr
	if err := waitFor(reachTimeout, 250*time.Millisecond, func() error {
		st, err := n1.status()
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.Name == "nas" {
				if p.User != "alice" {
					return fmt.Errorf("peer nas has user %q", p.User)
				}
				v4, err4 := netip.ParseAddr(p.IPv4)
				v6, err6 := netip.ParseAddr(p.IPv6)
				if err4 != nil || err6 != nil || !v4.Is4() || !v6.Is6() {
					return fmt.Errorf("peer nas: addresses %q %q", p.IPv4, p.IPv6)
				}
				nasV4, nasV6 = v4, v6
				return nil
			}
		}
		return fmt.Errorf("no peer nas in %+v", st.Peers)
	}); err != nil {
		t.Fatalf("n1: glow status --json: %v", err)
	}
	n1V4, n1V6 := n1.ips()
	t.Logf("n1 %s %s, nas %s %s, dnsmasq %s", n1V4, n1V6, nasV4, nasV6, ispIP)
	for _, a := range []netip.Addr{nasV4, nasV6} {
		if _, err := waitPing(h1, a, reachTimeout); err != nil {
			t.Fatalf("n1 cannot ping nas at %s: %v", a, err)
		}
	}

	// resolv.conf now names glow, keeps the search domain and options.
	cur := dnsReadFile(t, rc1)
	t.Logf("n1: resolv.conf while glow is up:\n%s", cur)
	wantLines := []string{"nameserver " + magicV4, "search alice.glow example.test", "options ndots:1 timeout:2"}
	for _, w := range wantLines {
		if !slices.Contains(strings.Split(string(cur), "\n"), w) {
			t.Errorf("n1: resolv.conf while up has no line %q:\n%s", w, cur)
		}
	}
	if strings.Contains(string(cur), "nameserver "+ispIP.String()) {
		t.Errorf("n1: resolv.conf while up still names dnsmasq %s, so names could bypass glow:\n%s", ispIP, cur)
	}
	if b, err := os.ReadFile(filepath.Join(state1, "resolv.conf.orig")); err != nil || !bytes.Equal(b, orig) {
		t.Errorf("n1: STATE/resolv.conf.orig = %q (%v), want the original %q", b, err, orig)
	}
	if b := dnsReadFile(t, rcNas); !bytes.Equal(b, origNas) {
		t.Errorf("nas (--no-dns): resolv.conf changed to %q, want %q", b, origNas)
	}

	// The system resolver (glibc: getent, ping), full and short names.
	checkSystemNames := func(stage string) {
		t.Helper()
		want := map[string]bool{nasV4.String(): true, nasV6.String(): true}
		for _, c := range []struct {
			argv []string
			want []netip.Addr // every one must appear
		}{
			{[]string{"getent", "ahosts", "nas.alice.glow"}, []netip.Addr{nasV4, nasV6}},
			{[]string{"getent", "ahostsv4", "nas"}, []netip.Addr{nasV4}},
			{[]string{"getent", "ahostsv6", "nas"}, []netip.Addr{nasV6}},
			{[]string{"getent", "ahostsv4", "NAS.Alice.Glow"}, []netip.Addr{nasV4}},
		} {
			out, err := dnsRunIn(h1, 10*time.Second, c.argv...)
			if err != nil {
				t.Errorf("%s: n1: %s: %v", stage, strings.Join(c.argv, " "), err)
				continue
			}
			got := getentAddrs(out)
			for _, w := range c.want {
				if !slices.Contains(got, w) {
					t.Errorf("%s: n1: %s gave %v, want %s among them (output %q)", stage, strings.Join(c.argv, " "), got, w, out)
				}
			}
			for _, g := range got {
				if !want[g.String()] {
					t.Errorf("%s: n1: %s gave %s, which is not nas's", stage, strings.Join(c.argv, " "), g)
				}
			}
		}
		// getent hosts: one address, the first family glibc asks for.
		out, err := dnsRunIn(h1, 10*time.Second, "getent", "hosts", "nas.alice.glow")
		if err != nil {
			t.Errorf("%s: n1: getent hosts nas.alice.glow: %v", stage, err)
		} else if f := strings.Fields(out); len(f) < 2 || !want[f[0]] || !slices.Contains(f[1:], "nas.alice.glow") {
			t.Errorf("%s: n1: getent hosts nas.alice.glow = %q, want one of nas's addresses named nas.alice.glow", stage, out)
		}
		// Other names still come from dnsmasq, through glow.
		out, err = dnsRunIn(h1, 10*time.Second, "getent", "hosts", "upstream.test")
		if err != nil {
			t.Errorf("%s: n1: getent hosts upstream.test: %v", stage, err)
		} else if f := strings.Fields(out); len(f) < 1 || f[0] != upstreamTestV4 {
			t.Errorf("%s: n1: getent hosts upstream.test = %q, want %s (from dnsmasq)", stage, out, upstreamTestV4)
		}
		// An unknown glow name fails in glibc too.
		if out, err := dnsRunIn(h1, 10*time.Second, "getent", "hosts", "nosuch.alice.glow"); lab.ExitCode(err) != 2 {
			t.Errorf("%s: n1: getent hosts nosuch.alice.glow: %q, %v; want exit status 2 (not found)", stage, out, err)
		}
		// ping by short name.
		if err := waitFor(10*time.Second, 200*time.Millisecond, func() error {
			_, err := dnsRunIn(h1, 5*time.Second, "ping", "-c1", "-W2", "nas")
			return err
		}); err != nil {
			t.Errorf("%s: n1: ping -c1 -W2 nas: %v", stage, err)
		}
	}
	checkSystemNames("glow up")

	// dig straight at the resolver: A, AAAA, PTR, NXDOMAIN, TCP, both
	// service addresses.
	digWant := func(want string, args ...string) {
		t.Helper()
		out, err := digOut(h1, args...)
		if err != nil {
			t.Errorf("n1: dig %s: %v", strings.Join(args, " "), err)
		} else if out != want {
			t.Errorf("n1: dig %s = %q, want %q", strings.Join(args, " "), out, want)
		}
	}
	for _, server := range []string{"@" + magicV4, "@" + magicV6} {
		digWant(nasV4.String(), "+short", "nas.alice.glow", server)
		digWant(nasV6.String(), "+short", "AAAA", "nas.alice.glow", server)
		digWant(nasV4.String(), "+short", "+tcp", "nas.alice.glow", server)
		digWant(nasV6.String(), "+short", "+tcp", "AAAA", "nas.alice.glow", server)
		digWant("nas.alice.glow.", "+short", "-x", nasV4.String(), server)
		digWant("nas.alice.glow.", "+short", "-x", nasV6.String(), server)
		digWant("n1.alice.glow.", "+short", "-x", n1V4.String(), server)
		digWant("nas.alice.glow.", "+short", "+tcp", "-x", nasV6.String(), server)
		digWant(upstreamTestV4, "+short", "upstream.test", server)
		digWant(upstreamTestV4, "+short", "+tcp", "upstream.test", server)
		digWant(n1V4.String(), "+short", "N1.ALICE.GLOW.", server)
	}
	// PTR through the system's resolver (resolv.conf), no @server.
	digWant("nas.alice.glow.", "+short", "-x", nasV4.String())
	for _, args := range [][]string{
		{"nosuch.alice.glow", "@" + magicV4},
		{"AAAA", "nosuch.alice.glow", "@" + magicV6},
		{"+tcp", "nosuch.alice.glow", "@" + magicV4},
	} {
		out, err := digOut(h1, append([]string{"+noall", "+comments"}, args...)...)
		if err != nil || !strings.Contains(out, "status: NXDOMAIN") {
			t.Errorf("n1: dig %s: want status NXDOMAIN, got %v:\n%s", strings.Join(args, " "), err, out)
		}
	}
	// nas runs with --no-dns but still serves the resolver on its TUN.
	if out, err := digOut(hnas, "+short", "n1.alice.glow", "@"+magicV4); err != nil || out != n1V4.String() {
		t.Errorf("nas (--no-dns): dig n1.alice.glow @%s = %q (%v), want %s", magicV4, out, err, n1V4)
	}

	// Figures: a Go client inside n1's namespace, no process start per query.
	dnsFigures(t, h1, nasV4)

	// glow down: the file is the original again, byte for byte.
	dnsDownRestores(t, n1, "glow down", rc1, orig)
	if _, err := os.Stat(filepath.Join(state1, "resolv.conf.orig")); err == nil {
		t.Errorf("glow down: STATE/resolv.conf.orig still there")
	}

	// Crash 1: kill -9, the file is still glow's; `glow down` with no
	// daemon repairs it.
	upDNS(n1)
	if b := dnsReadFile(t, rc1); !bytes.Contains(b, []byte("nameserver "+magicV4)) {
		t.Fatalf("n1: second glow up: resolv.conf is not glow's:\n%s", b)
	}
	dnsKill9(t, n1)
	if b := dnsReadFile(t, rc1); !bytes.Contains(b, []byte("nameserver "+magicV4)) {
		t.Errorf("after kill -9: resolv.conf no longer glow's (nothing to repair?):\n%s", b)
	}
	if b, err := os.ReadFile(filepath.Join(state1, "resolv.conf.orig")); err != nil || !bytes.Equal(b, orig) {
		t.Errorf("after kill -9: STATE/resolv.conf.orig = %q (%v), want the original", b, err)
	}
	res := n1.mustGlow(30*time.Second, "down")
	t.Logf("n1: glow down after kill -9: %s%s", res.Stdout, res.Stderr)
	dnsCheckRestored(t, "kill -9, then glow down", rc1, orig)

	// Crash 2: kill -9, then `glow up` again: it restores before it backs
	// up, so the backup is still the user's file, and names work again.
	upDNS(n1)
	dnsKill9(t, n1)
	upDNS(n1)
	if b, err := os.ReadFile(filepath.Join(state1, "resolv.conf.orig")); err != nil || !bytes.Equal(b, orig) {
		t.Errorf("kill -9, then glow up: STATE/resolv.conf.orig = %q (%v), want the original %q", b, err, orig)
	}
	if b := dnsReadFile(t, rc1); !bytes.Contains(b, []byte("nameserver "+magicV4)) || bytes.Contains(b, []byte("nameserver "+ispIP.String())) {
		t.Errorf("kill -9, then glow up: resolv.conf is not (only) glow's:\n%s", b)
	}
	if _, err := waitPing(h1, nasV4, reachTimeout); err != nil {
		t.Errorf("kill -9, then glow up: n1 cannot ping nas: %v", err)
	}
	checkSystemNames("kill -9, then glow up")
	dnsDownRestores(t, n1, "kill -9, glow up, glow down", rc1, orig)

	// n1 with --no-dns: resolv.conf untouched while up and after down.
	n1.up()
	if b := dnsReadFile(t, rc1); !bytes.Equal(b, orig) {
		t.Errorf("n1 up --no-dns: resolv.conf changed to %q", b)
	}
	dnsDownRestores(t, n1, "--no-dns, glow down", rc1, orig)
	if b := dnsReadFile(t, rcNas); !bytes.Equal(b, origNas) {
		t.Errorf("nas (--no-dns): resolv.conf changed to %q, want %q", b, origNas)
	}
}

// resolvConfPath is the file that `ip netns exec` bind-mounts over
// /etc/resolv.conf in h.
func resolvConfPath(h *lab.Host) string {
	return filepath.Join("/etc/netns", h.NS, "resolv.conf")
}

// writeResolvConf rewrites path in place (the same inode, as a bind mount
// needs).
func writeResolvConf(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// dnsReadFile returns the file at path, failing the test if it cannot.
func dnsReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dnsCheckRestored reports an error unless path holds exactly orig.
func dnsCheckRestored(t *testing.T, stage, path string, orig []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%s: %v", stage, err)
	} else if !bytes.Equal(b, orig) {
		t.Errorf("%s: resolv.conf not restored byte for byte:\n got %q\nwant %q", stage, b, orig)
	}
}

// dnsDownRestores runs `glow down` on a running n and checks that resolv.conf
// is the original once it returns, as the CLI contract says ("stop the
// daemon, remove the interface, restore DNS settings"). If it is not, it
// also waits (bounded) for the daemon process to exit and says whether the
// file was restored late or not at all. Waiting for the process either way
// keeps the next `glow up` of the test from meeting the old daemon's state
// lock; it does not hide the failure, which is reported first.
func dnsDownRestores(t *testing.T, n *node, stage, path string, orig []byte) {
	t.Helper()
	pid, err := n.daemonPid()
	if err != nil {
		t.Fatalf("%s: %s: %v", stage, n.name, err)
	}
	res := n.mustGlow(30*time.Second, "down")
	b, err := os.ReadFile(path)
	returned := time.Now()
	early := err == nil && bytes.Equal(b, orig)
	if !early {
		t.Errorf("%s: `glow down` returned (%q) but resolv.conf is not the original yet:\n got %q\nwant %q",
			stage, strings.TrimSpace(res.Stdout), b, orig)
	}
	gone := waitFor(15*time.Second, 20*time.Millisecond, func() error {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			return fmt.Errorf("daemon pid %d still alive", pid)
		}
		return nil
	})
	if gone != nil {
		t.Errorf("%s: %s: after glow down: %v", stage, n.name, gone)
	} else if !early {
		t.Logf("%s: the daemon (pid %d) exited %v after `glow down` returned", stage, pid, time.Since(returned).Round(time.Millisecond))
	}
	if !early {
		dnsCheckRestored(t, stage+" (after the daemon exited)", path, orig)
	}
}

// dnsKill9 SIGKILLs n's daemon (pid from STATE/glow.pid) and waits until it is
// gone.
func dnsKill9(t *testing.T, n *node) {
	t.Helper()
	pid, err := n.daemonPid()
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %s (%d): %v", n.name, pid, err)
	}
	if err := waitFor(5*time.Second, 50*time.Millisecond, func() error {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			return fmt.Errorf("pid %d still alive", pid)
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
}

// dnsRunIn runs argv in h with a timeout and returns its trimmed stdout.
func dnsRunIn(h *lab.Host, timeout time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := h.Run(ctx, argv...)
	return strings.TrimSpace(res.Stdout), err
}

// digOut runs dig in h (3 s per try, 2 tries) and returns its trimmed output.
func digOut(h *lab.Host, args ...string) (string, error) {
	return dnsRunIn(h, 15*time.Second, append([]string{"dig", "+time=3", "+tries=2"}, args...)...)
}

// getentAddrs returns the distinct addresses in the first column of getent
// output.
func getentAddrs(out string) []netip.Addr {
	var addrs []netip.Addr
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if a, err := netip.ParseAddr(f[0]); err == nil && !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// dnsInNetns runs f on an OS thread moved into h's network namespace. Sockets
// f opens stay in that namespace and may be used from any goroutine. The
// thread is never unlocked, so it is thrown away when f returns.
func dnsInNetns(h *lab.Host, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.GetFromName(h.NS)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// dnsFigures measures glow's resolver from inside h with a Go client:
// sequential latency for a glow name and a forwarded name, and queries per
// second with 4 clients in parallel. Figures only; nothing is asserted
// except that the answers are right.
func dnsFigures(t *testing.T, h *lab.Host, nasV4 netip.Addr) {
	t.Helper()
	const nPar = 4
	var conns []*dns.Conn
	err := dnsInNetns(h, func() error {
		for i := 0; i < nPar+1; i++ {
			c, err := net.Dial("udp", net.JoinHostPort(magicV4, "53"))
			if err != nil {
				return err
			}
			conns = append(conns, &dns.Conn{Conn: c})
		}
		return nil
	})
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		t.Errorf("dns figures: sockets in %s: %v", h.NS, err)
		return
	}
	client := &dns.Client{Timeout: 2 * time.Second}
	query := func(c *dns.Conn, name string, want string) (time.Duration, error) {
		m := new(dns.Msg).SetQuestion(name, dns.TypeA)
		r, rtt, err := client.ExchangeWithConn(m, c)
		if err != nil {
			return 0, err
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			return 0, fmt.Errorf("%s: rcode %s, %d answers", name, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
		a, ok := r.Answer[0].(*dns.A)
		if !ok || a.A.String() != want {
			return 0, fmt.Errorf("%s: answer %v, want %s", name, r.Answer[0], want)
		}
		return rtt, nil
	}
	latency := func(label, name, want string, n int) {
		t.Helper()
		var rtts []time.Duration
		for i := 0; i < n; i++ {
			rtt, err := query(conns[0], name, want)
			if err != nil {
				t.Errorf("dns figures: %s query %d: %v", label, i, err)
				return
			}
			rtts = append(rtts, rtt)
		}
		slices.Sort(rtts)
		us := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond)) }
		metric(t, "dns."+label+".p50_us", us(rtts[len(rtts)/2]))
		metric(t, "dns."+label+".p99_us", us(rtts[len(rtts)*99/100]))
	}
	latency("local_name", "nas.alice.glow.", nasV4.String(), 1000)
	latency("forwarded_name", "upstream.test.", upstreamTestV4, 200)

	// Throughput: nPar clients, one query in flight each, for 2 s.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		first error
	)
	start := time.Now()
	deadline := start.Add(2 * time.Second)
	for i := 1; i <= nPar; i++ {
		wg.Add(1)
		go func(c *dns.Conn) {
			defer wg.Done()
			n := 0
			var err error
			for time.Now().Before(deadline) {
				if _, err = query(c, "nas.alice.glow.", nasV4.String()); err != nil {
					break
				}
				n++
			}
			mu.Lock()
			total += n
			if err != nil && first == nil {
				first = err
			}
			mu.Unlock()
		}(conns[i])
	}
	wg.Wait()
	took := time.Since(start)
	if first != nil {
		t.Errorf("dns figures: parallel queries: %v", first)
	}
	metric(t, "dns.local_name.qps_4clients", fmt.Sprintf("%.0f", float64(total)/took.Seconds()))
}
