package web

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"glow/internal/leaktest"
	"glow/overlay/api"
)

// fakeBackend is a daemon's local API in memory: its status can be
// changed by the test, and it counts the invites it made.
type fakeBackend struct {
	mu      sync.Mutex
	st      api.Status
	down    bool
	invites int
}

func (f *fakeBackend) Status() (api.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return api.Status{}, api.ErrNotRunning
	}
	st := f.st
	st.Peers = append([]api.PeerStatus(nil), f.st.Peers...)
	return st, nil
}

func (f *fakeBackend) Friends() ([]api.FriendInfo, error) {
	return []api.FriendInfo{{Name: "bob", Nodes: []string{"laptop.bob"}, Shared: []string{"nas:8080/tcp"}}}, nil
}

func (f *fakeBackend) Netcheck() (api.Netcheck, error) {
	return api.Netcheck{Mapping: "endpoint-independent", Reflexive: []string{"198.51.100.7:47470"}}, nil
}

func (f *fakeBackend) Invite(ttl time.Duration, uses int) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invites++
	return "glow-TESTCODE", nil
}

func (f *fakeBackend) FriendInvite(ttl time.Duration) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invites++
	return "glowf-TESTCODE", nil
}

func (f *fakeBackend) setPath(peer, path string, via ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.st.Peers {
		if f.st.Peers[i].Name == peer {
			f.st.Peers[i].Path, f.st.Peers[i].Via = path, via
		}
	}
}

func (f *fakeBackend) inviteCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.invites
}

func newFake() *fakeBackend {
	return &fakeBackend{st: api.Status{
		Self: api.SelfStatus{Name: "a", User: "alice", IPv4: "100.64.0.1"},
		Peers: []api.PeerStatus{
			{Name: "b", User: "alice", Online: true, Path: "direct", Endpoint: "198.51.100.11:47470", Via: []string{}, RTTms: 0.4},
			{Name: "r", User: "alice", Online: true, Path: "direct", Endpoint: "198.51.100.12:47470", Via: []string{}, RTTms: 0.5},
		},
	}}
}

type rig struct {
	t   *testing.T
	f   *fakeBackend
	h   *Handler
	srv *httptest.Server
	hc  *http.Client // no redirects followed, no cookie jar
}

