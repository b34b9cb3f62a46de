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
	"os"
	"strconv"
	"time"

	"glow/overlay/api"
)

// The local API's server: HTTP with JSON bodies over the unix socket
// STATE/glow.sock (mode 0600, so only the node's owner can drive it). The
// routes, the bodies and the client are package overlay/api; the CLI is a
// thin client of it.

// The API's bodies, named as the node's code has always named them.
type (
	Status         = api.Status
	SelfStatus     = api.SelfStatus
	PeerStatus     = api.PeerStatus
	AddrConflict   = api.AddrConflict
	PingResult     = api.PingResult
	Netcheck       = api.Netcheck
	NetcheckServer = api.NetcheckServer
	NetcheckRelay  = api.NetcheckRelay
	FriendInfo     = api.FriendInfo
	PolicyInfo     = api.PolicyInfo
	PolicyVersion  = api.PolicyVersion
	LinkStatus     = api.LinkStatus
)

// ServeAPI serves the local API until ctx is done or the node stops. down
// is called for POST /v1/down after the reply is written.
func (n *Node) ServeAPI(ctx context.Context, down func()) error {
	path := n.state.Path(api.SocketName)
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
	mux.Handle("GET /v1/metrics", n.MetricsHandler())
	mux.HandleFunc("GET /v1/metrics/snapshot", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.Metrics())
	})
	mux.HandleFunc("GET /v1/ip", func(w http.ResponseWriter, r *http.Request) {
		addrs, err := n.Addrs(r.URL.Query().Get("target"))
		if err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, map[string][]netip.Addr{"addrs": addrs})
	})
	mux.HandleFunc("POST /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), pingTimeout)
		defer cancel()
		res, err := n.Ping(ctx, r.URL.Query().Get("target"))
		if err != nil {
			writeErr(w, api.CodeUnavailable, err)
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
				writeErr(w, api.CodeInvalidArgument, fmt.Errorf("--ttl %q: want a duration such as 30m or 24h", s))
				return
			}
			ttl = d
		}
		uses := 1
		if s := q.Get("uses"); s != "" {
			u, err := strconv.Atoi(s)
			if err != nil || u < 1 {
				writeErr(w, api.CodeInvalidArgument, fmt.Errorf("--uses %q: want a whole number of at least 1", s))
				return
			}
			uses = u
		}
		code, err := n.Invite(ttl, uses)
		if err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, map[string]any{"code": code, "expires": time.Now().Add(ttl).UTC().Format(time.RFC3339), "uses": uses})
	})
	mux.HandleFunc("GET /v1/netcheck", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		nc, err := n.Netcheck(ctx)
		if err != nil {
			writeErr(w, api.CodeUnavailable, err)
			return
		}
		writeJSON(w, nc)
	})
	mux.HandleFunc("POST /v1/friend/invite", func(w http.ResponseWriter, r *http.Request) {
		ttl := 24 * time.Hour
		if s := r.URL.Query().Get("ttl"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				writeErr(w, api.CodeInvalidArgument, fmt.Errorf("--ttl %q: want a duration such as 24h", s))
				return
			}
			ttl = d
		}
		code, err := n.FriendInvite(ttl)
		if err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, map[string]string{"code": code})
	})
	mux.HandleFunc("POST /v1/friend/add", func(w http.ResponseWriter, r *http.Request) {
		name, err := n.FriendAdd(r.Context(), r.URL.Query().Get("code"))
		if err != nil {
			writeErr(w, api.CodeInternal, err)
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
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, map[string]string{"status": "removed"})
	})
	mux.HandleFunc("POST /v1/share", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		info, changed, err := n.Share(q.Get("target"), q.Get("user"), q.Get("undo") != "1")
		if err != nil {
			writeErr(w, api.CodeInternal, err)
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
			writeErr(w, api.CodeInvalidArgument, err)
			return
		}
		var info PolicyInfo
		if b := r.URL.Query().Get("base"); b != "" { // docmerge.go
			base, perr := strconv.ParseUint(b, 10, 64)
			if perr != nil {
				writeErr(w, api.CodeInvalidArgument, fmt.Errorf("--base %q: want a version number", b))
				return
			}
			info, err = n.ApplyPolicyOn(base, string(body))
		} else {
			info, err = n.ApplyPolicy(string(body))
		}
		if err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, info)
	})
	mux.HandleFunc("GET /v1/policy/history", func(w http.ResponseWriter, r *http.Request) {
		h, err := n.PolicyHistory()
		if err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, h)
	})
	mux.HandleFunc("POST /v1/policy/rollback", func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.ParseUint(r.URL.Query().Get("version"), 10, 64)
		if err != nil {
			writeErr(w, api.CodeInvalidArgument, fmt.Errorf("version %q: want a number from 'glow policy history'", r.URL.Query().Get("version")))
			return
		}
		info, err := n.RollbackPolicy(v)
		if err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, info)
	})
	mux.HandleFunc("POST /v1/link/add", func(w http.ResponseWriter, r *http.Request) {
		if err := n.AddLink(r.URL.Query().Get("url")); err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, map[string]string{"status": "added"})
	})
	mux.HandleFunc("POST /v1/link/remove", func(w http.ResponseWriter, r *http.Request) {
		if err := n.RemoveLink(r.URL.Query().Get("url")); err != nil {
			writeErr(w, api.CodeInternal, err)
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
			writeErr(w, api.CodeInternal, errors.New("cannot take over the connection"))
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
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, map[string]string{"status": "removed"})
	})
	mux.HandleFunc("POST /v1/set", func(w http.ResponseWriter, r *http.Request) {
		var ch api.PrefsChange
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&ch); err != nil {
			writeErr(w, api.CodeInvalidArgument, fmt.Errorf("set: %w", err))
			return
		}
		p, err := n.SetPrefs(ch)
		if err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, p)
	})
	n.adminRoutes(mux)  // admins.go: nodes list, promote, demote
	n.serveDevices(mux) // devices.go
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

// writeErr answers with err's code (api.CodeOf: the node's errors are
// api.Errorf values or wrap an api sentinel), or def when it has none.
func writeErr(w http.ResponseWriter, def api.Code, err error) {
	code := api.CodeOf(err)
	if code == "" {
		code = def
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(api.HTTPStatus(code))
	json.NewEncoder(w).Encode(api.ErrorBody{Error: err.Error(), Code: code})
}

// hijacked is a taken-over API connection; reads go through the server's
// buffered reader, which may hold bytes already.
type hijacked struct {
	net.Conn
	r io.Reader
}

func (h *hijacked) Read(b []byte) (int, error) { return h.r.Read(b) }
