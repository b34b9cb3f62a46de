package link

// Link targets as users write them: --peer udp://vps.example.net:41641,
// ws://proxy/glow/link, ssh://me@nas.

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Transport is the means a Target is reached by.
type Transport string

// Transports a Target may name (its URL scheme).
const (
	TransportUDP Transport = "udp"
	TransportTCP Transport = "tcp"
	TransportWS  Transport = "ws"
	TransportWSS Transport = "wss"
	TransportSSH Transport = "ssh"
)

// Target is a parsed link URL.
type Target struct {
	Transport Transport
	// Addr is host:port for udp and tcp, and host[:port] for ws, wss and
	// ssh (their default ports apply when it has none).
	Addr string
	// URL is the parsed URL: pass it to DialWS (URL.String()) or SSHArgv.
	URL *url.URL
}

// String returns the target as a URL.
func (t Target) String() string { return t.URL.String() }

// ParseURL parses udp://host:port, tcp://host:port, ws://host[:port]/path,
// wss://host[:port]/path or ssh://[user@]host[:port]. A ws or wss URL
// without a path gets DefaultWSPath.
func ParseURL(s string) (Target, error) {
	fail := func(format string, args ...any) (Target, error) {
		return Target{}, fmt.Errorf("link: %q: "+format, append([]any{s}, args...)...)
	}
	if !strings.Contains(s, "://") {
		return fail("no scheme; want udp://, tcp://, ws://, wss:// or ssh://")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fail("%v", err)
	}
	t := Target{Transport: Transport(strings.ToLower(u.Scheme)), URL: u}
	u.Scheme = string(t.Transport)
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return fail("no host")
	}
	if strings.HasPrefix(host, "-") {
		return fail("host may not start with '-'")
	}
	if port != "" {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return fail("bad port %q", port)
		}
	}
	if u.Fragment != "" {
		return fail("a link URL has no #fragment")
	}
	switch t.Transport {
	case TransportUDP, TransportTCP:
		if port == "" {
			return fail("%s needs a port (%s://HOST:PORT)", t.Transport, t.Transport)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return fail("%s takes only HOST:PORT", t.Transport)
		}
		t.Addr = net.JoinHostPort(host, port)
	case TransportWS, TransportWSS:
		if u.User != nil {
			return fail("credentials in a WebSocket URL are not supported")
		}
		if u.Path == "" {
			u.Path = DefaultWSPath
		}
		t.Addr = u.Host
	case TransportSSH:
		if u.Path != "" && u.Path != "/" {
			return fail("ssh takes only [USER@]HOST[:PORT][?glow=PATH&state=DIR]")
		}
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return fail("bad query: %v", err)
		}
		for k := range q {
			if k != "glow" && k != "state" {
				return fail("ssh takes only the options glow (the remote glow binary) and state (its state directory), not %q", k)
			}
		}
		if _, hasPw := u.User.Password(); hasPw {
			return fail("no passwords in ssh URLs; use keys or an agent")
		}
		if u.User != nil && strings.HasPrefix(u.User.Username(), "-") {
			return fail("user may not start with '-'")
		}
		t.Addr = u.Host
	default:
		return fail("unknown scheme %q; want udp, tcp, ws, wss or ssh", u.Scheme)
	}
	return t, nil
}