func newRig(t *testing.T, opt Options) *rig {
	leaktest.Check(t)
	f := newFake()
	h := New(f, opt)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &rig{t: t, f: f, h: h, srv: srv, hc: &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// do sends a request; mod may set headers, the Host, cookies.
func (r *rig) do(method, path string, mod func(*http.Request)) (*http.Response, string) {
	r.t.Helper()
	req, err := http.NewRequest(method, r.srv.URL+path, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	if mod != nil {
		mod(req)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if v := resp.Header.Get("Access-Control-Allow-Origin"); v != "" {
		r.t.Errorf("%s %s: Access-Control-Allow-Origin %q (no CORS, ever)", method, path, v)
	}
	return resp, string(b)
}

func (r *rig) cookie(req *http.Request) {
	req.AddCookie(&http.Cookie{Name: CookieName, Value: r.h.Token()})
}

// csrf reads the CSRF token from the page, as the page's script does.
func (r *rig) csrf() string {
	r.t.Helper()
	resp, body := r.do("GET", "/", r.cookie)
	if resp.StatusCode != 200 {
		r.t.Fatalf("GET / with the cookie: %s", resp.Status)
	}
	m := regexp.MustCompile(`<meta name="glow-csrf" content="([^"]+)">`).FindStringSubmatch(body)
	if m == nil {
		r.t.Fatalf("no CSRF meta tag in the page:\n%s", body)
	}
	return m[1]
}

func TestAuthNoToken(t *testing.T) {
	r := newRig(t, Options{})
	for _, p := range []string{"/", "/app.js", "/style.css", "/api/status", "/api/events", "/api/netcheck", "/nothing"} {
		if resp, _ := r.do("GET", p, nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s without a token: %s, want 403", p, resp.Status)
		}
		bad := func(req *http.Request) {
			req.AddCookie(&http.Cookie{Name: CookieName, Value: r.h.Token() + "x"})
		}
		if resp, _ := r.do("GET", p, bad); resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s with a wrong cookie: %s, want 403", p, resp.Status)
		}
		if resp, _ := r.do("GET", p+"?token=wrong", nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s?token=wrong: %s, want 403", p, resp.Status)
		}
	}
	if resp, _ := r.do("POST", "/api/invite", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST /api/invite without a token: %s, want 403", resp.Status)
	}
	if n := r.f.inviteCount(); n != 0 {
		t.Errorf("%d invites made for requests without a token", n)
	}
}

func TestAuthWrongHost(t *testing.T) {
	r := newRig(t, Options{})
	port := r.srv.URL[strings.LastIndexByte(r.srv.URL, ':')+1:]
	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.nip.io:" + port, "127.0.0.1:1", "localhost:1"} {
		resp, body := r.do("GET", "/api/status?token="+r.h.Token(), func(req *http.Request) {
			req.Host = host
			r.cookie(req)
		})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("Host %q with the right token: %s, want 403", host, resp.Status)
		} else {
			t.Logf("Host %q: 403 %s", host, strings.TrimSpace(body))
		}
	}
	for _, host := range []string{"localhost:" + port, "127.0.0.1:" + port} {
		resp, _ := r.do("GET", "/api/status", func(req *http.Request) { req.Host = host; r.cookie(req) })
		if resp.StatusCode != 200 {
			t.Errorf("Host %q with the cookie: %s, want 200", host, resp.Status)
		}
	}
}

func TestAuthTokenSetsCookie(t *testing.T) {
	r := newRig(t, Options{})
	resp, _ := r.do("GET", "/?token="+r.h.Token(), nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("GET /?token=T: %s Location %q, want 303 to /", resp.Status, resp.Header.Get("Location"))
	}
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == CookieName {
			c = k
		}
	}
	if c == nil || c.Value != r.h.Token() || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
		t.Fatalf("cookie %+v, want %s=token HttpOnly SameSite=Strict Path=/", c, CookieName)
	}
	resp, body := r.do("GET", "/", func(req *http.Request) { req.AddCookie(c) })
	if resp.StatusCode != 200 || !strings.Contains(body, `<svg id="map"`) {
		t.Fatalf("GET / with the cookie: %s\n%s", resp.Status, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	for _, p := range []string{"/app.js", "/style.css"} {
		if resp, _ := r.do("GET", p, func(req *http.Request) { req.AddCookie(c) }); resp.StatusCode != 200 {
			t.Errorf("GET %s with the cookie: %s", p, resp.Status)
		}
	}
}

func TestAuthRightTokenStatus(t *testing.T) {
	r := newRig(t, Options{})
	for name, mod := range map[string]func(*http.Request){
		"cookie": r.cookie,
		"query":  nil,
	} {
		path := "/api/status"
		if mod == nil {
			path += "?token=" + r.h.Token()
		}
		resp, body := r.do("GET", path, mod)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: GET %s: %s %s", name, path, resp.Status, body)
		}
		var s Snapshot
		if err := json.Unmarshal([]byte(body), &s); err != nil || s.Status == nil {
			t.Fatalf("%s: %v in %s", name, err, body)
		}
		if len(s.Status.Peers) != 2 || s.Status.Peers[0].Name != "b" || s.Status.Peers[0].Path != "direct" || s.Status.Self.Name != "a" {
			t.Errorf("%s: peers %+v", name, s.Status.Peers)
		}
		if len(s.Friends) != 1 || s.Friends[0].Name != "bob" {
			t.Errorf("%s: friends %+v", name, s.Friends)
		}
	}
	r.f.mu.Lock()
	r.f.down = true
	r.f.mu.Unlock()
	resp, body := r.do("GET", "/api/status", r.cookie)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "not running") {
		t.Errorf("daemon down: %s %s, want 502 saying it is not running", resp.Status, body)
	}
}

