package relay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun"
	"github.com/pion/turn/v2"

	"glow/internal/underlay"
)

// TURNClientConfig configures DialTURN. Server (or ServerName), Username
// and Password are required.
type TURNClientConfig struct {
	// Server is the TURN server's UDP address; IPv4 only (pion/turn v2).
	Server netip.AddrPort
	// ServerName, used when Server is the zero value, is "host:port" for
	// DialTURN to look up (A records). ParseTURNURL fills it for names.
	ServerName string

	// Long-term credentials (RFC 5389 section 10.2). Realm is optional:
	// the server announces its realm and that is the one used; a Realm
	// set here that differs is only logged.
	Username, Password, Realm string

	// Conn is the UDP socket to talk to the server from. Nil means a new
	// socket on an ephemeral port, closed by Close. A Conn passed in is
	// read by the TURNClient alone until Close, which interrupts that read
	// with a read deadline and leaves the socket open. Datagrams on it
	// from anyone but the server are dropped (and counted), so that no
	// one can inject relayed data by forging Data indications.
	Conn net.PacketConn

	// Logf receives pion's warnings and errors and the client's own. Nil
	// discards them.
	Logf func(format string, args ...any)
}

// TURNClient holds one UDP allocation (a relayed address) on a TURN
// server and sends and receives datagrams through it. Methods are safe for
// concurrent use. pion refreshes the allocation (every half lifetime),
// permissions (every 2 minutes) and channel bindings while it is open.
type TURNClient struct {
	// Immutable after DialTURN.
	cfg     TURNClientConfig
	server  netip.AddrPort
	conn    net.PacketConn
	ownConn bool
	client  *turn.Client
	relayed netip.AddrPort
	stop    chan struct{} // closed by Close: ends refreshLoop
	wg      sync.WaitGroup

	closed  atomic.Bool   // Close has begun
	strays  atomic.Uint64 // datagrams on conn not from the server
	readErr atomic.Pointer[error]

	// mu guards the following. Never held while waiting on the network.
	mu      sync.Mutex
	permits map[netip.Addr]struct{} // peers SetPermits keeps, refreshed by refreshLoop
	// alloc is written once, under mu, before DialTURN returns; readLoop
	// reads it under mu, everyone else after DialTURN without.
	alloc net.PacketConn // pion's relayed conn
}

// turnReleaseTimeout bounds how long Close waits for the server to confirm
// that the allocation is gone.
const turnReleaseTimeout = 2 * time.Second

// turnPermitRefresh is how often Permit's permissions are renewed; the
// server keeps one for 5 minutes (RFC 5766 section 8).
const turnPermitRefresh = 2 * time.Minute

// DialTURN allocates a relayed address on the TURN server in cfg. It
// returns when the allocation is made, or fails with ctx, with an error
// that wraps ErrTURNAuth or ErrTURNCapacity when the server said so, or
// with pion's error when the server did not answer (after about 8 s).
func DialTURN(ctx context.Context, cfg TURNClientConfig) (*TURNClient, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	switch {
	case cfg.Username == "":
		return nil, errors.New("relay: TURNClientConfig.Username is empty")
	case cfg.Password == "":
		return nil, errors.New("relay: TURNClientConfig.Password is empty")
	}
	server := cfg.Server
	if !server.IsValid() {
		if cfg.ServerName == "" {
			return nil, errors.New("relay: TURNClientConfig.Server and ServerName are both empty")
		}
		var err error
		if server, err = lookupTURN(ctx, cfg.ServerName); err != nil {
			return nil, err
		}
	}
	serverUDP, err := udpAddr4(server)
	if err != nil {
		return nil, fmt.Errorf("relay: TURNClientConfig.Server: %w", err)
	}
	server = addrPortOf(serverUDP)

	c := &TURNClient{
		cfg:     cfg,
		server:  server,
		conn:    cfg.Conn,
		stop:    make(chan struct{}),
		permits: map[netip.Addr]struct{}{},
	}
	if c.conn == nil {
		lc := net.ListenConfig{Control: underlay.Control}
		if c.conn, err = lc.ListenPacket(context.Background(), "udp4", ":0"); err != nil {
			return nil, fmt.Errorf("relay: TURN client socket: %w", err)
		}
		c.ownConn = true
	}
	c.client, err = turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: server.String(),
		Username:       cfg.Username,
		Password:       cfg.Password,
		Realm:          cfg.Realm,
		Software:       "glow",
		Conn:           c.conn,
		LoggerFactory:  newPionLogs(cfg.Logf, "relay: turn client: "),
	})
	if err != nil {
		c.stopReading()
		return nil, fmt.Errorf("relay: TURN client: %w", err)
	}
	c.wg.Add(1)
	go c.readLoop()

	// pion's Allocate takes no context: run it aside, and on ctx's end
	// close the client's transactions, which makes Allocate return.
	type result struct {
		conn net.PacketConn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := c.client.Allocate()
		done <- result{conn, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		// Allocate may be between its two transactions when the first
		// Close lands, so close until it returns.
		for closing := true; closing; {
			c.client.Close()
			select {
			case res = <-done:
				closing = false
			case <-time.After(20 * time.Millisecond):
			}
		}
		if res.err == nil {
			res.conn.Close()
		}
		res.err = ctx.Err()
	}
	if res.err != nil {
		c.client.Close()
		c.stopReading()
		return nil, c.dialError(res.err)
	}
	c.mu.Lock()
	c.alloc = res.conn
	c.mu.Unlock()
	c.relayed = addrPortOf(res.conn.LocalAddr())
	if p := c.readErr.Load(); p != nil {
		c.Close()
		return nil, fmt.Errorf("relay: TURN allocation on %v: reading the socket: %w", server, *p)
	}
	if got := c.client.Realm().String(); cfg.Realm != "" && got != cfg.Realm {
		cfg.Logf("relay: TURN server %v announces realm %q, config says %q; using the server's", server, got, cfg.Realm)
	}
	c.wg.Add(1)
	go c.refreshLoop()
	return c, nil
}

