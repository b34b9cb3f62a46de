package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/pion/turn/v2"
)

// DefaultMaxTURNAllocations bounds a TURNServer's allocations (relay
// sockets) when TURNServerConfig.MaxAllocations is 0.
const DefaultMaxTURNAllocations = 256

// TURNServerConfig configures ListenTURN. PacketConn, PublicIP and Users
// are required.
type TURNServerConfig struct {
	// PacketConn is the UDP socket clients talk to. The TURNServer owns it
	// from ListenTURN on and closes it on Close.
	PacketConn net.PacketConn

	// PublicIP is the IPv4 address peers reach relay sockets at, which is
	// what clients are handed as their relayed address.
	PublicIP netip.Addr

	// Realm of the long-term credentials; empty means "glow".
	Realm string

	// Users maps user names to passwords (long-term credentials, RFC 5389
	// section 10.2). Copied by ListenTURN.
	Users map[string]string

	// ListenRelay opens the relay socket of one allocation on port (0: any
	// port). Nil means a UDP socket on PublicIP:port; set it when PublicIP
	// is not on a local interface (a cloud VM's public IP: listen on
	// 0.0.0.0) or to put the server in a virtual network (natlab).
	ListenRelay func(port uint16) (net.PacketConn, error)

	// MaxAllocations caps the allocations alive at once, over all users;
	// an Allocate beyond it gets 508 Insufficient Capacity. 0 means
	// DefaultMaxTURNAllocations. (pion/turn v2 has no quotas of its own
	// and does not tell the relay socket's maker which user asks, so the
	// cap is not per user.)
	MaxAllocations int

	// PermitPeer decides whether a client may install a permission (and
	// so exchange datagrams) for peer. Nil means DefaultTURNPermitPeer.
	PermitPeer func(peer netip.Addr) bool

	// Logf receives pion's warnings and errors. Nil discards them.
	Logf func(format string, args ...any)
}

// DefaultTURNPermitPeer returns the peer filter a TURNServer uses when its
// config has none: it refuses addresses a relay must never reach on its
// own host's behalf, as coturn does by default: unspecified, multicast,
// broadcast, link-local (169.254.169.254 is a cloud metadata service) and,
// unless publicIP is itself loopback (a test), loopback.
func DefaultTURNPermitPeer(publicIP netip.Addr) func(peer netip.Addr) bool {
	lab := publicIP.Unmap().IsLoopback()
	broadcast := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	return func(peer netip.Addr) bool {
		peer = peer.Unmap()
		switch {
		case !peer.IsValid(), peer.IsUnspecified(), peer.IsMulticast(), peer == broadcast,
			peer.IsLinkLocalUnicast(), peer.IsLinkLocalMulticast(), peer.IsInterfaceLocalMulticast():
			return false
		case peer.IsLoopback():
			return lab
		}
		return true
	}
}

// TURNServer is a TURN server (UDP, IPv4 relays) for the users in its
// config. Its methods are safe for concurrent use.
type TURNServer struct {
	// Immutable after ListenTURN.
	addr   netip.AddrPort
	server *turn.Server
	relays *turnRelays
}