func TestAuthCSRF(t *testing.T) {
	r := newRig(t, Options{})
	csrf := r.csrf()
	self := r.srv.URL // http://127.0.0.1:PORT
	cases := []struct {
		name   string
		origin string
		csrf   string
		site   string
		want   int
	}{
		{"no Origin", "", csrf, "", 403},
		{"cross-origin", "http://evil.example", csrf, "", 403},
		{"other port", "http://127.0.0.1:1", csrf, "", 403},
		{"null origin", "null", csrf, "", 403},
		{"cross-site fetch", self, csrf, "cross-site", 403},
		{"no CSRF token", self, "", "", 403},
		{"wrong CSRF token", self, csrf + "x", "", 403},
		{"the cookie token as CSRF", self, r.h.Token(), "", 403},
		{"same origin", self, csrf, "same-origin", 200},
	}
	for _, c := range cases {
		before := r.f.inviteCount()
		resp, body := r.do("POST", "/api/invite?kind=device", func(req *http.Request) {
			r.cookie(req)
			if c.origin != "" {
				req.Header.Set("Origin", c.origin)
			}
			if c.csrf != "" {
				req.Header.Set("X-Glow-CSRF", c.csrf)
			}
			if c.site != "" {
				req.Header.Set("Sec-Fetch-Site", c.site)
			}
		})
		made := r.f.inviteCount() - before
		if resp.StatusCode != c.want {
			t.Errorf("%s: %s %s, want %d", c.name, resp.Status, strings.TrimSpace(body), c.want)
			continue
		}
		if c.want != 200 {
			if made != 0 {
				t.Errorf("%s: refused, yet %d invites made", c.name, made)
			}
			continue
		}
		var inv Invite
		if err := json.Unmarshal([]byte(body), &inv); err != nil || inv.Code != "glow-TESTCODE" || inv.Kind != "device" || made != 1 {
			t.Errorf("%s: %v %+v (%d invites made)", c.name, err, inv, made)
		}
		svg, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(inv.QR, "data:image/svg+xml;base64,"))
		if !strings.HasPrefix(inv.QR, "data:image/svg+xml;base64,") || err != nil || !strings.HasPrefix(string(svg), "<svg") {
			t.Errorf("%s: QR %.60q: not an SVG data URL (%v)", c.name, inv.QR, err)
		}
	}
	// The POST without the cookie, though right otherwise.
	resp, _ := r.do("POST", "/api/invite", func(req *http.Request) {
		req.Header.Set("Origin", self)
		req.Header.Set("X-Glow-CSRF", csrf)
	})
	if resp.StatusCode != 403 {
		t.Errorf("POST without the cookie: %s, want 403", resp.Status)
	}
	resp, body := r.do("POST", "/api/invite?kind=friend", func(req *http.Request) {
		r.cookie(req)
		req.Header.Set("Origin", self)
		req.Header.Set("X-Glow-CSRF", csrf)
	})
	if resp.StatusCode != 200 || !strings.Contains(body, "glowf-TESTCODE") {
		t.Errorf("friend invite: %s %s", resp.Status, body)
	}
	resp, _ = r.do("POST", "/api/invite?kind=other", func(req *http.Request) {
		r.cookie(req)
		req.Header.Set("Origin", self)
		req.Header.Set("X-Glow-CSRF", csrf)
	})
	if resp.StatusCode != 400 {
		t.Errorf("kind=other: %s, want 400", resp.Status)
	}
}

// TestEvents: the event stream brings a new status when the path changes,
// on the same connection.
func TestEvents(t *testing.T) {
	r := newRig(t, Options{Interval: 20 * time.Millisecond, MaxStreams: 1})
	req, _ := http.NewRequest("GET", r.srv.URL+"/api/events", nil)
	r.cookie(req)
	resp, err := r.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /api/events: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	if resp2, _ := r.do("GET", "/api/events", r.cookie); resp2.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a second stream with MaxStreams 1: %s, want 503", resp2.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	next := func() Snapshot {
		t.Helper()
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var s Snapshot
			if err := json.Unmarshal([]byte(line), &s); err != nil || s.Status == nil {
				t.Fatalf("event %q: %v", line, err)
			}
			return s
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return Snapshot{}
	}
	if s := next(); s.Status.Peers[0].Path != "direct" {
		t.Fatalf("first event: b's path %q", s.Status.Peers[0].Path)
	}
	r.f.setPath("b", "relay", "r")
	for i := 0; ; i++ {
		if i == 100 {
			t.Fatal("100 events and b's path is still not relay via r")
		}
		s := next()
		if p := s.Status.Peers[0]; p.Path == "relay" && len(p.Via) == 1 && p.Via[0] == "r" {
			t.Logf("b relay via r in event %d after the change", i+1)
			break
		}
	}
	// The page goes away: its stream ends and frees its place.
	resp.Body.Close()
	for i := 0; ; i++ {
		req, _ := http.NewRequest("GET", r.srv.URL+"/api/events", nil)
		r.cookie(req)
		resp2, err := r.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp2.Body.Close() // ends this stream too
		if resp2.StatusCode == 200 {
			break
		}
		if i == 100 {
			t.Fatalf("after the first stream closed, a new one still gets %s", resp2.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestURL(t *testing.T) {
	h := New(newFake(), Options{})
	for _, c := range []struct{ addr, want string }{
		{"127.0.0.1:8080", "http://127.0.0.1:8080/?token="},
		{"0.0.0.0:8080", "http://127.0.0.1:8080/?token="},
		{"[::1]:8080", "http://[::1]:8080/?token="},
	} {
		if got := h.URL(fakeAddr(c.addr)); got != c.want+h.Token() {
			t.Errorf("URL(%s) = %s", c.addr, got)
		}
	}
	if New(newFake(), Options{}).Token() == h.Token() {
		t.Error("two handlers share a token")
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// TestAssetsSelfContained: the page loads nothing from elsewhere (the
// machine may have no Internet, and nothing should learn the map is open)
// and never turns text into HTML (names come from the network).
func TestAssetsSelfContained(t *testing.T) {
	urls := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for _, name := range []string{"index.html", "app.js", "style.css"} {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, m := range urls.FindAllString(s, -1) {
			if m != "http://www.w3.org" { // the SVG namespace, a name, never fetched
				t.Errorf("%s refers to %s", name, m)
			}
		}
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
	}
}