func (c *TURNClient) dialError(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("relay: TURN allocation on %v: %w", c.server, err)
	}
	switch code := turnErrorCode(err); code {
	case 400, 401:
		return fmt.Errorf("relay: TURN server %v refused user %q (wrong username or password?): %w (%v)", c.server, c.cfg.Username, ErrTURNAuth, err)
	case 486, 508:
		return fmt.Errorf("relay: TURN server %v: %w (%v)", c.server, ErrTURNCapacity, err)
	}
	if p := c.readErr.Load(); p != nil {
		return fmt.Errorf("relay: TURN allocation on %v: reading the socket: %w", c.server, *p)
	}
	return fmt.Errorf("relay: TURN allocation on %v: %w", c.server, err)
}

func lookupTURN(ctx context.Context, hostport string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("relay: TURNClientConfig.ServerName %q: %w", hostport, err)
	}
	port, err := net.LookupPort("udp", portStr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("relay: TURNClientConfig.ServerName %q: %w", hostport, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("relay: TURNClientConfig.ServerName %q: %w", hostport, err)
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("relay: TURNClientConfig.ServerName %q has no IPv4 address", hostport)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(port)), nil
}

// RelayedAddr is the allocation: the address on the TURN server where
// peers send datagrams for this client.
func (c *TURNClient) RelayedAddr() netip.AddrPort { return c.relayed }

// Server is the TURN server's address.
func (c *TURNClient) Server() netip.AddrPort { return c.server }

// Strays counts datagrams that arrived on the client's socket from
// anyone but the server, and were dropped.
func (c *TURNClient) Strays() uint64 { return c.strays.Load() }

// ReadFrom waits for a datagram relayed to RelayedAddr and copies it into
// b; from is the peer that sent it. A datagram longer than b is dropped and
// reported as io.ErrShortBuffer; 64 KiB never is. After Close it returns
// net.ErrClosed.
func (c *TURNClient) ReadFrom(b []byte) (n int, from netip.AddrPort, err error) {
	n, addr, err := c.alloc.ReadFrom(b)
	if err != nil {
		if c.closed.Load() {
			return 0, netip.AddrPort{}, net.ErrClosed
		}
		if p := c.readErr.Load(); p != nil {
			return 0, netip.AddrPort{}, fmt.Errorf("relay: TURN client socket: %w", *p)
		}
		return 0, netip.AddrPort{}, err
	}
	return n, addrPortOf(addr), nil
}

// SetReadDeadline makes a blocked and future ReadFrom return a timeout
// error (net.Error with Timeout true) at t; the zero t means no deadline.
func (c *TURNClient) SetReadDeadline(t time.Time) error { return c.alloc.SetReadDeadline(t) }

