package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"glow/e2e/lab"
)

// TestPolicyFriends (issue 6): alice (nas and desk behind an easy NAT, and a
// public vps, her admin node) and bob (laptop behind another easy NAT) become
// friends. Before sharing bob reaches nothing of alice's; after `glow share
// nas:8080/tcp --with bob` his curl to nas.alice.glow:8080 works while
// nas:8081, ping to nas and desk do not (and desk stays unknown to him); `glow
// unshare` cuts an open connection within seconds and refuses new ones; a
// policy with an error is refused naming the line and the old policy stays in
// force; alice's own nodes reach each other throughout; nas counts its drops.
// Bob's checks go to both overlay addresses (IPv4 and IPv6) of alice's nodes.
func TestPolicyFriends(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	lanA := l.Bridge("a-lan")
	nasH, deskH := l.Host("nas"), l.Host("desk")
	lanA.Attach(nasH)
	lanA.Attach(deskH)
	l.Router("a-gw", lanA, lab.EasyNAT)
	_, laptopH := siteHost(l, "laptop", lab.EasyNAT)

	// Services, served by the test process from sockets made inside the
	// hosts: each answers HTTP GET with its own body; nas:8080 also echoes
	// lines for a connection that does not start with an HTTP request.
	polServe(t, nasH, 8080, "nas 8080")
	polServe(t, nasH, 8081, "nas 8081")
	polServe(t, deskH, 8080, "desk 8080")

	vps := newNode(t, vpsH, "vps")
	nas := newNode(t, nasH, "nas")
	desk := newNode(t, deskH, "desk")
	laptop := newNode(t, laptopH, "laptop")

	vps.up("--user", "alice", "--name", "vps")
	nas.up("--name", "nas", "--join", vps.invite())
	desk.up("--name", "desk", "--join", vps.invite())
	// bob with DNS on, so that nas.alice.glow resolves for his programs.
	res := laptop.mustGlow(60*time.Second, "up", "--user", "bob", "--name", "laptop")
	t.Logf("laptop: glow up (with DNS) (%v):\n%s%s", res.Took.Round(time.Millisecond), res.Stdout, res.Stderr)

	nasV4, nasV6 := nas.ips()
	deskV4, deskV6 := desk.ips()
	t.Logf("nas %s %s, desk %s %s", nasV4, nasV6, deskV4, deskV6)

	// aliceOK: alice's own nodes reach each other on every port.
	aliceOK := func(stage string) {
		t.Helper()
		failed := t.Failed()
		defer func() {
			if t.Failed() && !failed {
				for _, n := range []*node{nas, desk} {
					_, raw, err := polDrops(n)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					st, _ := polGlow(ctx, n, "status")
					cancel()
					t.Logf("%s: %s: drops %s %v; status:\n%s", stage, n.name, raw, err, st.Stdout)
				}
			}
		}()
		if _, err := waitPing(deskH, nasV4, reachTimeout); err != nil {
			t.Errorf("%s: alice's desk cannot ping nas (%s): %v", stage, nasV4, err)
		}
		if _, err := waitPing(nasH, deskV4, reachTimeout); err != nil {
			t.Errorf("%s: alice's nas cannot ping desk (%s): %v", stage, deskV4, err)
		}
		if _, err := waitPing(nasH, deskV6, reachTimeout); err != nil {
			t.Errorf("%s: alice's nas cannot ping desk (%s): %v", stage, deskV6, err)
		}
		if err := waitFor(reachTimeout, 500*time.Millisecond, func() error {
			return polCurlWant(deskH, polURL(nasV4, 8081), "nas 8081")
		}); err != nil {
			t.Errorf("%s: alice's desk cannot reach nas:8081: %v", stage, err)
		}
	}
	aliceOK("before friends")

	// 1. Friends: vps invites, laptop accepts; both lists show the other.
	code := polLastLine(t, polMust(t, vps, 20*time.Second, "friend", "invite"))
	res = polMust(t, laptop, 30*time.Second, "friend", "add", code)
	t.Logf("laptop: glow friend add: %s%s", res.Stdout, res.Stderr)
	for _, c := range []struct {
		n    *node
		want string
	}{{vps, "bob"}, {laptop, "alice"}} {
		if err := waitFor(10*time.Second, 250*time.Millisecond, func() error {
			f, err := polFriend(c.n, c.want)
			if err == nil && f == nil {
				err = fmt.Errorf("%s not a friend", c.want)
			}
			return err
		}); err != nil {
			t.Errorf("%s: glow friend list: %v", c.n.name, err)
		}
	}

	// 2. Before sharing bob reaches nothing of alice's.
	polDenied(t, "before sharing", laptopH, nasV4, 8080)
	polDenied(t, "before sharing", laptopH, nasV6, 8080)
	aliceOK("friends, nothing shared")

	// 3. Share nas:8080/tcp with bob.
	res = vps.mustGlow(20*time.Second, "share", "nas:8080/tcp", "--with", "bob")
	t.Logf("vps: glow share: %s%s", res.Stdout, res.Stderr)
	shared := time.Now()
	nasURL := "http://nas.alice.glow:8080/"
	if err := waitFor(45*time.Second, 500*time.Millisecond, func() error {
		return polCurlWant(laptopH, nasURL, "nas 8080")
	}); err != nil {
		t.Fatalf("after share: bob's curl %s: %v", nasURL, err)
	}
	metric(t, "share_to_first_curl_s", fmt.Sprintf("%.3f", time.Since(shared).Seconds()))
	for _, a := range []netip.Addr{nasV4, nasV6} {
		if err := waitFor(reachTimeout, 500*time.Millisecond, func() error {
			return polCurlWant(laptopH, polURL(a, 8080), "nas 8080")
		}); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			rt, _ := laptopH.Run(ctx, "ip", "route", "get", a.String())
			cancel()
			t.Errorf("after share: bob's curl %s: %v (laptop: ip route get %s: %s%s)", polURL(a, 8080), err, a, rt.Stdout, rt.Stderr)
		}
	}
	polSharedOnlyChecks(t, "after share", laptop, nasV4, nasV6, deskV4, deskV6)
	if f, err := polFriend(vps, "bob"); err != nil || f == nil || !slices.Contains(f.Shared, "nas:8080/tcp") {
		t.Errorf("after share: vps's friend list for bob: %+v %v, want shared nas:8080/tcp", f, err)
	}
	aliceOK("after share")

	// 4. A long-lived flow to nas:8080 (an echo every 200 ms), then unshare.
	fl := polStartFlow(t, laptopH, netip.AddrPortFrom(nasV4, 8080))
	defer fl.stop()
	if err := waitFor(10*time.Second, 100*time.Millisecond, func() error {
		if n, _ := fl.echoes(); n < 10 {
			return fmt.Errorf("%d echoes", n)
		}
		return nil
	}); err != nil {
		t.Fatalf("flow laptop -> nas:8080: %v (error %v)", err, fl.err())
	}
	nBefore, _ := fl.echoes()
	unshareStart := time.Now()
	res = vps.mustGlow(20*time.Second, "unshare", "nas:8080/tcp", "--with", "bob")
	t.Logf("vps: glow unshare (%v): %s%s", res.Took.Round(time.Millisecond), res.Stdout, res.Stderr)
	const quiet = 3 * time.Second
	if err := waitFor(20*time.Second, 100*time.Millisecond, func() error {
		_, last := fl.echoes()
		if d := time.Since(last); d < quiet {
			return fmt.Errorf("last echo %v ago", d.Round(time.Millisecond))
		}
		return nil
	}); err != nil {
		t.Errorf("after unshare: the open flow to nas:8080 still carries data: %v", err)
	}
	// The flow is cut between the last echo and the next one (200 ms
	// later): unshare_cut is when the last echo came back, counted from
	// the start of `glow unshare` (0 when none came back after it).
	n, last := fl.echoes()
	cut := max(last.Sub(unshareStart), 0)
	t.Logf("after unshare: %d echoes before glow unshare (which took %v), %d after it, the last %v after it started",
		nBefore, res.Took.Round(time.Millisecond), n-nBefore, cut.Round(time.Millisecond))
	metric(t, "unshare_cut_s", fmt.Sprintf("%.3f", cut.Seconds()))
	if cut > 5*time.Second {
		t.Errorf("after unshare: the open flow carried data for %v (want a few seconds at most)", cut.Round(time.Millisecond))
	}
	fl.stop()
	polDenied(t, "after unshare", laptopH, nasV4, 8080)
	polDenied(t, "after unshare", laptopH, nasV6, 8080)
	if err := polCurlWant(laptopH, nasURL, "nas 8080"); err == nil {
		t.Errorf("after unshare: bob's curl %s still works", nasURL)
	}
	aliceOK("after unshare")

	// 6. A policy with an error is refused, naming the line; the old
	// policy stays (shown and in force).
	showBefore := polShow(t, vps)
	bad := filepath.Join(t.TempDir(), "bad.policy")
	if err := os.WriteFile(bad, []byte("# a port out of range\nallow bob -> nas:99999/tcp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	polApplyRefused(t, "unshared", vps, bad, "line 2")
	if got := polShow(t, vps); got != showBefore {
		t.Errorf("after a refused policy: glow policy show changed from\n%s\nto\n%s", showBefore, got)
	}
	polDenied(t, "after a refused policy", laptopH, nasV4, 8080)

	// A re-share works as before.
	res = vps.mustGlow(20*time.Second, "share", "nas:8080/tcp", "--with", "bob")
	t.Logf("vps: glow share again: %s%s", res.Stdout, res.Stderr)
	if err := waitFor(45*time.Second, 500*time.Millisecond, func() error {
		return polCurlWant(laptopH, nasURL, "nas 8080")
	}); err != nil {
		t.Fatalf("after re-share: bob's curl %s: %v", nasURL, err)
	}
	polSharedOnlyChecks(t, "after re-share", laptop, nasV4, nasV6, deskV4, deskV6)

	// A refused edit while the share is in force: it would also open 8081;
	// the old policy stays, so 8080 works and 8081 does not.
	showShared := polShow(t, vps)
	if err := os.WriteFile(bad, []byte("allow bob -> nas:8080/tcp\nallow bob -> nas:8081/tcp\nallow bob -> nas:99999/tcp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	polApplyRefused(t, "shared", vps, bad, "line 3")
	if got := polShow(t, vps); got != showShared {
		t.Errorf("after a refused policy (shared): glow policy show changed from\n%s\nto\n%s", showShared, got)
	}
	if err := polCurlWant(laptopH, nasURL, "nas 8080"); err != nil {
		t.Errorf("after a refused policy (shared): bob's curl %s: %v", nasURL, err)
	}
	polDenied(t, "after a refused policy (shared)", laptopH, nasV4, 8081)
	aliceOK("at the end")

	// nas counted what it dropped.
	drops, raw, err := polDrops(nas)
	if err != nil {
		t.Errorf("nas: glow status --json: %v", err)
	} else if drops["filter/not-shared"] == 0 {
		t.Errorf("nas: drops[\"filter/not-shared\"] = 0 after bob's refused pings and connections; drops: %s", raw)
	} else {
		t.Logf("nas: drops %s", raw)
		metric(t, "nas.filter_not_shared_drops", strconv.FormatUint(drops["filter/not-shared"], 10))
	}
}

// polSharedOnlyChecks checks, while nas:8080/tcp is shared with bob, that
// nothing else of alice's is reachable from laptop, and that desk stays
// unknown to bob.
func polSharedOnlyChecks(t *testing.T, stage string, laptop *node, nasV4, nasV6, deskV4, deskV6 netip.Addr) {
	t.Helper()
	h := laptop.host
	polDenied(t, stage, h, nasV4, 8081)
	polDenied(t, stage, h, nasV6, 8081)
	if err := polCurlWant(h, "http://nas.alice.glow:8081/", "nas 8081"); err == nil {
		t.Errorf("%s: bob reaches nas.alice.glow:8081", stage)
	}
	for _, a := range []netip.Addr{nasV4, nasV6} {
		if err := ping(h, a); err == nil {
			t.Errorf("%s: bob's ping to nas (%s) is answered", stage, a)
		}
	}
	polDenied(t, stage, h, deskV4, 8080)
	polDenied(t, stage, h, deskV6, 8080)
	if err := ping(h, deskV4); err == nil {
		t.Errorf("%s: bob's ping to desk (%s) is answered", stage, deskV4)
	}
	// Bob learns nas, not desk.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if res, err := h.Run(ctx, "getent", "hosts", "desk.alice.glow"); err == nil {
		t.Errorf("%s: desk.alice.glow resolves for bob: %q", stage, res.Stdout)
	}
	if res, err := h.Run(ctx, "getent", "hosts", "nas.alice.glow"); err != nil {
		t.Errorf("%s: nas.alice.glow does not resolve for bob: %v", stage, err)
	} else {
		t.Logf("%s: bob resolves %s", stage, strings.Join(strings.Fields(res.Stdout), " "))
	}
	if st, err := laptop.status(); err != nil {
		t.Errorf("%s: laptop: glow status: %v", stage, err)
	} else if p := peerNamed(st, "desk"); p != nil {
		t.Errorf("%s: laptop's status lists alice's desk: %+v", stage, *p)
	}
	if f, err := polFriend(laptop, "alice"); err != nil || f == nil {
		t.Errorf("%s: laptop: friend alice: %+v %v", stage, f, err)
	} else if slices.ContainsFunc(f.Nodes, func(s string) bool { return shortName(s) == "desk" }) {
		t.Errorf("%s: laptop's friend list shows alice's desk: %+v", stage, *f)
	}
}

// polGlow runs `glow --state DIR ARGS...` in n's host: the global
// --state goes before the command, as subcommands of friend and policy
// read their first argument as the subcommand.
func polGlow(ctx context.Context, n *node, args ...string) (*lab.Result, error) {
	return n.host.Run(ctx, append([]string{glowBin, "--state", n.state}, args...)...)
}

// polMust is polGlow with a timeout that fails the test on error.
func polMust(t *testing.T, n *node, timeout time.Duration, args ...string) *lab.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := polGlow(ctx, n, args...)
	if err != nil {
		t.Fatalf("%s: %v: %s", n.name, err, strings.TrimSpace(res.Stderr))
	}
	return res
}

// polURL is http://ADDR:PORT/ (brackets for IPv6).
func polURL(a netip.Addr, port uint16) string {
	return "http://" + netip.AddrPortFrom(a, port).String() + "/"
}

// polCurlWant runs curl -m 3 url in h and wants body as the answer.
func polCurlWant(h *lab.Host, url, body string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.Run(ctx, "curl", "-sS", "-g", "-m", "3", url)
	if err != nil {
		return fmt.Errorf("curl %s: %v: %s", url, err, strings.TrimSpace(res.Stderr))
	}
	if got := strings.TrimSpace(res.Stdout); got != body {
		return fmt.Errorf("curl %s: got %q, want %q", url, got, body)
	}
	return nil
}

// polDenied fails t if h's curl -m 3 to a:port gets an answer.
func polDenied(t *testing.T, stage string, h *lab.Host, a netip.Addr, port uint16) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := polURL(a, port)
	res, err := h.Run(ctx, "curl", "-sS", "-g", "-m", "3", url)
	if err == nil {
		t.Errorf("%s: %s's curl %s answered %q, want no connection", stage, h.Name, url, res.Stdout)
		return
	}
	t.Logf("%s: %s's curl %s refused as it should: exit %d %s", stage, h.Name, url, lab.ExitCode(err), strings.TrimSpace(res.Stderr))
}

