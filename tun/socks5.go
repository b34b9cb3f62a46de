package tun

// SOCKS5 wire format (RFC 1928), server side, CONNECT only, with no
// authentication or username/password (RFC 1929). socksHandshake is the
// parser of untrusted bytes; it is fuzzed by FuzzSOCKSHandshake.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

const (
	socksVersion = 0x05

	socksMethodNoAuth       = 0x00
	socksMethodUserPass     = 0x02
	socksMethodNoAcceptable = 0xff

	socksUserPassVersion = 0x01 // RFC 1929

	socksCmdConnect = 0x01

	socksAtypIPv4   = 0x01
	socksAtypDomain = 0x03
	socksAtypIPv6   = 0x04
)

// SOCKS5 reply codes (RFC 1928 section 6).
const (
	socksSucceeded          = 0x00
	socksGeneralFailure     = 0x01
	socksNotAllowed         = 0x02
	socksNetUnreachable     = 0x03
	socksHostUnreachable    = 0x04
	socksConnRefused        = 0x05
	socksTTLExpired         = 0x06
	socksCmdNotSupported    = 0x07
	socksAddrTypeNotSupport = 0x08
)

// socksRequest is a parsed CONNECT request: host is an IP literal or a
// domain name.
type socksRequest struct {
	host string
	port uint16
}

func (r socksRequest) String() string {
	return net.JoinHostPort(r.host, strconv.Itoa(int(r.port)))
}

var (
	errSOCKSVersion    = errors.New("socks: bad version")
	errSOCKSNoMethod   = errors.New("socks: client offers no acceptable auth method (only no-auth is supported)")
	errSOCKSNeedAuth   = errors.New("socks: client offers no username/password authentication, which this proxy requires")
	errSOCKSBadVersion = errors.New("socks: bad username/password subnegotiation version")
	errSOCKSBadCreds   = errors.New("socks: wrong username or password")
)

// credentials are what a client must present; nil means none.
type credentials struct {
	user, pass string
}

// match compares in constant time (for equal lengths).
func (c *credentials) match(user, pass []byte) bool {
	u := subtle.ConstantTimeCompare(user, []byte(c.user))
	p := subtle.ConstantTimeCompare(pass, []byte(c.pass))
	return u&p == 1
}

// socksHandshake reads a greeting and a request from r and writes the method
// selection to w, and the error reply when the request cannot be served.
// With creds, the client must choose username/password and present them
// (RFC 1929) before its request. On success the caller writes the final
// reply (socksReply).
func socksHandshake(r io.Reader, w io.Writer, creds *credentials) (socksRequest, error) {
	var buf [2 + 255]byte

	// Greeting: VER NMETHODS METHODS...
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return socksRequest{}, fmt.Errorf("socks: read greeting: %w", err)
	}
	if buf[0] != socksVersion {
		return socksRequest{}, errSOCKSVersion
	}
	methods := buf[2 : 2+int(buf[1])]
	if _, err := io.ReadFull(r, methods); err != nil {
		return socksRequest{}, fmt.Errorf("socks: read greeting: %w", err)
	}
	if creds != nil {
		if bytes.IndexByte(methods, socksMethodUserPass) < 0 {
			w.Write([]byte{socksVersion, socksMethodNoAcceptable})
			return socksRequest{}, errSOCKSNeedAuth
		}
		if _, err := w.Write([]byte{socksVersion, socksMethodUserPass}); err != nil {
			return socksRequest{}, err
		}
		if err := socksUserPass(r, w, creds, &buf); err != nil {
			return socksRequest{}, err
		}
	} else {
		if bytes.IndexByte(methods, socksMethodNoAuth) < 0 {
			w.Write([]byte{socksVersion, socksMethodNoAcceptable})
			return socksRequest{}, errSOCKSNoMethod
		}
		if _, err := w.Write([]byte{socksVersion, socksMethodNoAuth}); err != nil {
			return socksRequest{}, err
		}
	}

	// Request: VER CMD RSV ATYP DST.ADDR DST.PORT
	if _, err := io.ReadFull(r, buf[:4]); err != nil {
		return socksRequest{}, fmt.Errorf("socks: read request: %w", err)
	}
	if buf[0] != socksVersion {
		return socksRequest{}, errSOCKSVersion
	}
	cmd, atyp := buf[1], buf[3]
	var req socksRequest
	switch atyp {
	case socksAtypIPv4, socksAtypIPv6:
		n := 4
		if atyp == socksAtypIPv6 {
			n = 16
		}
		if _, err := io.ReadFull(r, buf[:n+2]); err != nil {
			return socksRequest{}, fmt.Errorf("socks: read request: %w", err)
		}
		a, _ := netip.AddrFromSlice(buf[:n])
		req = socksRequest{host: a.Unmap().String(), port: binary.BigEndian.Uint16(buf[n:])}
	case socksAtypDomain:
		if _, err := io.ReadFull(r, buf[:1]); err != nil {
			return socksRequest{}, fmt.Errorf("socks: read request: %w", err)
		}
		n := int(buf[0])
		if _, err := io.ReadFull(r, buf[:n+2]); err != nil {
			return socksRequest{}, fmt.Errorf("socks: read request: %w", err)
		}
		req = socksRequest{host: string(buf[:n]), port: binary.BigEndian.Uint16(buf[n:])}
		if a, err := netip.ParseAddr(req.host); err == nil && a.Zone() == "" {
			req.host = a.Unmap().String() // some clients send literals as names
		} else if !validHostname(req.host) {
			w.Write(socksReply(socksHostUnreachable, netip.AddrPort{}))
			return socksRequest{}, fmt.Errorf("socks: invalid domain name %q", req.host)
		}
	default:
		w.Write(socksReply(socksAddrTypeNotSupport, netip.AddrPort{}))
		return socksRequest{}, fmt.Errorf("socks: address type %#02x not supported", atyp)
	}
	if cmd != socksCmdConnect {
		w.Write(socksReply(socksCmdNotSupported, netip.AddrPort{}))
		return socksRequest{}, fmt.Errorf("socks: command %#02x not supported (only CONNECT)", cmd)
	}
	return req, nil
}

