package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"glow/e2e/lab"
	"glow/overlay/api"
	"glow/web"
)

// TestWebMap (issue 17): `glow web` in a real browser. Three public nodes
// a, b, r; a's map, opened in headless Chromium (driven over WebDriver by
// chromedriver), shows b and r with direct paths. The Internet then drops
// UDP between a and b: the same page, without a reload, shows b relayed
// via r. The page's invite button makes a code (a POST through the CSRF
// checks, from the browser), and its NAT view shows netcheck's answer.
// Screenshots go to e2e/out/web-map-*.png.
func TestWebMap(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	chromium, driver := findBrowser(t)
	aH, bH, rH := publicHost(l, "a"), publicHost(l, "b"), publicHost(l, "r")
	a, b, r := newNode(t, aH, "a"), newNode(t, bH, "b"), newNode(t, rH, "r")
	a.up("--user", "alice", "--name", "a")
	r.up("--name", "r", "--join", a.invite())
	b.up("--name", "b", "--join", a.invite())
	for _, peer := range []string{"b", "r"} {
		if p, _, err := waitPeer(a, peer, reachTimeout, directAt(netip.Addr{})); err != nil {
			t.Fatalf("a -> %s: %v (last %+v)", peer, err, p)
		}
	}

	url := startWeb(t, a)
	br := startBrowser(t, aH, chromium, driver)
	start := time.Now()
	br.navigate(url)
	type row struct {
		Peer, Path, Via, Online string
	}
	type dom struct {
		Seq    int
		Marker string
		Title  string
		Rows   []row
		Nodes  []string
		Edges  []string // peer:kind
		Live   string
	}
	read := func() (dom, error) {
		var d dom
		err := br.exec(`
			const rows = [...document.querySelectorAll('#peers tr[data-peer]')].map((tr) => ({
				Peer: tr.dataset.peer, Path: tr.dataset.path, Via: tr.dataset.via, Online: tr.dataset.online}));
			return {
				Seq: Number(document.body.dataset.seq || 0),
				Marker: String(window.glowTestMarker || ""),
				Title: document.querySelector('#title').textContent,
				Rows: rows,
				Nodes: [...document.querySelectorAll('#map g.node')].map((g) => g.dataset.name),
				Edges: [...document.querySelectorAll('#map path.edge')].map((e) => e.dataset.peer + ":" + e.dataset.kind),
				Live: document.querySelector('#live').textContent,
			};`, &d)
		return d, err
	}
	paths := func(d dom) map[string]string {
		m := map[string]string{}
		for _, r := range d.Rows {
			m[r.Peer] = r.Path + " " + r.Via
		}
		return m
	}
	var d dom
	err := waitFor(30*time.Second, 250*time.Millisecond, func() error {
		var err error
		if d, err = read(); err != nil {
			return err
		}
		p := paths(d)
		if d.Seq < 1 || len(d.Nodes) != 3 || p["b"] != "direct " || p["r"] != "direct " ||
			!slicesHas(d.Edges, "b:direct") || !slicesHas(d.Edges, "r:direct") {
			return fmt.Errorf("page shows %+v", d)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the map never showed b and r direct: %v\n%s", err, br.logs())
	}
	t.Logf("the map shows %v, edges %v, after %v (update %d, %q)", d.Nodes, d.Edges, time.Since(start).Round(time.Millisecond), d.Seq, d.Live)
	if d.Title != "a.alice" {
		t.Errorf("title %q, want a.alice", d.Title)
	}

	// The page's own controls: an invite through the CSRF checks, and the
	// NAT view.
	var inv struct {
		Code, Kind, QR string
		QRWidth        int // the image as the browser decoded it
	}
	if err := br.exec(`document.querySelector('#invite-device').click(); return {};`, nil); err != nil {
		t.Fatal(err)
	}
	err = waitFor(20*time.Second, 200*time.Millisecond, func() error {
		if err := br.exec(`const o = document.querySelector('#invite-out'); return {
			Code: o.hidden ? "" : document.querySelector('#invite-code').textContent,
			Kind: o.dataset.kind || "",
			QR: document.querySelector('#invite-qr').hidden ? "" : document.querySelector('#invite-qr').src.slice(0, 30),
			QRWidth: document.querySelector('#invite-qr').naturalWidth,
			Err: document.querySelector('#invite-err').textContent};`, &inv); err != nil {
			return err
		}
		if inv.Code == "" || inv.QRWidth == 0 {
			return fmt.Errorf("no invite code and QR code shown yet (%+v)", inv)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("invite button: %v", err)
	}
	if !strings.HasPrefix(inv.Code, "glow") || inv.Kind != "device" || !strings.HasPrefix(inv.QR, "data:image/svg+xml") {
		t.Errorf("invite: code %q kind %q QR %q", inv.Code, inv.Kind, inv.QR)
	} else {
		t.Logf("the invite button made %s… (QR %q, decoded %d px wide)", inv.Code[:16], inv.QR, inv.QRWidth)
	}
	var nat struct{ Mapping, Text string }
	err = waitFor(30*time.Second, 250*time.Millisecond, func() error {
		if err := br.exec(`const v = document.querySelector('#nat-view'); return {
			Mapping: v ? v.dataset.mapping : "", Text: document.querySelector('#nat').textContent};`, &nat); err != nil {
			return err
		}
		if nat.Mapping == "" {
			return fmt.Errorf("NAT view: %q", nat.Text)
		}
		return nil
	})
	if err != nil {
		t.Errorf("the NAT view never showed netcheck's answer: %v", err)
	} else {
		t.Logf("NAT view: mapping %s: %.200s", nat.Mapping, nat.Text)
	}
	br.screenshot(t, "web-map-direct.png")

	// The path change, seen by the same page: a marker set in the page
	// now must still be there (a reload would lose it).
	if err := br.exec(`window.glowTestMarker = "same page"; return {};`, nil); err != nil {
		t.Fatal(err)
	}
	seqBefore := d.Seq
	bV4, _ := b.ips()
	// Traffic keeps a's heartbeats to b fast, so the dead path is noticed
	// in about a second (idle, it would take 25 s).
	pinger, err := aH.Start("ping", "-n", "-q", "-i", "0.2", "-c", "300", bV4.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pinger.Kill()
	cut := time.Now()
	l.Internet().CutUDP(aH, bH)
	err = waitFor(60*time.Second, 250*time.Millisecond, func() error {
		var err error
		if d, err = read(); err != nil {
			return err
		}
		p := paths(d)
		if p["b"] != "relay r" || p["r"] != "direct " || !slicesHas(d.Edges, "b:relay") || !slicesHas(d.Edges, "r:direct") {
			return fmt.Errorf("page shows %+v", d)
		}
		return nil
	})
	if err != nil {
		st, _ := a.status()
		t.Fatalf("after cutting UDP between a and b, the page never showed b relayed via r: %v\n(a's status: %+v)\n%s", err, st, br.logs())
	}
	t.Logf("b relay via r on the page %v after the cut (update %d, was %d)", time.Since(cut).Round(time.Millisecond), d.Seq, seqBefore)
	metric(t, "web.path_change_on_page_s", fmt.Sprintf("%.3f", time.Since(cut).Seconds()))
	if d.Marker != "same page" {
		t.Errorf("the page was reloaded (marker %q)", d.Marker)
	}
	if d.Seq <= seqBefore {
		t.Errorf("update counter %d, was %d before the cut", d.Seq, seqBefore)
	}
	if len(d.Nodes) != 3 {
		t.Errorf("map nodes %v, want a, b, r", d.Nodes)
	}
	br.screenshot(t, "web-map-relay.png")
}

// renderBackend is a daemon's local API as the page sees it, fixed: every
// kind of path and node, routes and an exit node, and a peer whose name is
// HTML.
type renderBackend struct{}

const hostileName = `<img src=x onerror="window.pwned=1">`

func (renderBackend) Status() (api.Status, error) {
	return api.Status{
		Self: api.SelfStatus{Name: "laptop", User: "alice", IPv4: "100.64.0.9", Endpoints: []string{},
			ExitNode: "vps", ExitNodeInUse: true},
		Peers: []api.PeerStatus{
			{Name: "nas", User: "alice", Online: true, Path: "relay", Via: []string{"vps"}, RTTms: 3.2, Routes: []string{"192.168.1.0/24"}, Offered: []string{"192.168.1.0/24"}},
			{Name: "vps", User: "alice", Online: true, Path: "direct", Endpoint: "198.51.100.10:47470", Via: []string{}, RTTms: 1.1, Offered: []string{"0.0.0.0/0", "::/0"}},
			{Name: "phone", User: "alice", Path: "none", Via: []string{}},
			{Name: "pi", User: "alice", Online: true, Path: "stream", Endpoint: "tcp://198.51.100.3:47470", Via: []string{}, RTTms: 2, Loss: 0.25},
			{Name: "pc", User: "bob", Online: true, Path: "direct", Endpoint: "198.51.100.20:47470", Via: []string{}, RTTms: 0.9},
			{Name: hostileName, User: "alice", Online: true, Path: "direct", Endpoint: "198.51.100.30:47470", Via: []string{}},
		},
		Drops: map[string]uint64{}, Conflicts: []api.AddrConflict{},
	}, nil
}

func (renderBackend) Friends() ([]api.FriendInfo, error) {
	return []api.FriendInfo{{Name: "bob", Nodes: []string{"pc"}, Shared: []string{"nas:8080/tcp"}}}, nil
}
func (renderBackend) Netcheck() (api.Netcheck, error) {
	return api.Netcheck{Mapping: "endpoint-dependent", Reflexive: []string{}, Servers: []api.NetcheckServer{}, Relays: []api.NetcheckRelay{}}, nil
}
func (renderBackend) Invite(time.Duration, int) (string, error)  { return "glow-x", nil }
func (renderBackend) FriendInvite(time.Duration) (string, error) { return "glowf-x", nil }

// TestWebRender: the page, in headless Chromium, draws what status says:
// a relayed peer's route through its relay, a stream link, an offline
// peer, a friend's node, a subnet router's routes and this node's exit
// node, edges with RTT and loss; a peer named with HTML is shown as text
// and runs nothing. The page is served by the test from a fixed status
// (package web over a fake backend) in a lab host.
func TestWebRender(t *testing.T) {
	l := lab.New(t)
	chromium, driver := findBrowser(t)
	h := l.Host("w")
	var ln net.Listener
	if err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:8088")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	wh := web.New(renderBackend{}, web.Options{Interval: 200 * time.Millisecond})
	srv := &http.Server{Handler: wh}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	br := startBrowser(t, h, chromium, driver)
	br.navigate(wh.URL(ln.Addr()))

	type node struct{ Name, Class, Badges string }
	var got struct {
		Nodes  []node
		Edges  []string
		Labels []string
		Rows   map[string]string
		Self   string
		NAT    string
		Pwned  bool
		Imgs   int
	}
	err := waitFor(20*time.Second, 200*time.Millisecond, func() error {
		if err := br.exec(`
			const rows = {};
			for (const tr of document.querySelectorAll('#peers tr[data-peer]')) rows[tr.dataset.peer] = tr.textContent;
			return {
				Nodes: [...document.querySelectorAll('#map g.node')].map((g) => ({Name: g.dataset.name, Class: g.getAttribute('class'),
					Badges: [...g.querySelectorAll('text.badge')].map((x) => x.textContent).join('|')})),
				Edges: [...document.querySelectorAll('#map path.edge')].map((e) => e.dataset.peer + ":" + e.dataset.kind + ":" + (e.dataset.via || "")),
				Labels: [...document.querySelectorAll('#map text.edge-label')].map((x) => x.textContent),
				Rows: rows,
				Self: document.querySelector('#self').textContent,
				NAT: document.querySelector('#nat').textContent,
				Pwned: !!window.pwned,
				Imgs: document.querySelectorAll('img:not(#invite-qr)').length,
			};`, &got); err != nil {
			return err
		}
		if len(got.Nodes) != 7 || !strings.Contains(got.NAT, "hard NAT") {
			return fmt.Errorf("page not drawn yet: %+v", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]node{}
	for _, n := range got.Nodes {
		nodes[n.Name] = n
	}
	for _, c := range []struct{ name, class, badges string }{
		{"laptop", "node self", ""},
		{"nas", "node relayed", "routes 192.168.1.0/24"},
		{"vps", "node ", "your exit node"},
		{"phone", "node offline", ""},
		{"pi", "node stream", ""},
		{"pc.bob", "node friend", ""},
		{hostileName, "node ", ""},
	} {
		n, ok := nodes[c.name]
		if !ok {
			t.Errorf("no node %q on the map (%v)", c.name, got.Nodes)
			continue
		}
		if n.Class != c.class || n.Badges != c.badges {
			t.Errorf("node %q: class %q badges %q, want %q %q", c.name, n.Class, n.Badges, c.class, c.badges)
		}
	}
	for _, e := range []string{"nas:relay:vps", "vps:direct:", "pi:stream:", "pc.bob:direct:"} {
		if !slicesHas(got.Edges, e) {
			t.Errorf("no edge %s (edges %v)", e, got.Edges)
		}
	}
	if slicesHas(got.Edges, "phone:none:") || len(got.Edges) != 5 {
		t.Errorf("edges %v: want one per online peer, none to phone", got.Edges)
	}
	for _, l := range []string{"via vps · 3.2 ms · 0% loss", "stream · 2.0 ms · 25% loss", "direct · 1.1 ms · 0% loss"} {
		if !slicesHas(got.Labels, l) {
			t.Errorf("no edge label %q (labels %q)", l, got.Labels)
		}
	}
	if !strings.Contains(got.Self, "exit nodevps (in use)") {
		t.Errorf("this node's panel %q does not say its exit node is vps, in use", got.Self)
	}
	if row := got.Rows[hostileName]; got.Pwned || got.Imgs != 0 || !strings.HasPrefix(row, hostileName) {
		t.Errorf("a peer named %q: pwned %v, %d img elements, row %q", hostileName, got.Pwned, got.Imgs, row)
	}
	br.screenshot(t, "web-render.png")
}

func slicesHas(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// findBrowser returns Chromium and chromedriver, or skips loudly when they
// are not installed (fails under GLOW_E2E=require: .ci/run installs them).
func findBrowser(t *testing.T) (chromium, driver string) {
	t.Helper()
	driver, err := exec.LookPath("chromedriver")
	for _, c := range []string{"/usr/lib/chromium/chromium", "/usr/bin/chromium"} {
		if _, serr := os.Stat(c); serr == nil {
			chromium = c
			break
		}
	}
	if err != nil || chromium == "" {
		msg := "!!!!!!!! SKIPPING the browser test: no chromium/chromedriver (apt-get install chromium chromium-driver) !!!!!!!!"
		if os.Getenv("GLOW_E2E") == "require" {
			t.Fatal(msg)
		}
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	return chromium, driver
}

// startWeb runs `glow web` for n in n's host and returns the URL it prints.
func startWeb(t *testing.T, n *node) string {
	t.Helper()
	p, err := n.host.Start(glowBin, "web", "--state", n.state, "--listen", "127.0.0.1:8088")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("==== glow web ====\n%s==== end of glow web ====", p.Output())
		}
	})
	re := regexp.MustCompile(`http://127\.0\.0\.1:8088/\?token=[A-Za-z0-9_-]+`)
	var url string
	err = waitFor(10*time.Second, 50*time.Millisecond, func() error {
		if url = re.FindString(p.Output()); url == "" {
			return fmt.Errorf("glow web printed %q", p.Output())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// browser is a headless Chromium in a lab host, driven through
// chromedriver's WebDriver HTTP API (one session).
type browser struct {
	t       *testing.T
	hc      *http.Client
	base    string // http://127.0.0.1:PORT/session/ID
	driver  *lab.Proc
	profile string
}

const chromedriverPort = 9515

// startBrowser starts chromedriver in h (its port is on h's loopback, which
// only h sees; the test dials it from inside h) and opens a session with a
// fresh profile. Cleanups end both.
func startBrowser(t *testing.T, h *lab.Host, chromium, driver string) *browser {
	t.Helper()
	dir := t.TempDir()
	drv, err := h.Start("env", "HOME="+dir, driver, fmt.Sprintf("--port=%d", chromedriverPort), "--log-path="+filepath.Join(dir, "chromedriver.log"))
	if err != nil {
		t.Fatal(err)
	}
	br := &browser{t: t, driver: drv, profile: filepath.Join(dir, "profile"), hc: &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			var c net.Conn
			err := h.Do(func() error {
				var err error
				c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		}},
	}}
	t.Cleanup(func() {
		if br.base != "" {
			br.call("DELETE", "", nil, nil)
		}
		drv.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "chromedriver.log"))
			t.Logf("==== chromedriver ====\n%s\n%s==== end of chromedriver ====", drv.Output(), tailString(string(b), 16<<10))
		}
	})
	root := fmt.Sprintf("http://127.0.0.1:%d", chromedriverPort)
	err = waitFor(15*time.Second, 100*time.Millisecond, func() error {
		var st struct {
			Value struct{ Ready bool } `json:"value"`
		}
		if err := br.rawCall("GET", root+"/status", nil, &st); err != nil {
			return err
		}
		if !st.Value.Ready {
			return fmt.Errorf("chromedriver not ready")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("chromedriver: %v\n%s", err, drv.Output())
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"goog:chromeOptions": map[string]any{
			"binary": chromium,
			"args": []string{
				"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
				"--disable-background-networking", "--disable-component-update", "--disable-sync",
				"--disable-dev-shm-usage", "--window-size=1280,1100",
				"--user-data-dir=" + br.profile,
			},
		},
	}}}
	var sess struct {
		Value struct {
			SessionID string `json:"sessionId"`
		} `json:"value"`
	}
	if err := br.rawCall("POST", root+"/session", caps, &sess); err != nil || sess.Value.SessionID == "" {
		t.Fatalf("new WebDriver session: %v (%+v)\n%s", err, sess, drv.Output())
	}
	br.base = root + "/session/" + sess.Value.SessionID
	return br
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "[…]\n" + s[len(s)-n:]
	}
	return s
}

// rawCall sends one WebDriver command; out receives the answer's JSON.
func (b *browser) rawCall(method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		j, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("WebDriver %s %s: %s: %.500s", method, url, resp.Status, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// call sends a command of the session (path after /session/ID).
func (b *browser) call(method, path string, in, out any) error {
	return b.rawCall(method, b.base+path, in, out)
}

func (b *browser) navigate(url string) {
	b.t.Helper()
	if err := b.call("POST", "/url", map[string]string{"url": url}, nil); err != nil {
		b.t.Fatal(err)
	}
}

// exec runs script (a function body) in the page and decodes what it
// returns into out.
func (b *browser) exec(script string, out any) error {
	var res struct {
		Value json.RawMessage `json:"value"`
	}
	if err := b.call("POST", "/execute/sync", map[string]any{"script": script, "args": []any{}}, &res); err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(res.Value, out)
}

// screenshot saves the page as out/NAME (gitignored) and logs where.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	var res struct {
		Value string `json:"value"`
	}
	if err := b.call("GET", "/screenshot", nil, &res); err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	png, err := base64.StdEncoding.DecodeString(res.Value)
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	if err := os.MkdirAll("out", 0o755); err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	p, _ := filepath.Abs(filepath.Join("out", name))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	t.Logf("screenshot: %s (%d bytes)", p, len(png))
}

// logs returns the page's console messages (for failures).
func (b *browser) logs() string {
	var out []string
	if err := b.exec(`return [document.querySelector('#live').textContent, document.querySelector('#extra').textContent];`, &out); err != nil {
		return "page: " + err.Error()
	}
	return "page: " + strings.Join(out, " | ")
}
