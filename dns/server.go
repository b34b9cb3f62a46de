package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// The fixed addresses the resolver listens on inside the overlay. The overlay
// puts them on its TUN interface and serves on port 53 of each; resolv.conf or
// systemd-resolved then points at them. They never leave the machine.
//
// ServiceV4 is in 100.64.0.0/10 (like Tailscale's 100.100.100.100, but its
// own address so both can run side by side). ServiceV6 is in the ULA prefix
// fd00:676c:6f77::/48, whose global ID spells "\x00glow".
var (
	ServiceV4 = netip.MustParseAddr("100.100.100.53")
	ServiceV6 = netip.MustParseAddr("fd00:676c:6f77::53")
	// ServicePrefix6 is the /48 that ServiceV6 is in; glow's firewall keeps
	// it (with the overlay's other ranges) off the underlay.
	ServicePrefix6 = netip.MustParsePrefix("fd00:676c:6f77::/48")
)

// TTL is the time to live of every answer from the name table, and the
// negative-caching time in its SOA. It is short because records change as
// nodes come and go, and the answers are cheap.
const TTL = 30 * time.Second

// Limits.
const (
	// MaxQuerySize is the largest query accepted. Real queries are a few
	// hundred bytes; a longer one is answered with FORMERR.
	MaxQuerySize = 4096
	// ednsSize is the UDP payload size advertised in our OPT records: the
	// DNS Flag Day 2020 value, which avoids fragmentation on every path.
	ednsSize = 1232
	// maxForwards bounds the queries being forwarded at once per
	// ServeUDP; beyond it new forwards are dropped (the client retries).
	maxForwards = 512
	// maxTCPConns bounds the open TCP connections per ServeTCP.
	maxTCPConns = 256
	// tcpIdle is how long a TCP connection may sit idle between queries.
	tcpIdle = 10 * time.Second
	// defaultUpstreamTimeout is how long one upstream gets to answer.
	defaultUpstreamTimeout = 2 * time.Second
)

// DefaultPrefixes are the overlay's address ranges when Config.Prefixes is
// empty: the CGNAT range glow takes IPv4 addresses from, and the ULA /48 of
// the service address. Reverse lookups of unknown addresses inside them get
// NXDOMAIN rather than being leaked to the upstream resolvers.
var DefaultPrefixes = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),
	ServicePrefix6,
}

// Config configures a Server. It is validated once, by [New].
type Config struct {
	// Suffix is the domain under which names live: NODE.USER.SUFFIX.
	// Default "glow". It may have several labels ("glow.example.com").
	Suffix string
	// SelfUser is this node's own user. Single-label names ("nas") are
	// answered as NODE.SELFUSER.SUFFIX. Empty disables short names.
	SelfUser string
	// Names is the directory to answer from. Required.
	Names Names
	// Upstreams are the resolvers the system had before glow. Names
	// outside the suffix are forwarded to them, in order. None: such
	// queries are REFUSED.
	Upstreams []netip.AddrPort
	// Prefixes are the overlay's address ranges (see [DefaultPrefixes]).
	// The overlay adds the ULA /48 of each user it knows.
	Prefixes []netip.Prefix
	// UpstreamTimeout bounds one exchange with one upstream. Default 2s.
	UpstreamTimeout time.Duration
	// Logf logs upstream failures and the like. Nil: no logging.
	Logf func(format string, args ...any)
	// Dial opens connections to the upstreams ("udp" or "tcp"). Nil means
	// a net.Dialer. The overlay passes its own to reach upstreams from a
	// userspace network stack.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Server is a MagicDNS resolver. Its methods are safe for concurrent use.
type Server struct {
	// Immutable after New.
	suffix    string // lowercase, fully qualified: "glow."
	dotSuffix string // "." + suffix
	selfUser  string
	names     Names
	upstreams []netip.AddrPort
	prefixes  []netip.Prefix
	timeout   time.Duration
	logf      func(string, ...any)
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)

	// exit, when set, replaces upstreams: the exit node's resolver while
	// one is in use (SetExitUpstreams).
	exit atomic.Pointer[[]netip.AddrPort]

	stats counters // atomic
}

