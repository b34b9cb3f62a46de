package overlay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	neturl "net/url"
	"os"
	"strconv"
	"time"
)

// The local API: HTTP with JSON bodies over the unix socket STATE/glow.sock
// (mode 0600, so only the node's owner can drive it). The CLI is a thin
// client of it (Client below).
//
//	GET  /v1/status              Status
//	GET  /v1/ip?target=T         {"addrs": [...]}
//	POST /v1/ping?target=T       PingResult (one ping)
//	POST /v1/invite?ttl=D&uses=N {"code": "..."}
//	GET  /v1/netcheck            Netcheck (STUN and port mapping probes)
//	POST /v1/friend/invite|add|remove, GET /v1/friends
//	POST /v1/share?target=T&user=U[&undo=1]
//	GET|POST /v1/policy, GET /v1/policy/history, POST /v1/policy/rollback?version=V
//	POST /v1/link/add|remove?url=U, GET /v1/links, POST /v1/link/stdio (takes the connection over)
//	POST /v1/down                stops the daemon

// SocketName is the control socket's file name in the state directory.
const SocketName = "glow.sock"

// ServeAPI serves the local API until ctx is done or the node stops. down
// is called for POST /v1/down after the reply is written.
func (n *Node) ServeAPI(ctx context.Context, down func()) error {
	path := n.state.Path(SocketName)
	os.Remove(path) // a stale socket from a crashed daemon; we hold the state lock
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.Status())
	})
	mux.HandleFunc("GET /v1/ip", func(w http.ResponseWriter, r *http.Request) {
		addrs, err := n.Addrs(r.URL.Query().Get("target"))
		if err != nil {
			writeErr(w, http.StatusNotFound, err)
			return
		}
		writeJSON(w, map[string][]netip.Addr{"addrs": addrs})
	})
	mux.HandleFunc("POST /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), pingTimeout)
		defer cancel()
		res, err := n.Ping(ctx, r.URL.Query().Get("target"))
		if err != nil {
			status := http.StatusGatewayTimeout
			if errors.Is(err, ErrNoSuchPeer) {
				status = http.StatusNotFound
			}
			writeErr(w, status, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("POST /v1/invite", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ttl := time.Hour
		if s := q.Get("ttl"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				writeErr(w, http.StatusBadRequest, fmt.Errorf("--ttl %q: want a duration such as 30m or 24h", s))
				return
			}
			ttl = d
		}
		uses := 1
		if s := q.Get("uses"); s != "" {
			u, err := strconv.Atoi(s)
			if err != nil || u < 1 {
				writeErr(w, http.StatusBadRequest, fmt.Errorf("--uses %q: want a whole number of at least 1", s))
				return
			}
			uses = u
		}
		code, err := n.Invite(ttl, uses)
		if err != nil {
			writeErr(w, http.StatusForbidden, err)
			return
		}
		writeJSON(w, map[string]any{"code": code, "expires": time.Now().Add(ttl).UTC().Format(time.RFC3339), "uses": uses})
	})
	mux.HandleFunc("GET /v1/netcheck", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		nc, err := n.Netcheck(ctx)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, nc)
	})
	mux.HandleFunc("POST /v1/friend/invite", func(w http.ResponseWriter, r *http.Request) {
		ttl := 24 * time.Hour
		if s := r.URL.Query().Get("ttl"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				writeErr(w, http.StatusBadRequest, fmt.Errorf("--ttl %q: want a duration such as 24h", s))
				return
			}
			ttl = d
		}
		code, err := n.FriendInvite(ttl)
		if err != nil {
			writeErr(w, http.StatusForbidden, err)
			return
		}
		writeJSON(w, map[string]string{"code": code})
	})
	mux.HandleFunc("POST /v1/friend/add", func(w http.ResponseWriter, r *http.Request) {
		name, err := n.FriendAdd(r.Context(), r.URL.Query().Get("code"))
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, map[string]string{"friend": name})
	})
	mux.HandleFunc("GET /v1/friends", func(w http.ResponseWriter, r *http.Request) {
		fs := n.Friends()
		if fs == nil {
			fs = []FriendInfo{}
		}
		writeJSON(w, fs)
	})
	mux.HandleFunc("POST /v1/friend/remove", func(w http.ResponseWriter, r *http.Request) {
		if err := n.FriendRemove(r.URL.Query().Get("name")); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, map[string]string{"status": "removed"})
	})
	mux.HandleFunc("POST /v1/share", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		info, changed, err := n.Share(q.Get("target"), q.Get("user"), q.Get("undo") != "1")
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, map[string]any{"version": info.Version, "changed": changed})
	})
	mux.HandleFunc("GET /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.Policy())
	})
	mux.HandleFunc("POST /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 2<<20))
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		info, err := n.ApplyPolicy(string(body))
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, info)
	})
	mux.HandleFunc("GET /v1/policy/history", func(w http.ResponseWriter, r *http.Request) {
		h, err := n.PolicyHistory()
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, h)
	})
	mux.HandleFunc("POST /v1/policy/rollback", func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.ParseUint(r.URL.Query().Get("version"), 10, 64)
		if err != nil {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("version %q: want a number from 'glow policy history'", r.URL.Query().Get("version")))
			return
		}
		info, err := n.RollbackPolicy(v)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, info)
	})
	mux.HandleFunc("POST /v1/link/add", func(w http.ResponseWriter, r *http.Request) {
		if err := n.AddLink(r.URL.Query().Get("url")); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, map[string]string{"status": "added"})
	})
	mux.HandleFunc("POST /v1/link/remove", func(w http.ResponseWriter, r *http.Request) {
		if err := n.RemoveLink(r.URL.Query().Get("url")); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, map[string]string{"status": "removed"})
	})
	mux.HandleFunc("GET /v1/links", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.Links())
	})
	// The serving end of an ssh link: the connection is taken over and
	// carries the link (glow link stdio relays its stdin/stdout to it).
	mux.HandleFunc("POST /v1/link/stdio", func(w http.ResponseWriter, r *http.Request) {
		hj, ok := w.(http.Hijacker)
		if !ok {
			writeErr(w, http.StatusInternalServerError, errors.New("cannot take over the connection"))
			return
		}
		c, buf, err := hj.Hijack()
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: glow-link\r\nConnection: Upgrade\r\n\r\n")
		n.ServeStdio(n.ctx, &hijacked{Conn: c, r: buf.Reader})
	})
	mux.HandleFunc("POST /v1/nodes/remove", func(w http.ResponseWriter, r *http.Request) {
		if err := n.RemoveNode(r.URL.Query().Get("name")); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, map[string]string{"status": "removed"})
	})
	mux.HandleFunc("POST /v1/down", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]string{"status": "stopping"})
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		go down()
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		select {
		case <-ctx.Done():
		case <-n.done:
		}
		srv.Close()
	}()
	err = srv.Serve(ln)
	os.Remove(path)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// Client talks to a daemon's local API.
