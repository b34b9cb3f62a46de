package nat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun"
)

// Defaults for ClientConfig fields left zero.
const (
	DefaultInitialRTO = 200 * time.Millisecond
	DefaultAttempts   = 4
	DefaultTimeout    = 3 * time.Second

	// maxAttempts and maxServers bound the work one Probe can cause.
	maxAttempts = 10
	maxServers  = 64
)

// ErrNoResponse is returned (wrapped) for a server that did not answer any
// of the client's attempts before its timeout.
var ErrNoResponse = errors.New("nat: no STUN response")

// ServerError is a STUN error response (class 0x11) from a server.
type ServerError struct {
	Server netip.AddrPort
	Code   int // STUN error code, e.g. 400, 0 if the response carried none
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("nat: STUN server %v answered error %d", e.Server, e.Code)
}

// ClientConfig configures a Client. Only Send is required.
type ClientConfig struct {
	// Send writes one datagram to the node's shared UDP socket. It is
	// called from several goroutines at once (one per server), must not
	// block for long, and may keep b (every call gets a fresh slice).
	Send func(b []byte, to netip.AddrPort) error

	// Now returns the current time, for latencies. Nil means time.Now.
	// Retransmission timers are runtime timers, so tests that need fake
	// time run under testing/synctest.
	Now func() time.Time

	// InitialRTO is the wait after the first request; it doubles after
	// each retransmission (RFC 5389 section 7.2.1). Zero means
	// DefaultInitialRTO.
	InitialRTO time.Duration

	// Attempts is how many requests are sent to one server at most
	// (1..10). Zero means DefaultAttempts.
	Attempts int

	// Timeout bounds the probe of one server, retries included. Zero means
	// DefaultTimeout.
	Timeout time.Duration
}

// Client is a STUN client on a socket it does not own: requests go out
// through ClientConfig.Send, and the socket owner feeds every STUN datagram
// it receives to HandleResponse. A Client has no goroutine of its own; it is
// safe for concurrent use, including concurrent Probes.
type Client struct {
	cfg ClientConfig // immutable after NewClient

	mu      sync.Mutex                                // guards the following
	pending map[[stun.TransactionIDSize]byte]*attempt // live attempts by transaction ID
}

// attempt is one request in flight.
type attempt struct {
	server netip.AddrPort // unmapped
	sent   time.Time
	done   chan<- answer // buffered (1); written at most once without blocking
}

type answer struct {
	reflexive netip.AddrPort
	rtt       time.Duration
	err       error
}

// NewClient checks cfg, fills in defaults and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Send == nil {
		return nil, errors.New("nat: ClientConfig.Send is nil")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.InitialRTO == 0 {
		cfg.InitialRTO = DefaultInitialRTO
	}
	if cfg.Attempts == 0 {
		cfg.Attempts = DefaultAttempts
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	switch {
	case cfg.InitialRTO < 0:
		return nil, fmt.Errorf("nat: ClientConfig.InitialRTO %v is negative", cfg.InitialRTO)
	case cfg.Attempts < 0 || cfg.Attempts > maxAttempts:
		return nil, fmt.Errorf("nat: ClientConfig.Attempts %d is outside 1..%d", cfg.Attempts, maxAttempts)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("nat: ClientConfig.Timeout %v is negative", cfg.Timeout)
	}
	return &Client{cfg: cfg, pending: make(map[[stun.TransactionIDSize]byte]*attempt)}, nil
}

// HandleResponse takes a datagram the socket owner received from from. It
// returns true if b answered one of the client's live requests and came from
// the server that request went to; false means "not mine" and the caller
// should go on demultiplexing (or drop) b. It never blocks, never panics and
// does not keep b.
func (c *Client) HandleResponse(b []byte, from netip.AddrPort) bool {
	if !IsSTUN(b) {
		return false
	}
	txID, reflexive, isErr, code, ok := parseResponse(b)
	if !ok {
		return false
	}
	from = netip.AddrPortFrom(from.Addr().Unmap().WithZone(""), from.Port())
	now := c.cfg.Now()

	c.mu.Lock()
	a := c.pending[txID]
	if a == nil || a.server != from {
		c.mu.Unlock()
		return false
	}
	delete(c.pending, txID)
	c.mu.Unlock()

	ans := answer{reflexive: reflexive, rtt: now.Sub(a.sent)}
	if isErr {
		ans = answer{err: &ServerError{Server: from, Code: code}}
	}
	select {
	case a.done <- ans:
	default: // an earlier attempt of this probe already answered
	}
	return true
}

// Report is what one Probe learned.
type Report struct {
	// Servers holds one result per distinct server asked, in the order
	// given to Probe.
	Servers []ServerResult

	// Reflexive lists the distinct public endpoints that servers saw, in
	// server order. Behind an endpoint-independent NAT (or on a public
	// host) it has one entry per address family.
	Reflexive []netip.AddrPort

	// MappingVaries is true if two servers of one address family saw
	// different reflexive endpoints: the NAT maps each destination to its
	// own port ("hard" NAT, endpoint-dependent mapping), so the reflexive
	// endpoint is useless to other peers and hole punching needs the
	// other side to be easy, or a relay.
	MappingVaries bool

	// EndpointIndependent is true if at least two servers with different
	// IP addresses answered, all servers of each family saw the same
	// endpoint, and MappingVaries is false. False with MappingVaries false
	// means "not enough answers to tell".
	EndpointIndependent bool

	// ServerLatency is the round trip to each server that answered.
	ServerLatency map[netip.AddrPort]time.Duration
}

