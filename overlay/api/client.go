// Package api is the local API of a glow daemon as its clients see it: the
// JSON bodies, and a Client that speaks HTTP to the daemon over the unix
// socket STATE/glow.sock. The CLI (cmd/glow) drives a running node only
// through it.
//
//	c := api.NewClient(stateDir)
//	st, err := c.Status()
//
// The server is package overlay (api.go), the only producer of these
// bodies; the package sits under overlay because it is overlay's
// contract. It is a separate package so that a client needs none of the
// node: it imports only the standard library, never wireguard-go, gVisor or
// the leaves overlay builds on (deps_test.go at the repository root holds
// it to that, as tailscale's client/local is kept apart from its ipn
// server). The glow binary is also the daemon, so it links the node
// anyway; another client (a status bar, a test) links only this.
package api

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
	"path/filepath"
	"time"
)

// The routes, all HTTP with JSON bodies:
//
//	GET  /v1/status              Status
//	GET  /v1/metrics             the Prometheus text format (package glow/metrics)
//	GET  /v1/metrics/snapshot    Metrics
//	GET  /v1/ip?target=T         {"addrs": [...]}
//	POST /v1/ping?target=T       PingResult (one ping)
//	POST /v1/invite?ttl=D&uses=N {"code": "..."}
//	GET  /v1/netcheck            Netcheck (STUN and port mapping probes)
//	POST /v1/friend/invite|add|remove, GET /v1/friends
//	POST /v1/share?target=T&user=U[&undo=1]
//	GET|POST /v1/policy, GET /v1/policy/history, POST /v1/policy/rollback?version=V
//	POST /v1/link/add|remove?url=U, GET /v1/links, POST /v1/link/stdio (takes the connection over)
//	POST /v1/nodes/remove?name=N
//	POST /v1/set                 PrefsChange in, Prefs out (routes, exit node: prefs.go)
//	POST /v1/down                stops the daemon

// SocketName is the control socket's file name in the state directory.
const SocketName = "glow.sock"

// SocketPath is the control socket of the daemon whose state is stateDir.
func SocketPath(stateDir string) string { return filepath.Join(stateDir, SocketName) }

// ErrNotRunning means no daemon answers on the state directory's socket.
// Every other failure the daemon reports is an *Error (errors.go).
var ErrNotRunning = errors.New("glow is not running")

// Client talks to a daemon's local API.
type Client struct {
	StateDir string
	hc       *http.Client
}

// NewClient returns a client for the daemon of stateDir.
func NewClient(stateDir string) *Client {
	sock := SocketPath(stateDir)
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
	data, err := c.doRaw(method, path, body)
	if err != nil {
		return err
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// doRaw makes a request and returns the body of a successful answer.
func (c *Client) doRaw(method, path string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequest(method, "http://glow"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return nil, fmt.Errorf("%w (state %s); start it with 'glow up'", ErrNotRunning, c.StateDir)
		}
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorBody
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = "glow daemon: " + resp.Status
		}
		if e.Code == "" {
			e.Code = codeOfStatus(resp.StatusCode)
		}
		return nil, &Error{Code: e.Code, Message: e.Error}
	}
	return data, nil
}

// Status fetches the daemon's status.
func (c *Client) Status() (Status, error) {
	var s Status
	err := c.do("GET", "/v1/status", &s)
	return s, err
}

// Metrics fetches a snapshot of the daemon's counters.
func (c *Client) Metrics() (Metrics, error) {
	var m Metrics
	err := c.do("GET", "/v1/metrics/snapshot", &m)
	return m, err
}

// MetricsText fetches the daemon's metrics in the Prometheus text format.
func (c *Client) MetricsText() ([]byte, error) {
	return c.doRaw("GET", "/v1/metrics", nil)
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

// AddLink adds a link (see overlay's Node.AddLink).
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
	conn, err := net.Dial("unix", SocketPath(c.StateDir))
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