// polLastLine is the last non-empty line of a command's stdout (a code).
func polLastLine(t *testing.T, res *lab.Result) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	code := strings.TrimSpace(lines[len(lines)-1])
	if code == "" || strings.ContainsAny(code, " \t") {
		t.Fatalf("%v: no one-word code on the last line of stdout: %q (stderr %q)", res.Argv, res.Stdout, res.Stderr)
	}
	return code
}

type polFriendInfo struct {
	Name   string   `json:"name"`
	Nodes  []string `json:"nodes"`
	Shared []string `json:"shared"`
}

// polFriend returns n's friend called name from `glow friend list --json`
// (nil when not listed).
func polFriend(n *node, name string) (*polFriendInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := polGlow(ctx, n, "friend", "list", "--json")
	if err != nil {
		return nil, err
	}
	var list []polFriendInfo
	if err := json.Unmarshal([]byte(res.Stdout), &list); err != nil {
		return nil, fmt.Errorf("glow friend list --json: %v in %q", err, res.Stdout)
	}
	for i := range list {
		if list[i].Name == name {
			return &list[i], nil
		}
	}
	return nil, nil
}

// polShow returns `glow policy show` (the document on stdout).
func polShow(t *testing.T, n *node) string {
	t.Helper()
	res := polMust(t, n, 10*time.Second, "policy", "show")
	return res.Stdout
}