// ListenTURN starts a TURN server on cfg.PacketConn. On error, PacketConn
// is left open.
func ListenTURN(cfg TURNServerConfig) (*TURNServer, error) {
	switch {
	case cfg.PacketConn == nil:
		return nil, errors.New("relay: TURNServerConfig.PacketConn is nil")
	case !cfg.PublicIP.Unmap().Is4():
		return nil, fmt.Errorf("relay: TURNServerConfig.PublicIP %v is not an IPv4 address (pion/turn v2 relays IPv4 only)", cfg.PublicIP)
	case len(cfg.Users) == 0:
		return nil, errors.New("relay: TURNServerConfig.Users is empty; no one could allocate")
	case cfg.MaxAllocations < 0:
		return nil, fmt.Errorf("relay: TURNServerConfig.MaxAllocations %d is negative", cfg.MaxAllocations)
	}
	public := cfg.PublicIP.Unmap()
	if cfg.Realm == "" {
		cfg.Realm = "glow"
	}
	keys := make(map[string][]byte, len(cfg.Users))
	for user, pass := range cfg.Users {
		if user == "" || pass == "" {
			return nil, fmt.Errorf("relay: TURNServerConfig.Users: user %q has an empty name or password", user)
		}
		keys[user] = turn.GenerateAuthKey(user, cfg.Realm, pass)
	}
	if cfg.MaxAllocations == 0 {
		cfg.MaxAllocations = DefaultMaxTURNAllocations
	}
	if cfg.PermitPeer == nil {
		cfg.PermitPeer = DefaultTURNPermitPeer(public)
	}
	relays := &turnRelays{public: public, listen: cfg.ListenRelay, max: cfg.MaxAllocations}
	if relays.listen == nil {
		relays.listen = func(port uint16) (net.PacketConn, error) {
			return net.ListenPacket("udp4", netip.AddrPortFrom(public, port).String())
		}
	}
	permit := cfg.PermitPeer
	s, err := turn.NewServer(turn.ServerConfig{
		Realm:         cfg.Realm,
		LoggerFactory: newPionLogs(cfg.Logf, "relay: turn server: "),
		AuthHandler: func(user, realm string, _ net.Addr) ([]byte, bool) {
			key, ok := keys[user]
			return key, ok && realm == cfg.Realm
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            cfg.PacketConn,
			RelayAddressGenerator: relays,
			PermissionHandler: func(_ net.Addr, peer net.IP) bool {
				ip, ok := netip.AddrFromSlice(peer)
				return ok && permit(ip)
			},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("relay: TURN server: %w", err)
	}
	return &TURNServer{addr: addrPortOf(cfg.PacketConn.LocalAddr()), server: s, relays: relays}, nil
}

// Addr is the address the server listens on (PacketConn's).
func (s *TURNServer) Addr() netip.AddrPort { return s.addr }

// AllocationCount is the number of allocations alive.
func (s *TURNServer) AllocationCount() int { return s.server.AllocationCount() }

// Close stops the server: it closes PacketConn and every allocation's
// relay socket, and waits (up to 2 s) for the relay sockets to be closed.
// Clients find out when their next refresh goes unanswered.
func (s *TURNServer) Close() error {
	err := s.server.Close()
	if !s.relays.waitIdle(2 * time.Second) {
		err = errors.Join(err, errors.New("relay sockets still open after 2 s"))
	}
	if err != nil {
		return fmt.Errorf("relay: TURN server close: %w", err)
	}
	return nil
}

// turnRelays is the server's turn.RelayAddressGenerator: it opens relay
// sockets through listen, hands out PublicIP with the socket's port, and
// counts open sockets against max.
type turnRelays struct {
	public netip.Addr
	listen func(port uint16) (net.PacketConn, error)
	max    int

	mu   sync.Mutex // guards the following
	open int
	idle chan struct{} // closed when open reaches 0, if someone waits
}

var errTURNFull = errors.New("relay: TURN server: allocation cap reached")

// Validate is part of turn.RelayAddressGenerator.
func (r *turnRelays) Validate() error { return nil }

// AllocatePacketConn is part of turn.RelayAddressGenerator.
func (r *turnRelays) AllocatePacketConn(network string, port int) (net.PacketConn, net.Addr, error) {
	if network != "udp4" || port < 0 || port > 65535 {
		return nil, nil, fmt.Errorf("relay: TURN server: cannot relay %s port %d", network, port)
	}
	r.mu.Lock()
	if r.open >= r.max {
		r.mu.Unlock()
		return nil, nil, errTURNFull
	}
	r.open++
	r.mu.Unlock()
	pc, err := r.listen(uint16(port))
	if err != nil {
		r.release()
		return nil, nil, fmt.Errorf("relay: TURN server: relay socket: %w", err)
	}
	local := addrPortOf(pc.LocalAddr())
	if local.Port() == 0 {
		if _, p, err := net.SplitHostPort(pc.LocalAddr().String()); err == nil {
			n, _ := strconv.ParseUint(p, 10, 16)
			local = netip.AddrPortFrom(local.Addr(), uint16(n))
		}
	}
	return &turnRelayConn{PacketConn: pc, r: r}, &net.UDPAddr{IP: r.public.AsSlice(), Port: int(local.Port())}, nil
}

// AllocateConn is part of turn.RelayAddressGenerator; glow relays UDP only.
func (r *turnRelays) AllocateConn(network string, port int) (net.Conn, net.Addr, error) {
	return nil, nil, errors.New("relay: TURN server: TCP relays are not supported")
}

func (r *turnRelays) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.open--
	if r.open == 0 && r.idle != nil {
		close(r.idle)
		r.idle = nil
	}
}

// waitIdle waits until no relay socket is open, or d passes.
func (r *turnRelays) waitIdle(d time.Duration) bool {
	r.mu.Lock()
	if r.open == 0 {
		r.mu.Unlock()
		return true
	}
	if r.idle == nil {
		r.idle = make(chan struct{})
	}
	idle := r.idle
	r.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}

// turnRelayConn is a relay socket that gives its slot back on Close.
type turnRelayConn struct {
	net.PacketConn
	r    *turnRelays
	once sync.Once
}

func (c *turnRelayConn) Close() error {
	err := c.PacketConn.Close()
	c.once.Do(c.r.release)
	return err
}
