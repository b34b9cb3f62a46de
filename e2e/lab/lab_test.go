package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as a tiny UDP tool run inside namespaces:
//
//	LAB_HELPER=echo    lab.test PORT             reply to each datagram with the sender's address (exits after 60 s)
//	LAB_HELPER=ask     lab.test LPORT ADDR...    from local port LPORT, ask each ADDR, print "ADDR -> REPLY" (or "ADDR -> timeout")
const helperEnv = "LAB_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		if os.Geteuid() != 0 {
			fmt.Fprintf(os.Stderr, "\n!!!!! %s !!!!!\n\n", SkipMessage)
		}
		os.Exit(m.Run())
	case "echo":
		os.Exit(helperEcho(os.Args[1:]))
	case "ask":
		os.Exit(helperAsk(os.Args[1:]))
	default:
		fmt.Fprintln(os.Stderr, "unknown", helperEnv)
		os.Exit(2)
	}
}

func helperEcho(args []string) int {
	c, err := net.ListenPacket("udp4", ":"+args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("listening")
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 1500)
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			return 0
		}
		_, _ = c.WriteTo([]byte(from.String()), from)
	}
}

func helperAsk(args []string) int {
	c, err := net.ListenPacket("udp4", ":"+args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	buf := make([]byte, 1500)
	for _, dst := range args[1:] {
		ua, err := net.ResolveUDPAddr("udp4", dst)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		reply := "timeout"
		for try := 0; try < 3 && reply == "timeout"; try++ {
			_, _ = c.WriteTo([]byte("hi"), ua)
			_ = c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					break
				}
				if from.String() == ua.String() {
					reply = string(buf[:n])
					break
				}
			}
		}
		fmt.Printf("%s -> %s\n", dst, reply)
	}
	return 0
}

// helper runs the test binary as a helper inside h.
func helper(t *testing.T, h *Host, mode string, args ...string) *Result {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := h.Run(ctx, append([]string{"env", helperEnv + "=" + mode, self}, args...)...)
	if err != nil {
		t.Fatalf("helper %s in %s: %v", mode, h, err)
	}
	return res
}

func startEcho(t *testing.T, h *Host, port int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Start("env", helperEnv+"=echo", self, strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && !strings.Contains(p.Output(), "listening"); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(p.Output(), "listening") {
		t.Fatalf("echo helper in %s did not start: %q", h, p.Output())
	}
}

// askMap maps each destination to the reply (the address it saw us from).
func askMap(t *testing.T, h *Host, lport int, dsts ...string) map[string]string {
	t.Helper()
	res := helper(t, h, "ask", append([]string{strconv.Itoa(lport)}, dsts...)...)
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
		if k, v, ok := strings.Cut(line, " -> "); ok {
			m[k] = v
		}
	}
	return m
}

func ping(h *Host, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := h.Run(ctx, "ping", "-n", "-c1", "-W2", addr)
	return err
}

func TestBridgeLAN(t *testing.T) {
	t.Parallel()
	l := New(t)
	lan := l.Bridge("lan")
	a, b, c := l.Host("a"), l.Host("b"), l.Host("c")
	for _, h := range []*Host{a, b, c} {
		lan.Attach(h)
	}
	if got, want := a.IP().String(), "10.77.1.10"; got != want {
		t.Errorf("a.IP() = %s, want %s", got, want)
	}
	for _, from := range []*Host{a, b, c} {
		for _, to := range []*Host{a, b, c} {
			for _, addr := range []string{to.IP().String(), to.IP6().String()} {
				if err := ping(from, addr); err != nil {
					t.Errorf("%s -> %s: %v", from.Name, addr, err)
				}
			}
		}
	}
	// No route out: the lab's hosts reach nothing but the lab.
	if err := ping(a, "198.51.100.1"); err == nil {
		t.Errorf("a reached 198.51.100.1 with no router")
	}
	// lo is up everywhere, including bridges.
	for _, ns := range []string{a.NS, lan.NS} {
		out := a.lab.must(ns, "ip", "-o", "link", "show", "lo")
		if !strings.Contains(out, "UP") {
			t.Errorf("lo in %s not up: %s", ns, out)
		}
	}
	// Multicast crosses the bridge (LAN discovery relies on it): ping the
	// all-nodes group and expect more than our own answer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, _ := a.Run(ctx, "ping", "-n", "-c2", "-W2", "ff02::1%eth0")
	if n := strings.Count(res.Stdout, "bytes from"); n < 3 {
		t.Errorf("ping ff02::1 from a: %d replies, want >= 3 (a, b, c twice):\n%s", n, res.Stdout)
	}
}