// WriteTo sends b from RelayedAddr to the IPv4 peer to. The first datagram
// to a new peer IP blocks until the server grants a permission for it (one
// round trip; up to about 8 s if the server is silent), so it is not lost;
// the error then says the server refused or did not answer. Later
// datagrams to that IP are sent at once. Through a glow (pion) TURN
// server, b may be up to 1500 bytes. After Close it returns net.ErrClosed.
func (c *TURNClient) WriteTo(b []byte, to netip.AddrPort) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	ua, err := udpAddr4(to)
	if err != nil {
		return fmt.Errorf("relay: TURN send: %w", err)
	}
	if _, err := c.alloc.WriteTo(b, ua); err != nil {
		if c.closed.Load() {
			return net.ErrClosed
		}
		return fmt.Errorf("relay: TURN send to %v via %v: %w", to, c.server, err)
	}
	return nil
}

// Permit asks the server to accept datagrams from these peer IPs on
// RelayedAddr before this client has sent them anything (TURN permissions
// are per IP, ports ignored), and keeps the permissions alive until Close.
// It returns when the server has granted them. A peer the client writes to
// is permitted by WriteTo anyway; Permit is for peers expected to speak
// first, and for the other side of a TURN-to-TURN path.
func (c *TURNClient) Permit(peers ...netip.Addr) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	for i, p := range peers {
		if peers[i] = p.Unmap(); !peers[i].Is4() {
			return fmt.Errorf("relay: TURN permit %v: IPv4 only", p)
		}
	}
	if err := c.createPermissions(peers); err != nil {
		return fmt.Errorf("relay: TURN server %v refused a permission for %v: %w", c.server, peers, err)
	}
	c.mu.Lock()
	for _, p := range peers {
		if len(c.permits) < MaxPermits {
			c.permits[p] = struct{}{}
		}
	}
	c.mu.Unlock()
	return nil
}

// SetPermits makes peers the set of IPs the client keeps permitted: the
// new ones are granted before it returns, and from then on refreshLoop
// renews these and no others, so a permission left out lapses at the
// server within its 5 minutes. At most MaxPermits are kept (the first
// ones given); requests carry at most permitBatch addresses each.
func (c *TURNClient) SetPermits(peers []netip.Addr) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	want := make(map[netip.Addr]struct{}, min(len(peers), MaxPermits))
	var fresh []netip.Addr
	c.mu.Lock()
	for _, p := range peers {
		p = p.Unmap()
		if _, dup := want[p]; dup || len(want) == MaxPermits {
			continue
		}
		if !p.Is4() {
			c.mu.Unlock()
			return fmt.Errorf("relay: TURN permit %v: IPv4 only", p)
		}
		want[p] = struct{}{}
		if _, ok := c.permits[p]; !ok {
			fresh = append(fresh, p)
		}
	}
	c.mu.Unlock()
	if err := c.createPermissions(fresh); err != nil {
		return fmt.Errorf("relay: TURN server %v refused a permission for %v: %w", c.server, fresh, err)
	}
	c.mu.Lock()
	c.permits = want
	c.mu.Unlock()
	return nil
}

// Permits is the number of IPs the client keeps permitted.
func (c *TURNClient) Permits() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.permits)
}

// Permitted reports whether the client keeps ip permitted.
func (c *TURNClient) Permitted(ip netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.permits[ip.Unmap()]
	return ok
}

// MaxPermits bounds the IPs a client keeps permitted (SetPermits), and
// permitBatch the addresses in one CreatePermission (12 bytes each: 64
// keep a request near 900 bytes, inside any path's MTU).
const (
	MaxPermits  = 1024
	permitBatch = 64
)

// createPermissions grants peers in requests of at most permitBatch.
func (c *TURNClient) createPermissions(peers []netip.Addr) error {
	for b := range slices.Chunk(peers, permitBatch) {
		addrs := make([]net.Addr, len(b))
		for i, p := range b {
			addrs[i] = &net.UDPAddr{IP: p.AsSlice()}
		}
		if err := c.createPermission(addrs); err != nil {
			return err
		}
	}
	return nil
}

// createPermission sends one CreatePermission and waits for the answer,
// retrying when the server replaced its nonce (438 Stale Nonce, which pion
// reports after learning the new nonce).
func (c *TURNClient) createPermission(addrs []net.Addr) error {
	var err error
	for range 3 {
		if err = c.client.CreatePermission(addrs...); err == nil || c.closed.Load() {
			break
		}
	}
	if c.closed.Load() {
		return net.ErrClosed
	}
	return err
}

