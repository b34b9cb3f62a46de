// Package web is `glow web`: a live map of the mesh in the browser. It is
// a separate process from the daemon, a client of its local API (the unix
// socket STATE/glow.sock, package overlay/api) that serves one page on a
// local TCP port: the node's peers as a graph (each edge the path the
// node's traffic takes: direct, relayed through which nodes, or a stream
// link, with its RTT and loss), the node's NAT view (netcheck), invite
// codes with their QR code, and whatever else status reports (routes, exit
// nodes). The page is plain HTML, JS and SVG embedded in the binary
// (assets/), with no build step and nothing loaded from elsewhere; it
// updates over Server-Sent Events (GET /api/events), one status a second,
// without reloading.
//
//	h := web.New(api.NewClient(stateDir), web.Options{})
//	ln, _ := net.Listen("tcp", "127.0.0.1:0")
//	fmt.Println(h.URL(ln.Addr()))    // http://127.0.0.1:PORT/?token=...
//	http.Serve(ln, h)
//
// # Choices
//
//   - A CLI process rather than a listener in the daemon: the daemon opens
//     no TCP port and grows no web code, the page runs with the rights of
//     whoever may open the socket (its mode is 0600), and `glow web` in the
//     host's namespace can show a daemon that runs in another one (the
//     socket is a file). As `tailscale web` does.
//   - Every request must carry the secret token that `glow web` prints in
//     its URL: the first visit (GET /?token=T) sets it as a cookie
//     (HttpOnly, SameSite=Strict, Path=/) and redirects to / so the token
//     leaves the address bar; later requests carry the cookie, or ?token=
//     (for curl). Another local web page cannot read the token, and its
//     requests carry no cookie (SameSite=Strict): 403. The token is new at
//     every start.
//   - The Host header must be localhost or an IP literal, with the port
//     listened on, never a DNS name: a page whose name an attacker rebinds
//     to 127.0.0.1 is refused before the token is even looked at.
//   - Anything that changes state (POST /api/invite) also needs the CSRF
//     token (X-Glow-CSRF; the page has it from a meta tag of the page,
//     which only token holders get) and an Origin header that names this
//     server (http://HOST:PORT as checked above). No CORS headers are ever
//     sent, so no other origin may read an answer; a Content-Security-Policy
//     keeps the page to its own scripts and styles.
//   - Loopback by default (127.0.0.1, a port the OS picks); --listen
//     ADDR:PORT puts it elsewhere, still behind the token.
package web

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"glow/internal/qrterm"
	"glow/overlay/api"
)

// Backend is what the page needs of a daemon: *api.Client has it.
type Backend interface {
	Status() (api.Status, error)
	Friends() ([]api.FriendInfo, error)
	Netcheck() (api.Netcheck, error)
	Invite(ttl time.Duration, uses int) (string, error)
	FriendInvite(ttl time.Duration) (string, error)
}

// Options tune a Handler. The zero value is what `glow web` uses.
type Options struct {
	// Interval between two statuses on an event stream (default 1 s).
	Interval time.Duration
	// MaxStreams bounds the event streams open at once (default 16).
	MaxStreams int
}

// CookieName is the cookie that carries the token.
const CookieName = "glow_web"

// Handler serves the page and its JSON endpoints.
type Handler struct {
	b     Backend
	opt   Options
	token string // in the printed URL and the cookie
	csrf  string // in the page, for state-changing requests
	mux   *http.ServeMux
	page  []byte // index.html with the CSRF token in
	files fs.FS

	streams atomic.Int32
}

//go:embed assets
var assets embed.FS

// csrfMark is where index.html takes the CSRF token.
const csrfMark = "{{CSRF}}"

// New returns a handler for b with fresh random tokens.
func New(b Backend, opt Options) *Handler {
	if opt.Interval <= 0 {
		opt.Interval = time.Second
	}
	if opt.MaxStreams <= 0 {
		opt.MaxStreams = 16
	}
	files, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	h := &Handler{
		b: b, opt: opt, token: randomToken(), csrf: randomToken(), files: files,
		mux: http.NewServeMux(),
	}
	page, err := fs.ReadFile(files, "index.html")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	// The page's one variable part. Not html/template: that and
	// text/template would be half a megabyte of glow's binary, and so of
	// the daemon's resident memory (the daemon is the same binary), for
	// one attribute.
	h.page = bytes.ReplaceAll(page, []byte(csrfMark), []byte(html.EscapeString(h.csrf)))
	h.mux.HandleFunc("GET /{$}", h.index)
	h.mux.HandleFunc("GET /app.js", h.file("app.js", "text/javascript; charset=utf-8"))
	h.mux.HandleFunc("GET /style.css", h.file("style.css", "text/css; charset=utf-8"))
	h.mux.HandleFunc("GET /api/status", h.status)
	h.mux.HandleFunc("GET /api/events", h.events)
	h.mux.HandleFunc("GET /api/netcheck", h.netcheck)
	h.mux.HandleFunc("POST /api/invite", h.invite)
	return h
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// URL is the address to open for a server listening on addr: it carries
// the token. An unspecified listen address (0.0.0.0, ::) is shown as
// 127.0.0.1.
func (h *Handler) URL(addr net.Addr) string {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/?token=" + h.token
	}
	ip := ap.Addr().Unmap()
	if ip.IsUnspecified() {
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return "http://" + netip.AddrPortFrom(ip, ap.Port()).String() + "/?token=" + h.token
}

// Token is the secret of this handler's URL and cookie.
func (h *Handler) Token() string { return h.token }

// ServeHTTP checks every request (Host, token, and for POST the CSRF token
// and Origin) before routing it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Security-Policy",
		"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	if err := checkHost(r); err != nil {
		forbid(w, err.Error())
		return
	}
	fromQuery := h.equal(r.URL.Query().Get("token"))
	if !fromQuery && !h.hasCookie(r) {
		forbid(w, "no valid token: open the URL that 'glow web' printed")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := h.checkCSRF(r); err != nil {
			forbid(w, err.Error())
			return
		}
	}
	if fromQuery && r.Method == http.MethodGet && r.URL.Path == "/" {
		// The first visit: the token becomes a cookie and leaves the URL.
		http.SetCookie(w, &http.Cookie{
			Name: CookieName, Value: h.token, Path: "/",
			HttpOnly: true, SameSite: http.SameSiteStrictMode,
		})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	h.mux.ServeHTTP(w, r)
}