// New validates cfg and returns a Server. It opens no sockets.
func New(cfg Config) (*Server, error) {
	if cfg.Names == nil {
		return nil, errors.New("dns: Config.Names is nil")
	}
	suffix := strings.ToLower(strings.Trim(cfg.Suffix, "."))
	if suffix == "" {
		suffix = "glow"
	}
	if _, ok := dns.IsDomainName(suffix); !ok || strings.ContainsAny(suffix, "\\ ") {
		return nil, fmt.Errorf("dns: Config.Suffix %q is not a domain name", cfg.Suffix)
	}
	self := strings.ToLower(cfg.SelfUser)
	if self != "" && !isLabel(self) {
		return nil, fmt.Errorf("dns: Config.SelfUser %q is not a DNS label", cfg.SelfUser)
	}
	for _, u := range cfg.Upstreams {
		if !u.IsValid() || u.Port() == 0 {
			return nil, fmt.Errorf("dns: Config.Upstreams: invalid address %v", u)
		}
		if a := u.Addr().Unmap(); a == ServiceV4 || a == ServiceV6 {
			return nil, fmt.Errorf("dns: Config.Upstreams: %v is glow's own resolver (a loop)", u)
		}
	}
	prefixes := cfg.Prefixes
	if len(prefixes) == 0 {
		prefixes = DefaultPrefixes
	}
	for _, p := range prefixes {
		if !p.IsValid() {
			return nil, fmt.Errorf("dns: Config.Prefixes: invalid prefix %v", p)
		}
	}
	s := &Server{
		suffix:    suffix + ".",
		dotSuffix: "." + suffix + ".",
		selfUser:  self,
		names:     cfg.Names,
		upstreams: append([]netip.AddrPort(nil), cfg.Upstreams...),
		prefixes:  append([]netip.Prefix(nil), prefixes...),
		timeout:   cfg.UpstreamTimeout,
		logf:      cfg.Logf,
		dial:      cfg.Dial,
	}
	if s.timeout <= 0 {
		s.timeout = defaultUpstreamTimeout
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	if s.dial == nil {
		var d net.Dialer
		s.dial = d.DialContext
	}
	return s, nil
}

// SetExitUpstreams makes names outside the suffix go to ups instead of
// Config.Upstreams while on: the overlay points them at its exit node's
// resolver (over the tunnel) while an exit node is in use, so that the
// local network's resolver learns nothing of what is looked up. On with no
// ups (the chosen exit node is unknown) such names get SERVFAIL: never
// Config.Upstreams, so nothing leaks while the exit node is away. Off:
// Config.Upstreams again.
func (s *Server) SetExitUpstreams(on bool, ups []netip.AddrPort) {
	if !on {
		s.exit.Store(nil)
		return
	}
	ups = slices.Clone(ups)
	if ups == nil {
		ups = []netip.AddrPort{}
	}
	s.exit.Store(&ups)
}

// forwardTo returns the resolvers to forward to, and whether they are an
// exit node's.
func (s *Server) forwardTo() ([]netip.AddrPort, bool) {
	if p := s.exit.Load(); p != nil {
		return *p, true
	}
	return s.upstreams, false
}

// isLabel reports whether s is one LDH-ish DNS label (letters, digits,
// hyphen, underscore; 1 to 63 bytes).
func isLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Stats are the server's counters since New.
type Stats struct {
	Queries        uint64 // messages received (and calls to Handle)
	Local          uint64 // answered from Names (including NXDOMAIN/NODATA)
	Forwarded      uint64 // answered by an upstream
	UpstreamErrors uint64 // failed exchanges with one upstream (timeouts, refused, bad replies)
	ServFail       uint64 // SERVFAIL sent because every upstream failed
	Refused        uint64 // REFUSED sent: a name to forward but no upstreams
	FormErr        uint64 // FORMERR sent: malformed or oversized query, not exactly one question
	NotImp         uint64 // NOTIMP sent: an opcode other than QUERY
	Truncated      uint64 // UDP replies cut to the client's size, with TC set

	// Drops: messages that got no reply, by reason.
	DropShort    uint64 // shorter than a DNS header
	DropResponse uint64 // a response (QR set), not a query: never answer those
	DropOverload uint64 // too many forwards or TCP connections in flight
	DropWrite    uint64 // the reply could not be packed or sent
	DropClient   uint64 // from a client outside the overlay and loopback (see [Server.ClientAllowed])
}

type counters struct {
	queries, local, forwarded, upstreamErrors, servFail, refused atomic.Uint64
	formErr, notImp, truncated                                   atomic.Uint64
	dropShort, dropResponse, dropOverload, dropWrite             atomic.Uint64
	dropClient                                                   atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Queries: c.queries.Load(), Local: c.local.Load(), Forwarded: c.forwarded.Load(),
		UpstreamErrors: c.upstreamErrors.Load(), ServFail: c.servFail.Load(), Refused: c.refused.Load(),
		FormErr: c.formErr.Load(), NotImp: c.notImp.Load(), Truncated: c.truncated.Load(),
		DropShort: c.dropShort.Load(), DropResponse: c.dropResponse.Load(),
		DropOverload: c.dropOverload.Load(), DropWrite: c.dropWrite.Load(),
		DropClient: c.dropClient.Load(),
	}
}

// ClientAllowed reports whether the resolver answers a client at a: only
// programs of this machine (loopback, or an overlay source address such as
// the service addresses themselves) and the overlay (Config.Prefixes) are
// served. A LAN host that routes the service address at this machine gets
// nothing: an open resolver on the LAN would leak the names of the user's
// nodes and forward for strangers. Queries from others are dropped, not
// REFUSED (no reply to a forged source), and counted as DropClient. glow's
// firewall (tun/firewall) already keeps such packets out; this check holds
// without it (--no-firewall) too.
func (s *Server) ClientAllowed(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a == ServiceV4 || a == ServiceV6 {
		return true
	}
	for _, p := range s.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAllowed is ClientAllowed for a socket address; it counts a refusal.
func (s *Server) clientAllowed(addr net.Addr) bool {
	var a netip.Addr
	switch v := addr.(type) {
	case *net.UDPAddr:
		a = v.AddrPort().Addr()
	case *net.TCPAddr:
		a = v.AddrPort().Addr()
	default:
		if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
			a = ap.Addr()
		}
	}
	if s.ClientAllowed(a) {
		return true
	}
	s.stats.dropClient.Add(1)
	return false
}
