package link

// WebSocket stream links, for networks where only HTTP(S) gets out (or in,
// behind a reverse proxy that passes WebSocket upgrades on a path such as
// DefaultWSPath).
//
// The link's byte stream rides binary WebSocket messages: each flush of
// WriteDatagrams becomes one message, and the reader treats the messages as
// one byte stream, so message boundaries carry no meaning and a proxy that
// re-frames messages does no harm. The Handshake runs inside the WebSocket,
// end to end, so a TLS-terminating proxy in between learns nothing it could
// use to impersonate either node.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"glow/internal/underlay"
)

// DefaultWSPath is where glow serves WebSocket links by convention.
const DefaultWSPath = "/glow/link"

// wsSubprotocol names the protocol in the upgrade, so that a glow server and
// an unrelated WebSocket endpoint refuse each other early.
const wsSubprotocol = "glow-link-v1"

// wsReadLimit bounds one WebSocket message: a flush is at most the writer's
// buffer (64 KiB) or one datagram with its header.
const wsReadLimit = 128 << 10

// DialWS opens a WebSocket link to url (ws:// or wss://) and runs Handshake
// over it. tlsConfig is used for wss:// (nil: the system roots). An HTTP(S)
// proxy from the environment is honoured. ctx bounds the dial and the
// handshake, not the Stream's life.
func DialWS(ctx context.Context, url string, self Identity, verify Verify, tlsConfig *tls.Config) (*Stream, error) {
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, Control: underlay.Control}).DialContext,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   false, // WebSocket needs HTTP/1.1's Upgrade
	}
	defer tr.CloseIdleConnections()
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: tr},
		Subprotocols: []string{wsSubprotocol},
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("link: websocket %s: HTTP %s: %w", url, resp.Status, err)
		}
		return nil, fmt.Errorf("link: websocket %s: %w", url, err)
	}
	if ws.Subprotocol() != wsSubprotocol {
		ws.CloseNow()
		return nil, fmt.Errorf("link: websocket %s: server does not speak %s", url, wsSubprotocol)
	}
	s, err := Handshake(ctx, wsStream(ws), self, verify)
	if err != nil {
		return nil, fmt.Errorf("link: websocket %s: %w", url, err)
	}
	return s, nil
}

// WSHandler serves WebSocket links: it upgrades the request, runs Handshake,
// and hands each authenticated Stream to accept, which then owns it. accept
// runs in the request's goroutine and should return promptly. Mount it on
// DefaultWSPath, directly or behind a reverse proxy.
func WSHandler(self Identity, verify Verify, accept func(*Stream)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols: []string{wsSubprotocol},
		})
		if err != nil {
			return // Accept wrote the HTTP error
		}
		if ws.Subprotocol() != wsSubprotocol {
			ws.Close(websocket.StatusPolicyViolation, "want subprotocol "+wsSubprotocol)
			return
		}
		// The request's ctx ends when this handler returns; the handshake
		// only needs it until then.
		ctx, cancel := context.WithTimeout(r.Context(), HandshakeTimeout)
		defer cancel()
		s, err := Handshake(ctx, wsStream(ws), self, verify)
		if err != nil {
			return
		}
		accept(s)
	})
}

// wsConn is a WebSocket as a byte stream whose Close is immediate: a link is
// closed when the overlay gives up on it, and a peer that stopped reading
// must not hold Close for the close handshake's timeout.
type wsConn struct {
	net.Conn
	ws     *websocket.Conn
	cancel context.CancelFunc
}

func wsStream(ws *websocket.Conn) *wsConn {
	ws.SetReadLimit(wsReadLimit)
	ctx, cancel := context.WithCancel(context.Background())
	return &wsConn{Conn: websocket.NetConn(ctx, ws, websocket.MessageBinary), ws: ws, cancel: cancel}
}

func (c *wsConn) Close() error {
	c.cancel()
	return c.ws.CloseNow()
}
