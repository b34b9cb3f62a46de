package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// DefaultTURNPort is the TURN port when a URL names none (RFC 5766).
const DefaultTURNPort = 3478

// ParseTURNURL turns a TURN server URL, as a user writes it, into a client
// config (Conn and Logf left for the caller):
//
//	turn://user:pass@198.51.100.7:3478
//	turn://user:pass@turn.example.net?realm=example.net
//	turn:198.51.100.7?transport=udp           (RFC 7065; credentials from elsewhere)
//
// The port defaults to 3478. Userinfo is percent-decoded, so a password
// with '@', ':' or '/' must be percent-encoded. An IPv4 host fills Server;
// a DNS name fills ServerName, for DialTURN to look up. Only UDP transport
// to an IPv4 server is supported (pion/turn v2), so turns:, ?transport=tcp
// and IPv6 hosts are refused by name. Errors never repeat the password.
func ParseTURNURL(s string) (TURNClientConfig, error) {
	cfg, err := parseTURNURL(s)
	if err != nil {
		return TURNClientConfig{}, err
	}
	return cfg, nil
}

func parseTURNURL(s string) (TURNClientConfig, error) {
	var cfg TURNClientConfig
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok {
		return cfg, errors.New(`relay: TURN URL has no scheme (want "turn://user:pass@host:port")`)
	}
	switch strings.ToLower(scheme) {
	case "turn":
	case "turns":
		return cfg, errors.New("relay: TURN URL: turns: (TURN over TLS) is not supported; use turn: (UDP)")
	case "stun", "stuns":
		return cfg, fmt.Errorf("relay: TURN URL: %s: names a STUN server, which cannot relay; want turn:", scheme)
	default:
		return cfg, fmt.Errorf("relay: TURN URL: scheme %q is not turn:", truncate(scheme, 16))
	}
	// RFC 7065 writes "turn:host:port"; glow also takes "turn://user:pass@host:port".
	// Both parse the same way once the authority follows "//".
	rest = strings.TrimPrefix(rest, "//")
	if strings.ContainsAny(rest, " \t\r\n\x00") {
		return cfg, errors.New("relay: TURN URL contains white space or control characters")
	}
	u, err := url.Parse("turn://" + rest)
	if err != nil {
		// url.Error repeats the whole URL, password included; say less.
		return cfg, errors.New("relay: TURN URL is malformed (want turn://user:pass@host:port; percent-encode '@', ':' and '/' in the password)")
	}
	if u.Path != "" && u.Path != "/" {
		return cfg, fmt.Errorf("relay: TURN URL has a path %q; a TURN URL names only a host and port", truncate(u.Path, 32))
	}
	if u.Fragment != "" {
		return cfg, errors.New("relay: TURN URL has a #fragment")
	}

	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return cfg, errors.New("relay: TURN URL has a malformed query")
	}
	for k, v := range q {
		switch k {
		case "transport":
			if t := strings.ToLower(v[len(v)-1]); t != "udp" {
				return cfg, fmt.Errorf("relay: TURN URL: transport=%s is not supported; only udp", truncate(t, 16))
			}
		case "realm":
			cfg.Realm = v[len(v)-1]
		default:
			return cfg, fmt.Errorf("relay: TURN URL: unknown query parameter %q (know transport, realm)", truncate(k, 32))
		}
	}

	if u.User != nil {
		cfg.Username = u.User.Username()
		pw, ok := u.User.Password()
		switch {
		case cfg.Username == "":
			return cfg, errors.New("relay: TURN URL has a password but no username")
		case !ok || pw == "":
			return cfg, fmt.Errorf("relay: TURN URL has username %q but no password", cfg.Username)
		}
		cfg.Password = pw
	}

	host, port := u.Hostname(), uint64(DefaultTURNPort)
	if p := u.Port(); p != "" {
		port, err = strconv.ParseUint(p, 10, 16)
		if err != nil || port == 0 {
			return cfg, fmt.Errorf("relay: TURN URL: port %q is not in 1-65535", truncate(p, 16))
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return cfg, errors.New("relay: TURN URL has an empty port")
	}
	if host == "" {
		return cfg, errors.New("relay: TURN URL has no host")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" || !ip.Unmap().Is4() {
			return cfg, fmt.Errorf("relay: TURN URL: host %s is not IPv4 (pion/turn v2 relays IPv4 only)", host)
		}
		cfg.Server = netip.AddrPortFrom(ip.Unmap(), uint16(port))
		return cfg, nil
	}
	if !isDNSName(host) {
		return cfg, fmt.Errorf("relay: TURN URL: host %q is neither an IPv4 address nor a DNS name", truncate(host, 64))
	}
	cfg.ServerName = net.JoinHostPort(host, strconv.FormatUint(port, 10))
	return cfg, nil
}

// isDNSName reports whether s is a syntactically valid host name: labels of
// letters, digits and inner hyphens, 1-63 bytes each, 253 in all, not all
// digits (that would be a malformed IPv4 address).
func isDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	allDigits := true
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
				allDigits = false
			default:
				return false
			}
		}
	}
	return !allDigits
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