// ServerResult is the outcome for one server.
type ServerResult struct {
	Server    netip.AddrPort
	Reflexive netip.AddrPort // invalid if Err != nil
	Latency   time.Duration  // round trip of the answered attempt
	Err       error          // ErrNoResponse (wrapped), *ServerError, a Send error or ctx's error
}

// Probe sends Binding requests to all servers at once, retransmitting with
// exponential backoff until each answers, ClientConfig.Timeout passes or
// ctx is done, and waits for all of its goroutines before returning. It
// returns an error only if no server answered; the Report then still lists
// why each failed.
func (c *Client) Probe(ctx context.Context, servers []netip.AddrPort) (Report, error) {
	var rep Report
	seen := make(map[netip.AddrPort]bool, len(servers))
	var list []netip.AddrPort
	for _, s := range servers {
		s = netip.AddrPortFrom(s.Addr().Unmap().WithZone(""), s.Port())
		if !s.Addr().IsValid() || s.Port() == 0 {
			return rep, fmt.Errorf("nat: invalid STUN server address %v", s)
		}
		if !seen[s] {
			seen[s] = true
			list = append(list, s)
		}
	}
	if len(list) == 0 {
		return rep, errors.New("nat: no STUN servers to probe")
	}
	if len(list) > maxServers {
		return rep, fmt.Errorf("nat: %d STUN servers, at most %d per probe", len(list), maxServers)
	}

	rep.Servers = make([]ServerResult, len(list))
	var wg sync.WaitGroup
	for i, s := range list {
		wg.Go(func() { rep.Servers[i] = c.probeOne(ctx, s) })
	}
	wg.Wait()

	rep.ServerLatency = make(map[netip.AddrPort]time.Duration)
	var errs []error
	for _, r := range rep.Servers {
		if r.Err != nil {
			errs = append(errs, r.Err)
			continue
		}
		rep.ServerLatency[r.Server] = r.Latency
		if !containsAddrPort(rep.Reflexive, r.Reflexive) {
			rep.Reflexive = append(rep.Reflexive, r.Reflexive)
		}
	}
	rep.MappingVaries, rep.EndpointIndependent = mappingBehaviour(rep.Servers)
	if len(rep.ServerLatency) == 0 {
		return rep, fmt.Errorf("nat: no STUN server answered: %w", errors.Join(errs...))
	}
	return rep, nil
}

// mappingBehaviour interprets the answers per address family (RFC 4787
// section 4.1): different endpoints seen by two servers mean endpoint-
// dependent mapping; the same endpoint seen by servers on two different IPs
// means endpoint-independent mapping.
func mappingBehaviour(rs []ServerResult) (varies, independent bool) {
	type famState struct {
		first     netip.AddrPort
		firstIP   netip.Addr
		distinct  bool // answers from two different server IPs
		different bool // two different reflexive endpoints
	}
	var fams [2]famState // 0: IPv4 servers, 1: IPv6 servers
	for _, r := range rs {
		if r.Err != nil {
			continue
		}
		f := &fams[0]
		if r.Server.Addr().Is6() {
			f = &fams[1]
		}
		if !f.first.IsValid() {
			f.first, f.firstIP = r.Reflexive, r.Server.Addr()
			continue
		}
		if r.Reflexive != f.first {
			f.different = true
		}
		if r.Server.Addr() != f.firstIP {
			f.distinct = true
		}
	}
	for _, f := range fams {
		varies = varies || f.different
		independent = independent || f.distinct
	}
	return varies, independent && !varies
}

func (c *Client) probeOne(ctx context.Context, server netip.AddrPort) ServerResult {
	res := ServerResult{Server: server}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	done := make(chan answer, 1)
	var ids [][stun.TransactionIDSize]byte
	defer func() {
		c.mu.Lock()
		for _, id := range ids {
			delete(c.pending, id)
		}
		c.mu.Unlock()
	}()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	rto := c.cfg.InitialRTO
	var sendErr error
	for range c.cfg.Attempts {
		id, req, err := newBindingRequest()
		if err != nil {
			res.Err = fmt.Errorf("nat: building STUN request: %w", err)
			return res
		}
		c.mu.Lock()
		c.pending[id] = &attempt{server: server, sent: c.cfg.Now(), done: done}
		c.mu.Unlock()
		ids = append(ids, id)
		if err := c.cfg.Send(req, server); err != nil {
			sendErr = fmt.Errorf("nat: sending STUN request to %v: %w", server, err)
		}

		timer.Reset(rto)
		select {
		case a := <-done:
			if a.err != nil {
				res.Err = a.err
				return res
			}
			res.Reflexive, res.Latency = a.reflexive, a.rtt
			return res
		case <-ctx.Done():
			res.Err = noResponse(server, ctx.Err(), sendErr)
			return res
		case <-timer.C:
		}
		rto *= 2
	}
	res.Err = noResponse(server, nil, sendErr)
	return res
}

func noResponse(server netip.AddrPort, ctxErr, sendErr error) error {
	if ctxErr != nil && !errors.Is(ctxErr, context.DeadlineExceeded) {
		// The caller cancelled: say so rather than blame the server.
		return fmt.Errorf("nat: probing %v: %w", server, ctxErr)
	}
	if sendErr != nil {
		return fmt.Errorf("%w from %v (last send error: %w)", ErrNoResponse, server, sendErr)
	}
	return fmt.Errorf("%w from %v", ErrNoResponse, server)
}

func containsAddrPort(list []netip.AddrPort, a netip.AddrPort) bool {
	for _, b := range list {
		if a == b {
			return true
		}
	}
	return false
}
