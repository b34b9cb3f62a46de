package overlay

import (
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
	req, err := http.NewRequest(method, "http://glow"+path, nil)
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
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("glow daemon: %s", resp.Status)
	}
	if out != nil {
		return json.Unmarshal(body, out)
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

// Down asks the daemon to stop.
func (c *Client) Down() error { return c.do("POST", "/v1/down", nil) }