// polApplyRefused wants `glow policy apply file` to exit 1 with a message
// containing wantLine.
func polApplyRefused(t *testing.T, stage string, n *node, file, wantLine string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := polGlow(ctx, n, "policy", "apply", file)
	msg := strings.TrimSpace(res.Stderr)
	switch {
	case err == nil:
		t.Errorf("%s: glow policy apply of a policy with an error succeeded: %q", stage, res.Stdout)
	case lab.ExitCode(err) != 1:
		t.Errorf("%s: glow policy apply of a bad policy: exit %d, want 1 (%v; stderr %q)", stage, lab.ExitCode(err), err, msg)
	case !strings.Contains(msg, wantLine):
		t.Errorf("%s: glow policy apply of a bad policy: message %q does not name %q", stage, msg, wantLine)
	default:
		t.Logf("%s: bad policy refused: exit 1: %s", stage, msg)
	}
}

// polDrops returns the "drops" object of `glow status --json`.
func polDrops(n *node) (map[string]uint64, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.glow(ctx, "status", "--json")
	if err != nil {
		return nil, "", err
	}
	var st struct {
		Drops map[string]uint64 `json:"drops"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		return nil, "", fmt.Errorf("%v in %q", err, res.Stdout)
	}
	nz := map[string]uint64{}
	for k, v := range st.Drops {
		if v != 0 {
			nz[k] = v
		}
	}
	raw, _ := json.Marshal(nz)
	return st.Drops, string(raw), nil
}

// polServe serves TCP port (IPv4 and IPv6) inside h until the test ends:
// an HTTP request gets body; any other first line starts an echo of lines.
func polServe(t *testing.T, h *lab.Host, port int, body string) {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatalf("%s: listen on %d: %v", h.Name, port, err)
	}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			go func() {
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				c.SetDeadline(time.Now().Add(5 * time.Minute))
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if strings.HasPrefix(line, "GET ") || strings.HasPrefix(line, "HEAD ") {
					for {
						l, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if strings.TrimSpace(l) == "" {
							break
						}
					}
					fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n", len(body)+1, body)
					return
				}
				for {
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
					if line, err = br.ReadString('\n'); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// polFlow is a TCP connection from a lab host that sends a line every
// 200 ms and records when each echo comes back.
type polFlow struct {
	conn     net.Conn
	done     chan struct{}
	stopOnce sync.Once
	mu       sync.Mutex
	n        int
	last     time.Time
	lastErr  error
}

func polStartFlow(t *testing.T, h *lab.Host, to netip.AddrPort) *polFlow {
	t.Helper()
	f := &polFlow{done: make(chan struct{})}
	if err := h.Do(func() error {
		var err error
		f.conn, err = net.DialTimeout("tcp", to.String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("%s: connect to %s: %v", h.Name, to, err)
	}
	go func() { // writer
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-f.done:
				return
			case <-tick.C:
			}
			f.conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := fmt.Fprintf(f.conn, "line %d\n", i); err != nil {
				f.setErr(err)
			}
		}
	}()
	go func() { // reader
		br := bufio.NewReader(f.conn)
		for {
			if _, err := br.ReadString('\n'); err != nil {
				f.setErr(err)
				return
			}
			f.mu.Lock()
			f.n++
			f.last = time.Now()
			f.mu.Unlock()
		}
	}()
	return f
}

func (f *polFlow) setErr(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
}

func (f *polFlow) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

// echoes returns how many echoes came back and when the last one did.
func (f *polFlow) echoes() (int, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n, f.last
}

func (f *polFlow) stop() {
	f.stopOnce.Do(func() {
		close(f.done)
		f.conn.Close()
	})
}