// refreshLoop renews Permit's permissions until Close.
func (c *TURNClient) refreshLoop() {
	defer c.wg.Done()
	t := time.NewTicker(turnPermitRefresh)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		peers := slices.Collect(maps.Keys(c.permits))
		c.mu.Unlock()
		if err := c.createPermissions(peers); err != nil && !errors.Is(err, net.ErrClosed) {
			c.cfg.Logf("relay: TURN server %v: renewing %d permissions: %v", c.server, len(peers), err)
		}
	}
}

// readLoop feeds pion with what the server sends, until the socket fails
// or Close interrupts it.
func (c *TURNClient) readLoop() {
	defer c.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.conn.ReadFrom(buf)
		if err != nil {
			if c.closed.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // someone else's deadline on a shared Conn
			}
			c.readErr.Store(&err)
			c.cfg.Logf("relay: TURN client socket for %v failed: %v", c.server, err)
			c.client.Close() // fail what waits on the server
			c.mu.Lock()
			alloc := c.alloc
			c.mu.Unlock()
			if alloc != nil {
				alloc.Close() // wake ReadFrom
			}
			return
		}
		if addrPortOf(from) != c.server {
			c.strays.Add(1)
			continue
		}
		// Errors are malformed or unexpected messages; drop them and go on
		// (pion's own Listen loop would stop at the first).
		c.client.HandleInbound(buf[:n], from)
	}
}

// stopReading ends readLoop and waits for the client's goroutines; the
// socket is closed if the client made it.
func (c *TURNClient) stopReading() {
	c.closed.Store(true)
	if c.ownConn {
		c.conn.Close()
	} else {
		c.conn.SetReadDeadline(time.Unix(1, 0))
	}
	c.wg.Wait()
	if !c.ownConn {
		c.conn.SetReadDeadline(time.Time{})
	}
}

// Close releases the allocation and waits (up to 2 s) for the server to
// confirm; the error says if it did not, in which case the server frees
// the allocation when its lifetime ends (10 minutes). It then stops the
// client's goroutines and closes the socket if DialTURN made it. A blocked
// ReadFrom returns net.ErrClosed.
func (c *TURNClient) Close() error {
	if c.closed.Swap(true) {
		return net.ErrClosed
	}
	close(c.stop)
	// pion's Close stops its refresh timers, wakes ReadFrom and sends a
	// Refresh with lifetime 0 without waiting for the answer; release
	// sends one more and waits, so a lost datagram or a stale nonce does
	// not leave the allocation behind.
	c.alloc.Close()
	done := make(chan error, 1)
	go func() { done <- c.release() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(turnReleaseTimeout):
		c.client.Close() // ends release's transaction
		err = <-done
	}
	c.client.Close()
	c.stopReading()
	if err != nil {
		return fmt.Errorf("relay: TURN server %v did not confirm the release of %v: %w", c.server, c.relayed, err)
	}
	return nil
}

// release deletes the allocation with a Refresh of lifetime 0 (RFC 5766
// section 7): first unauthenticated, to learn a fresh nonce from the 401,
// then signed.
func (c *TURNClient) release() error {
	zero := stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}
	refresh := stun.NewType(stun.MethodRefresh, stun.ClassRequest)
	msg, err := stun.Build(stun.TransactionID, refresh, zero, stun.Fingerprint)
	if err != nil {
		return err
	}
	res, err := c.client.PerformTransaction(msg, &net.UDPAddr{IP: c.server.Addr().AsSlice(), Port: int(c.server.Port())}, false)
	if err != nil {
		return err
	}
	var nonce stun.Nonce
	var realm stun.Realm
	if err := nonce.GetFrom(res.Msg); err != nil {
		return fmt.Errorf("no nonce in %v: %w", res.Msg.Type, err)
	}
	if err := realm.GetFrom(res.Msg); err != nil {
		return fmt.Errorf("no realm in %v: %w", res.Msg.Type, err)
	}
	msg, err = stun.Build(stun.TransactionID, refresh, zero,
		stun.NewUsername(c.cfg.Username), realm, nonce,
		stun.NewLongTermIntegrity(c.cfg.Username, realm.String(), c.cfg.Password),
		stun.Fingerprint)
	if err != nil {
		return err
	}
	res, err = c.client.PerformTransaction(msg, &net.UDPAddr{IP: c.server.Addr().AsSlice(), Port: int(c.server.Port())}, false)
	if err != nil {
		return err
	}
	if res.Msg.Type.Class != stun.ClassSuccessResponse {
		var code stun.ErrorCodeAttribute
		if code.GetFrom(res.Msg) == nil {
			return fmt.Errorf("%v (%v)", res.Msg.Type, code)
		}
		return fmt.Errorf("%v", res.Msg.Type)
	}
	return nil
}