func TestRunResult(t *testing.T) {
	t.Parallel()
	l := New(t)
	h := l.Host("h")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.Run(ctx, "sh", "-c", "echo out; echo err >&2; exit 3")
	if ExitCode(err) != 3 || res.Stdout != "out\n" || res.Stderr != "err\n" {
		t.Errorf("Run = %+v, %v; want out/err/3", res, err)
	}
	// A command that leaves a background child holding stdout returns
	// anyway, within the pipe wait delay.
	start := time.Now()
	res, err = h.Run(ctx, "sh", "-c", "sleep 30 & echo started")
	if err != nil || !strings.Contains(res.Stdout, "started") {
		t.Errorf("Run with lingering child = %+v, %v", res, err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("Run with lingering child took %v", d)
	}
	// The timeout kills the command.
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	_, err = h.Run(short, "sleep", "30")
	if err == nil || !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "deadline") {
		t.Errorf("Run past deadline: %v", err)
	}
	// KillAll leaves nothing behind (the lingering sleep above).
	if err := h.KillAll(); err != nil {
		t.Error(err)
	}
	if pids, _ := h.Pids(); len(pids) != 0 {
		t.Errorf("pids after KillAll: %v", pids)
	}
}

func TestNAT(t *testing.T) {
	t.Parallel()
	l := New(t)
	s1, s2 := l.Host("s1"), l.Host("s2")
	l.Internet().Attach(s1)
	l.Internet().Attach(s2)
	startEcho(t, s1, 3478)
	startEcho(t, s2, 3478)
	srv1, srv2 := s1.IP().String()+":3478", s2.IP().String()+":3478"

	type natCase struct {
		nat      NAT
		sameMap  bool
		preserve bool
	}
	for _, tc := range []natCase{{EasyNAT, true, true}, {HardNAT, false, false}} {
		lan := l.Bridge("lan-" + tc.nat.String())
		h := l.Host("h-" + tc.nat.String())
		lan.Attach(h)
		r := l.Router("r-"+tc.nat.String(), lan, tc.nat)
		m := askMap(t, h, 40000, srv1, srv2)
		m1, m2 := m[srv1], m[srv2]
		if m1 == "timeout" || m2 == "timeout" || m1 == "" || m2 == "" {
			t.Errorf("%s NAT: no reply: %v", tc.nat, m)
			continue
		}
		wantIP := r.WAN.String()
		ip1, port1, _ := net.SplitHostPort(m1)
		_, port2, _ := net.SplitHostPort(m2)
		if ip1 != wantIP {
			t.Errorf("%s NAT: seen from %s, want %s", tc.nat, ip1, wantIP)
		}
		if (m1 == m2) != tc.sameMap {
			t.Errorf("%s NAT: mappings %s and %s, want same=%v", tc.nat, m1, m2, tc.sameMap)
		}
		if tc.preserve && (port1 != "40000" || port2 != "40000") {
			t.Errorf("%s NAT: port not preserved: %s %s", tc.nat, m1, m2)
		}
		t.Logf("%s NAT: %s sees %s, %s sees %s", tc.nat, srv1, m1, srv2, m2)

		// Stateful filtering: the Internet cannot open flows to the router
		// itself or to the LAN; the LAN host's pings to the Internet work.
		if err := ping(h, s1.IP().String()); err != nil {
			t.Errorf("%s NAT: LAN host cannot ping the Internet: %v", tc.nat, err)
		}
		if err := ping(s1, r.WAN.String()); err == nil {
			t.Errorf("%s NAT: unsolicited ping to the router's WAN address answered", tc.nat)
		}
		// A port forward opens one port.
		startEcho(t, h, 5000)
		r.Forward("udp", 5000, h)
		fwd := r.WAN.String() + ":5000"
		if got := askMap(t, s1, 41000, fwd)[fwd]; got != s1.IP().String()+":41000" {
			t.Errorf("%s NAT: via port forward got %q", tc.nat, got)
		}
		// Without a forward, unsolicited inbound UDP does not pass.
		startEcho(t, h, 5001)
		nofwd := r.WAN.String() + ":5001"
		if got := askMap(t, s1, 41001, nofwd)[nofwd]; got != "timeout" {
			t.Errorf("%s NAT: unsolicited UDP to %s answered: %q", tc.nat, nofwd, got)
		}
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	RequireRoot(t)
	var nss []string
	t.Run("inner", func(t *testing.T) {
		l := New(t)
		lan := l.Bridge("lan")
		h := l.Host("h")
		lan.Attach(h)
		l.Router("r", lan, EasyNAT)
		if _, err := h.Start("sleep", "60"); err != nil {
			t.Fatal(err)
		}
		// A daemon-like grandchild outside the lab's process tracking.
		h.MustRun("sh", "-c", "setsid sleep 60 >/dev/null 2>&1 < /dev/null &")
		l.mu.Lock()
		nss = append(nss, l.nss...)
		l.mu.Unlock()
	})
	if len(nss) != 4 { // lan, h, inet, r
		t.Errorf("namespaces created: %v, want 4", nss)
	}
	for _, ns := range nss {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s left after cleanup", ns)
		}
		if _, err := os.Stat(filepath.Join("/etc/netns", ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("/etc/netns/%s left after cleanup", ns)
		}
	}
}