type Client struct {
	StateDir string
	hc       *http.Client
}

// ErrNotRunning means no daemon answers on the state directory's socket.
var ErrNotRunning = errors.New("glow is not running")

// NewClient returns a client for the daemon of stateDir.
func NewClient(stateDir string) *Client {
	sock := State{Dir: stateDir}.Path(SocketName)
	return &Client{StateDir: stateDir, hc: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}}
}

func (c *Client) do(method, path string, out any) error {
	return c.doBody(method, path, nil, out)
}

func (c *Client) doBody(method, path string, body io.Reader, out any) error {
	req, err := http.NewRequest(method, "http://glow"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return fmt.Errorf("%w (state %s); start it with 'glow up'", ErrNotRunning, c.StateDir)
		}
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("glow daemon: %s", resp.Status)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Status fetches the daemon's status.
func (c *Client) Status() (Status, error) {
	var s Status
	err := c.do("GET", "/v1/status", &s)
	return s, err
}

// IP returns the overlay addresses of target ("" for this node).
func (c *Client) IP(target string) ([]netip.Addr, error) {
	var out struct{ Addrs []netip.Addr }
	err := c.do("GET", "/v1/ip?target="+neturl.QueryEscape(target), &out)
	return out.Addrs, err
}

// Ping sends one overlay ping.
func (c *Client) Ping(target string) (PingResult, error) {
	var r PingResult
	err := c.do("POST", "/v1/ping?target="+neturl.QueryEscape(target), &r)
	return r, err
}

// Invite asks for a join code.
func (c *Client) Invite(ttl time.Duration, uses int) (string, error) {
	var out struct{ Code string }
	err := c.do("POST", fmt.Sprintf("/v1/invite?ttl=%s&uses=%d", ttl, uses), &out)
	return out.Code, err
}

// Netcheck asks the daemon to probe NAT behaviour and port mapping.
func (c *Client) Netcheck() (Netcheck, error) {
	var nc Netcheck
	err := c.do("GET", "/v1/netcheck", &nc)
	return nc, err
}

// FriendInvite asks for a friend code.
func (c *Client) FriendInvite(ttl time.Duration) (string, error) {
	var out struct{ Code string }
	err := c.do("POST", "/v1/friend/invite?ttl="+ttl.String(), &out)
	return out.Code, err
}

// FriendAdd accepts a friend code; it returns the friend's user name.
func (c *Client) FriendAdd(code string) (string, error) {
	var out struct{ Friend string }
	err := c.do("POST", "/v1/friend/add?code="+neturl.QueryEscape(code), &out)
	return out.Friend, err
}

// Friends lists friends.
func (c *Client) Friends() ([]FriendInfo, error) {
	var out []FriendInfo
	err := c.do("GET", "/v1/friends", &out)
	return out, err
}

// FriendRemove drops a friend.
func (c *Client) FriendRemove(name string) error {
	return c.do("POST", "/v1/friend/remove?name="+neturl.QueryEscape(name), nil)
}

// Share (or with undo, unshare) target with user.
func (c *Client) Share(target, user string, undo bool) (version uint64, changed bool, err error) {
	var out struct {
		Version uint64
		Changed bool
	}
	q := "/v1/share?target=" + neturl.QueryEscape(target) + "&user=" + neturl.QueryEscape(user)
	if undo {
		q += "&undo=1"
	}
	err = c.do("POST", q, &out)
	return out.Version, out.Changed, err
}

// Policy returns the policy in force.
func (c *Client) Policy() (PolicyInfo, error) {
	var p PolicyInfo
	err := c.do("GET", "/v1/policy", &p)
	return p, err
}

// ApplyPolicy replaces the policy (validated by the daemon first).
func (c *Client) ApplyPolicy(text []byte) (PolicyInfo, error) {
	var p PolicyInfo
	err := c.doBody("POST", "/v1/policy", bytes.NewReader(text), &p)
	return p, err
}

// PolicyHistory lists policy versions.
func (c *Client) PolicyHistory() ([]PolicyVersion, error) {
	var h []PolicyVersion
	err := c.do("GET", "/v1/policy/history", &h)
	return h, err
}

// RollbackPolicy makes an earlier version's text the policy again.
func (c *Client) RollbackPolicy(version uint64) (PolicyInfo, error) {
	var p PolicyInfo
	err := c.do("POST", fmt.Sprintf("/v1/policy/rollback?version=%d", version), &p)
	return p, err
}

// Down asks the daemon to stop.
func (c *Client) Down() error { return c.do("POST", "/v1/down", nil) }

// hijacked is a taken-over API connection; reads go through the server's
// buffered reader, which may hold bytes already.
type hijacked struct {
	net.Conn
	r io.Reader
}

func (h *hijacked) Read(b []byte) (int, error) { return h.r.Read(b) }

// AddLink adds a link (see Node.AddLink).
func (c *Client) AddLink(url string) error {
	return c.do("POST", "/v1/link/add?url="+neturl.QueryEscape(url), nil)
}

// RemoveLink removes a configured link.
func (c *Client) RemoveLink(url string) error {
	return c.do("POST", "/v1/link/remove?url="+neturl.QueryEscape(url), nil)
}

// Links lists links.
func (c *Client) Links() ([]LinkStatus, error) {
	var out []LinkStatus
	err := c.do("GET", "/v1/links", &out)
	return out, err
}

// LinkStdio connects to the daemon's link endpoint and returns the raw
// connection, for glow link stdio to relay its stdin and stdout over.
func (c *Client) LinkStdio() (net.Conn, error) {
	sock := State{Dir: c.StateDir}.Path(SocketName)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("%w (state %s)", ErrNotRunning, c.StateDir)
	}
	io.WriteString(conn, "POST /v1/link/stdio HTTP/1.1\r\nHost: glow\r\nContent-Length: 0\r\n\r\n")
	// Read the status line and headers, byte by byte so nothing after them is consumed.
	var head []byte
	one := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := conn.Read(one); err != nil || len(head) > 4096 {
			conn.Close()
			return nil, fmt.Errorf("glow daemon: link stdio: %v", err)
		}
		head = append(head, one[0])
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		conn.Close()
		return nil, fmt.Errorf("glow daemon refused the link: %s", bytes.SplitN(head, []byte("\r\n"), 2)[0])
	}
	return conn, nil
}

// RemoveNode revokes a node of this user.
func (c *Client) RemoveNode(name string) error {
	return c.do("POST", "/v1/nodes/remove?name="+neturl.QueryEscape(name), nil)
}