func forbid(w http.ResponseWriter, why string) {
	http.Error(w, "glow web: "+why, http.StatusForbidden)
}

func (h *Handler) equal(s string) bool {
	return s != "" && subtle.ConstantTimeCompare([]byte(s), []byte(h.token)) == 1
}

func (h *Handler) hasCookie(r *http.Request) bool {
	for _, c := range r.CookiesNamed(CookieName) {
		if h.equal(c.Value) {
			return true
		}
	}
	return false
}

// checkHost accepts a Host header that is localhost or an IP literal, with
// the port the request came in on: never a DNS name (rebinding).
func checkHost(r *http.Request) error {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		return fmt.Errorf("Host %q: want ADDRESS:PORT", r.Host)
	}
	if host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("Host %q is not this server (an IP address or localhost)", r.Host)
		}
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil && strconv.Itoa(int(ap.Port())) != port {
			return fmt.Errorf("Host %q: this server listens on port %d", r.Host, ap.Port())
		}
	}
	return nil
}

// checkCSRF: a state-changing request comes from this server's page: its
// Origin is this server and it carries the page's CSRF token.
func (h *Handler) checkCSRF(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return errors.New("no Origin header on a request that changes state")
	}
	if origin != "http://"+r.Host {
		return fmt.Errorf("cross-origin request from %q refused", origin)
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return fmt.Errorf("cross-site request (Sec-Fetch-Site %s) refused", s)
	}
	got := r.Header.Get("X-Glow-CSRF")
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(h.csrf)) != 1 {
		return errors.New("missing or wrong CSRF token")
	}
	return nil
}

func (h *Handler) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(h.page)
}

func (h *Handler) file(name, ctype string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := fs.ReadFile(h.files, name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", ctype)
		w.Write(b)
	}
}

// Snapshot is one update of the page: the daemon's status and friends, or
// why there are none (the daemon is down).
type Snapshot struct {
	Status  *api.Status      `json:"status,omitempty"`
	Friends []api.FriendInfo `json:"friends"`
	Error   string           `json:"error,omitempty"`
	Time    string           `json:"time"`
}

func (h *Handler) snapshot() Snapshot {
	s := Snapshot{Friends: []api.FriendInfo{}, Time: time.Now().UTC().Format(time.RFC3339)}
	st, err := h.b.Status()
	if err != nil {
		s.Error = err.Error()
		return s
	}
	s.Status = &st
	if fs, err := h.b.Friends(); err == nil && fs != nil {
		s.Friends = fs
	}
	return s
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	s := h.snapshot()
	code := http.StatusOK
	if s.Error != "" {
		code = http.StatusBadGateway
	}
	writeJSON(w, code, s)
}

// events streams a Snapshot every Interval as Server-Sent Events until the
// client goes away. At most MaxStreams at once.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	if int(h.streams.Add(1)) > h.opt.MaxStreams {
		h.streams.Add(-1)
		http.Error(w, "glow web: too many open pages", http.StatusServiceUnavailable)
		return
	}
	defer h.streams.Add(-1)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(h.opt.Interval)
	defer t.Stop()
	for {
		b, err := json.Marshal(h.snapshot())
		if err != nil {
			return
		}
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
}

func (h *Handler) netcheck(w http.ResponseWriter, r *http.Request) {
	nc, err := h.b.Netcheck()
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, nc)
}

// Invite is the answer to POST /api/invite.
type Invite struct {
	Kind    string `json:"kind"` // device or friend
	Code    string `json:"code"`
	Expires string `json:"expires"`
	QR      string `json:"qr"` // the code as a QR code: a data: URL of an SVG image
}

func (h *Handler) invite(w http.ResponseWriter, r *http.Request) {
	kind := r.URL.Query().Get("kind")
	var (
		code string
		err  error
		ttl  time.Duration
	)
	switch kind {
	case "", "device":
		kind, ttl = "device", time.Hour
		code, err = h.b.Invite(ttl, 1)
	case "friend":
		ttl = 24 * time.Hour
		code, err = h.b.FriendInvite(ttl)
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("kind %q: want device or friend", kind)})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	inv := Invite{Kind: kind, Code: code, Expires: time.Now().Add(ttl).UTC().Format(time.RFC3339)}
	if svg, err := qrterm.SVG(code); err == nil {
		inv.QR = "data:image/svg+xml;base64," + base64.StdEncoding.EncodeToString([]byte(svg))
	}
	writeJSON(w, http.StatusOK, inv)
}
