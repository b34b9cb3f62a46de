package tun

// HTTP CONNECT (RFC 9110 section 9.3.6) on the SOCKS5 listener, for clients
// configured with an "HTTP proxy". Only CONNECT is served: glow forwards
// bytes, it does not fetch URLs.

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

var httpStatus = [...]int{
	outcomeFailure:         http.StatusBadGateway,
	outcomeNotAllowed:      http.StatusForbidden,
	outcomeNetUnreachable:  http.StatusBadGateway,
	outcomeHostUnreachable: http.StatusBadGateway,
	outcomeRefused:         http.StatusBadGateway,
	outcomeTimeout:         http.StatusGatewayTimeout,
}

func (p *proxy) httpConnect(ctx context.Context, br *bufio.Reader, c net.Conn) (net.Conn, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		httpError(c, http.StatusBadRequest, "")
		return nil, fmt.Errorf("http: read request: %w", err)
	}
	if req.Method != http.MethodConnect {
		httpError(c, http.StatusMethodNotAllowed, "Allow: CONNECT\r\n")
		return nil, fmt.Errorf("http: method %q not supported (only CONNECT)", req.Method)
	}
	if p.creds != nil {
		user, pass, ok := parseBasic(req.Header.Get("Proxy-Authorization"))
		if !ok || !p.creds.match([]byte(user), []byte(pass)) {
			httpError(c, http.StatusProxyAuthRequired, "Proxy-Authenticate: Basic realm=\"glow\"\r\n")
			return nil, errors.New("http: missing or wrong Proxy-Authorization")
		}
	}
	host, sport, err := net.SplitHostPort(req.Host)
	port, perr := strconv.ParseUint(sport, 10, 16)
	if err != nil || perr != nil || !validHost(host) {
		httpError(c, http.StatusBadRequest, "")
		return nil, fmt.Errorf("http: bad CONNECT target %q", req.Host)
	}
	t, err := p.connect(ctx, c, host, uint16(port))
	if err != nil {
		httpError(c, httpStatus[dialOutcome(err)], "")
		return nil, fmt.Errorf("http: connect %s: %w", req.Host, err)
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		t.Close()
		return nil, fmt.Errorf("http: write reply: %w", err)
	}
	return t, nil
}

// parseBasic parses "Basic base64(user:pass)".
func parseBasic(h string) (user, pass string, ok bool) {
	scheme, enc, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(b), ":")
}

// httpError writes a response with no body; extra is more header lines.
func httpError(w io.Writer, code int, extra string) {
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n", code, http.StatusText(code), extra)
}

// validHost reports whether host is an IP literal without zone or a DNS name.
func validHost(host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Zone() == ""
	}
	return validHostname(host)
}
