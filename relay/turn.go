// TURN (RFC 5766, through pion/turn/v2) is the relay of last resort that
// needs no glow node in the middle: a [TURNClient] takes a relayed address
// on any TURN server the user names ([ParseTURNURL]), and a glow node with
// a public address can serve others with a [TURNServer]. Unlike a
// Forwarder, a TURN server does not know glow's nodes: its users are
// long-term credentials, its abuse bounds are an allocation cap and a peer
// filter, and a relayed address reaches any peer its owner permits.
package relay

// How a datagram travels through TURN (turn_client.go, turn_server.go):
//
//	node A                           TURN server                       peer B
//	TURNClient.WriteTo ─► Send indication / ChannelData ─► allocation's relay socket ─► B's address
//	TURNClient.ReadFrom ◄─ Data indication / ChannelData ◄─ relay socket ◄─ B (if A permits B's IP)
//
// On the client, one goroutine (readLoop) reads the client's UDP socket,
// keeps only datagrams from the server and hands them to pion, which
// demultiplexes transaction responses from relayed data and queues the
// data (copied, up to 1024 datagrams) for ReadFrom. WriteTo runs in the
// caller's goroutine: the first datagram to a new peer IP waits one round
// trip for the server to grant a permission, later ones are framed and
// sent at once (pion binds a channel in the background to shrink the
// framing from 36 to 4 bytes). pion allocates a little per datagram in
// both directions; TURN is the slow path, so glow accepts that.
//
// On the server, pion runs one goroutine per listening socket (requests
// and client data, in arrival order) and one per allocation (its relay
// socket, toward the client). Relay sockets come from turnRelays, which
// caps how many exist.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"

	"github.com/pion/logging"
)

var (
	// ErrTURNAuth means the TURN server refused the username or password.
	// pion/turn servers (glow's) answer both an unknown user and a wrong
	// password with 400 Bad Request; RFC 5766 servers answer 401.
	ErrTURNAuth = errors.New("TURN server refused the credentials")

	// ErrTURNCapacity means the TURN server has no allocation to spare
	// (486 Allocation Quota Reached or 508 Insufficient Capacity).
	ErrTURNCapacity = errors.New("TURN server has no allocation to spare")
)

// turnErrorCode extracts the STUN error code from a pion error, which
// carries it only in its text ("Allocate error response (error 400: Bad
// Request)"); 0 when there is none.
func turnErrorCode(err error) int {
	if err == nil {
		return 0
	}
	m := turnCodeRE.FindStringSubmatch(err.Error())
	if m == nil {
		return 0
	}
	code, _ := strconv.Atoi(m[1])
	return code
}

var turnCodeRE = regexp.MustCompile(`\(error ([1-6][0-9][0-9])\b`)

// udpAddr4 converts an IPv4 (or 4in6) address to what pion expects: a
// *net.UDPAddr with a 4-byte IP. pion/turn v2 relays IPv4 only.
func udpAddr4(ap netip.AddrPort) (*net.UDPAddr, error) {
	ip := ap.Addr().Unmap()
	if !ip.Is4() {
		return nil, fmt.Errorf("%v is not an IPv4 address (TURN through pion/turn v2 relays IPv4 only)", ap)
	}
	return &net.UDPAddr{IP: ip.AsSlice(), Port: int(ap.Port())}, nil
}

// addrPortOf converts a net.Addr from pion or a socket to a netip.AddrPort
// with IPv4 unmapped; the zero value when it has no IP and port.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case nil:
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// pionLogs adapts a glow Logf to pion's leveled logger. Only warnings and
// errors pass: pion logs at info or below for every datagram it drops,
// which a stranger can cause at line rate.
type pionLogs struct {
	logf   func(format string, args ...any)
	prefix string
}

func newPionLogs(logf func(string, ...any), prefix string) logging.LoggerFactory {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return pionLogs{logf: logf, prefix: prefix}
}

func (l pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogs{logf: l.logf, prefix: l.prefix + scope + ": "}
}

func (pionLogs) Trace(string)          {}
func (pionLogs) Tracef(string, ...any) {}
func (pionLogs) Debug(string)          {}
func (pionLogs) Debugf(string, ...any) {}
func (pionLogs) Info(string)           {}
func (pionLogs) Infof(string, ...any)  {}

func (l pionLogs) Warn(msg string)                  { l.logf("%swarning: %s", l.prefix, msg) }
func (l pionLogs) Warnf(format string, args ...any) { l.Warn(fmt.Sprintf(format, args...)) }
func (l pionLogs) Error(msg string)                 { l.logf("%serror: %s", l.prefix, msg) }
func (l pionLogs) Errorf(format string, args ...any) {
	l.Error(fmt.Sprintf(format, args...))
}