// socksUserPass runs the RFC 1929 subnegotiation: VER ULEN UNAME PLEN
// PASSWD from the client, VER STATUS back (0 success, 1 failure, after which
// the connection is closed).
func socksUserPass(r io.Reader, w io.Writer, creds *credentials, buf *[2 + 255]byte) error {
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return fmt.Errorf("socks: read username: %w", err)
	}
	if buf[0] != socksUserPassVersion {
		w.Write([]byte{socksUserPassVersion, 1})
		return errSOCKSBadVersion
	}
	user := make([]byte, buf[1])
	if _, err := io.ReadFull(r, user); err != nil {
		return fmt.Errorf("socks: read username: %w", err)
	}
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		return fmt.Errorf("socks: read password: %w", err)
	}
	pass := make([]byte, buf[0])
	if _, err := io.ReadFull(r, pass); err != nil {
		return fmt.Errorf("socks: read password: %w", err)
	}
	if !creds.match(user, pass) {
		w.Write([]byte{socksUserPassVersion, 1})
		return errSOCKSBadCreds
	}
	_, err := w.Write([]byte{socksUserPassVersion, 0})
	return err
}

// validHostname reports whether s looks like a DNS name: letters, digits,
// '-', '_' and '.', 1 to 253 bytes. Anything else cannot be resolved and
// must not reach Dial (a ':' or a NUL would change what "host:port" means).
func validHostname(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// socksReply builds a reply with the given code and bound address (the
// unspecified IPv4 address when bnd is not valid).
func socksReply(code byte, bnd netip.AddrPort) []byte {
	a := bnd.Addr().Unmap()
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	b := make([]byte, 0, 4+16+2)
	b = append(b, socksVersion, code, 0)
	if a.Is4() {
		b = append(b, socksAtypIPv4)
	} else {
		b = append(b, socksAtypIPv6)
	}
	b = append(b, a.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, bnd.Port())
}

var socksReplyCodes = [...]byte{
	outcomeFailure:         socksGeneralFailure,
	outcomeNotAllowed:      socksNotAllowed,
	outcomeNetUnreachable:  socksNetUnreachable,
	outcomeHostUnreachable: socksHostUnreachable,
	outcomeRefused:         socksConnRefused,
	outcomeTimeout:         socksTTLExpired,
}

// socks serves a SOCKS5 client up to and including the final reply, and
// returns the connected target.
func (p *proxy) socks(ctx context.Context, br *bufio.Reader, c net.Conn) (net.Conn, error) {
	req, err := socksHandshake(br, c, p.creds)
	if err != nil {
		return nil, err
	}
	t, err := p.connect(ctx, c, req.host, req.port)
	if err != nil {
		c.Write(socksReply(socksReplyCodes[dialOutcome(err)], netip.AddrPort{}))
		return nil, fmt.Errorf("socks: connect %v: %w", req, err)
	}
	if _, err := c.Write(socksReply(socksSucceeded, addrPortOf(t.LocalAddr()))); err != nil {
		t.Close()
		return nil, fmt.Errorf("socks: write reply: %w", err)
	}
	return t, nil
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}
