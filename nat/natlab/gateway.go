package natlab

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Mapping is a NAT's mapping behaviour (RFC 4787 section 4.1): which
// outbound flows from one internal endpoint share one external port.
type Mapping uint8

const (
	// EndpointIndependent mapping reuses the external port for every
	// destination ("easy" NAT; Linux MASQUERADE).
	EndpointIndependent Mapping = iota
	// AddressDependent mapping gives each destination IP its own port.
	AddressDependent
	// AddressAndPortDependent mapping gives each destination IP and port
	// its own port ("hard" NAT; MASQUERADE --random-fully).
	AddressAndPortDependent
)

func (m Mapping) String() string {
	switch m {
	case EndpointIndependent:
		return "EIM"
	case AddressDependent:
		return "ADM"
	case AddressAndPortDependent:
		return "APDM"
	}
	return fmt.Sprintf("Mapping(%d)", uint8(m))
}

// Filtering is a NAT's or firewall's filtering behaviour (RFC 4787 section
// 5): which inbound packets to an existing mapping pass.
type Filtering uint8

const (
	// EndpointIndependentFiltering passes anything sent to a live mapping
	// ("full cone").
	EndpointIndependentFiltering Filtering = iota
	// AddressDependentFiltering passes packets from an IP the internal
	// endpoint has sent to ("restricted cone").
	AddressDependentFiltering
	// AddressAndPortDependentFiltering passes packets only from an IP and
	// port the internal endpoint has sent to ("port-restricted cone"; what
	// a stateful firewall does).
	AddressAndPortDependentFiltering
)

func (f Filtering) String() string {
	switch f {
	case EndpointIndependentFiltering:
		return "EIF"
	case AddressDependentFiltering:
		return "ADF"
	case AddressAndPortDependentFiltering:
		return "APDF"
	}
	return fmt.Sprintf("Filtering(%d)", uint8(f))
}

// Short aliases matching RFC 4787's "restricted" wording.
const (
	AddressRestricted        = AddressDependentFiltering
	AddressAndPortRestricted = AddressAndPortDependentFiltering
)

// DefaultTimeout is the mapping timeout when a config leaves it zero: the
// Linux conntrack default for UDP.
const DefaultTimeout = 30 * time.Second

// NATConfig configures a NAT gateway.
type NATConfig struct {
	Public    netip.Addr // the gateway's address on its upstream network
	Mapping   Mapping
	Filtering Filtering

	// Timeout is how long a mapping (and each filter permission) lives
	// after the last outbound packet that used it (RFC 4787 REQ-6:
	// inbound packets do not refresh it). Zero means DefaultTimeout.
	Timeout time.Duration

	// PortPreservation makes the NAT use the internal port as the external
	// port when it is free.
	PortPreservation bool

	// Hairpinning lets a host reach another host behind the same NAT at
	// its external endpoint (RFC 4787 REQ-9). Off by default, as on many
	// home routers; such packets are dropped and counted.
	Hairpinning bool
}

// FirewallConfig configures a stateful firewall: hosts behind it have
// public addresses, and only replies to their own traffic come in.
type FirewallConfig struct {
	// Filtering decides what counts as a reply. The zero value is
	// EndpointIndependentFiltering; a typical firewall is
	// AddressAndPortDependentFiltering.
	Filtering Filtering
	Timeout   time.Duration // zero means DefaultTimeout
}

// Gateway is a NAT or a stateful firewall between a LAN and its upstream
// network. It is safe for concurrent use.
type Gateway struct {
	in        *Internet
	parent    *segment
	lan       *segment
	public    netip.Addr // NAT only
	translate bool       // false for a firewall
	mapping   Mapping
	filtering Filtering
	timeout   time.Duration
	preserve  bool
	hairpin   bool
	name      string

	outForwarded    atomic.Uint64
	inForwarded     atomic.Uint64
	droppedFilter   atomic.Uint64
	droppedNoMap    atomic.Uint64
	droppedHairpin  atomic.Uint64
	droppedNoPort   atomic.Uint64
	mappingsCreated atomic.Uint64
	mappingsExpired atomic.Uint64

	mu    sync.Mutex // guards the following
	byKey map[mapKey]*mapping
	byExt map[netip.AddrPort]*mapping
	rng   *rand.Rand
}

// GatewayStats counts what a gateway did.
type GatewayStats struct {
	OutForwarded     uint64 // LAN to upstream
	InForwarded      uint64 // upstream to LAN
	DroppedFilter    uint64 // a mapping exists but filtering refused the sender
	DroppedNoMapping uint64 // unsolicited: no live mapping for the destination
	DroppedHairpin   uint64 // LAN to own public address with Hairpinning off
	DroppedNoPort    uint64 // no external port left
	MappingsCreated  uint64
	MappingsExpired  uint64 // expired by timeout (Flush not included)
	Mappings         int    // live now
}

// mapKey identifies a mapping: the internal endpoint plus as much of the
// remote endpoint as the Mapping behaviour distinguishes.
type mapKey struct {
	internal netip.AddrPort
	remote   netip.AddrPort // zero for EIM; port 0 for ADM
}

// mapping is one NAT binding (or one firewall flow set).
type mapping struct {
	key      mapKey
	internal netip.AddrPort
	external netip.AddrPort
	static   bool                         // a port forward: never expires, filters nothing
	perms    map[netip.AddrPort]time.Time // remote endpoint -> last outbound to it
	lastOut  time.Time
}

func (s *segment) newGateway(name string) *Gateway {
	g := &Gateway{
		in:     s.in,
		parent: s,
		name:   name,
		byKey:  make(map[mapKey]*mapping),
		byExt:  make(map[netip.AddrPort]*mapping),
	}
	g.lan = &segment{in: s.in, name: "lan of " + name, gw: g, nodes: make(map[netip.Addr]node)}
	return g
}

func (s *segment) newNAT(cfg NATConfig) *Gateway {
	if cfg.Mapping > AddressAndPortDependent || cfg.Filtering > AddressAndPortDependentFiltering || cfg.Timeout < 0 {
		panic(fmt.Sprintf("natlab: invalid NATConfig %+v", cfg))
	}
	g := s.newGateway("nat " + cfg.Public.String())
	g.public = cfg.Public
	g.translate = true
	g.mapping, g.filtering = cfg.Mapping, cfg.Filtering
	g.timeout = cmp0(cfg.Timeout, DefaultTimeout)
	g.preserve, g.hairpin = cfg.PortPreservation, cfg.Hairpinning
	b := cfg.Public.As16()
	seed := s.in.cfg.Seed
	for _, x := range b {
		seed = seed*131 + uint64(x)
	}
	g.rng = rand.New(rand.NewPCG(seed, 0x706f727473))
	s.attach(cfg.Public, g)
	return g
}

func (s *segment) newFirewall(cfg FirewallConfig) *Gateway {
	if cfg.Filtering > AddressAndPortDependentFiltering || cfg.Timeout < 0 {
		panic(fmt.Sprintf("natlab: invalid FirewallConfig %+v", cfg))
	}
	s.mu.Lock()
	n := len(s.nodes)
	s.mu.Unlock()
	g := s.newGateway(fmt.Sprintf("firewall %d on %s", n, s.name))
	g.filtering = cfg.Filtering
	g.timeout = cmp0(cfg.Timeout, DefaultTimeout)
	return g
}

func cmp0(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// NewHost attaches a host with address ip to the gateway's LAN. Behind a
// NAT, ip is private to the LAN; behind a firewall it is a public address
// that the upstream network routes to the firewall. It panics if ip is
// invalid or taken.
func (g *Gateway) NewHost(ip netip.Addr) *Host {
	h := g.lan.newHost(ip)
	if !g.translate {
		g.parent.attach(ip, g)
	}
	return h
}

// NewNAT attaches a NAT whose public address cfg.Public is on this
// gateway's LAN: a home router behind a carrier-grade NAT.
func (g *Gateway) NewNAT(cfg NATConfig) *Gateway { return g.lan.newNAT(cfg) }

// NewFirewall attaches a stateful firewall to this gateway's LAN.
func (g *Gateway) NewFirewall(cfg FirewallConfig) *Gateway { return g.lan.newFirewall(cfg) }

// Public returns the NAT's public address (invalid for a firewall).
func (g *Gateway) Public() netip.Addr { return g.public }

// Forward adds a static port forward from the NAT's public address and
// port external to internal, as UPnP-IGD, NAT-PMP or PCP would: it never
// expires and passes packets from anyone. Outbound packets from internal
// leave through it. It returns an error if external is taken.
func (g *Gateway) Forward(external uint16, internal netip.AddrPort) error {
	if !g.translate {
		return fmt.Errorf("natlab: %s: port forwards need a NAT", g.name)
	}
	if external == 0 || !internal.IsValid() {
		return fmt.Errorf("natlab: %s: invalid forward %d -> %v", g.name, external, internal)
	}
	ext := netip.AddrPortFrom(g.public, external)
	g.mu.Lock()
	defer g.mu.Unlock()
	if m := g.byExt[ext]; m != nil && !g.expiredLocked(m, g.in.cfg.Now()) {
		return fmt.Errorf("natlab: %s: port %d is taken by %v", g.name, external, m.internal)
	}
	g.removeLocked(g.byExt[ext])
	m := &mapping{key: mapKey{internal: internal}, internal: internal, external: ext, static: true}
	g.removeLocked(g.byKey[m.key])
	g.byKey[m.key] = m
	g.byExt[ext] = m
	return nil
}

// Flush drops every dynamic mapping and filter permission, like
// `conntrack -F`. Port forwards stay.
func (g *Gateway) Flush() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.byExt {
		if !m.static {
			g.removeLocked(m)
		}
	}
}

// Stats returns a snapshot of the gateway's counters.
func (g *Gateway) Stats() GatewayStats {
	g.mu.Lock()
	now := g.in.cfg.Now()
	live := 0
	for _, m := range g.byExt {
		if !g.expiredLocked(m, now) {
			live++
		}
	}
	g.mu.Unlock()
	return GatewayStats{
		OutForwarded:     g.outForwarded.Load(),
		InForwarded:      g.inForwarded.Load(),
		DroppedFilter:    g.droppedFilter.Load(),
		DroppedNoMapping: g.droppedNoMap.Load(),
		DroppedHairpin:   g.droppedHairpin.Load(),
		DroppedNoPort:    g.droppedNoPort.Load(),
		MappingsCreated:  g.mappingsCreated.Load(),
		MappingsExpired:  g.mappingsExpired.Load(),
		Mappings:         live,
	}
}

// receive is a packet from the upstream network addressed to the gateway
// (its public address, or a firewalled host's address).
func (g *Gateway) receive(p *packet) {
	if g.translate && p.src.Addr() == g.public {
		// Our own translated packet came back: hairpinning.
		if !g.hairpin {
			g.droppedHairpin.Add(1)
			g.trace(p, "dropped: hairpin")
			return
		}
	}
	g.inbound(p)
}

// inbound filters and translates a packet from upstream toward the LAN.
func (g *Gateway) inbound(p *packet) {
	now := g.in.cfg.Now()
	g.mu.Lock()
	m := g.byExt[p.dst]
	if m != nil && g.expiredLocked(m, now) {
		g.mappingsExpired.Add(1)
		g.removeLocked(m)
		m = nil
	}
	if m == nil {
		g.mu.Unlock()
		g.droppedNoMap.Add(1)
		g.trace(p, "dropped: no mapping")
		return
	}
	allowed := m.static || g.allowedLocked(m, p.src, now)
	internal := m.internal
	g.mu.Unlock()
	if !allowed {
		g.droppedFilter.Add(1)
		g.trace(p, "dropped by "+g.filtering.String()+" filter")
		return
	}
	g.inForwarded.Add(1)
	q := &packet{src: p.src, dst: internal, data: p.data}
	if g.in.tracing() {
		g.in.logf("%s: in %v -> %v to %v", g.name, p.src, p.dst, internal)
	}
	g.lan.route(q)
}

// outbound maps and translates a packet from the LAN toward upstream.
func (g *Gateway) outbound(p *packet) {
	now := g.in.cfg.Now()
	key := mapKey{internal: p.src}
	switch g.mapping {
	case AddressDependent:
		key.remote = netip.AddrPortFrom(p.dst.Addr(), 0)
	case AddressAndPortDependent:
		key.remote = p.dst
	}
	if !g.translate {
		key = mapKey{internal: p.src}
	}

	g.mu.Lock()
	m := g.byKey[key]
	if m == nil {
		// A port forward for this internal endpoint serves all flows.
		if f := g.byKey[mapKey{internal: p.src}]; f != nil && f.static {
			m = f
		}
	}
	if m != nil && g.expiredLocked(m, now) {
		g.mappingsExpired.Add(1)
		g.removeLocked(m)
		m = nil
	}
	created := false
	if m == nil {
		ext, ok := g.allocLocked(p.src, now)
		if !ok {
			g.mu.Unlock()
			g.droppedNoPort.Add(1)
			g.trace(p, "dropped: no external port left")
			return
		}
		m = &mapping{key: key, internal: p.src, external: ext, perms: make(map[netip.AddrPort]time.Time)}
		g.byKey[key] = m
		g.byExt[ext] = m
		g.mappingsCreated.Add(1)
		created = true
	}
	if !m.static {
		m.perms[p.dst] = now
		m.lastOut = now
	}
	ext := m.external
	g.mu.Unlock()

	g.outForwarded.Add(1)
	if g.in.tracing() {
		what := ""
		if created {
			what = " (new mapping)"
		}
		g.in.logf("%s: out %v -> %v as %v%s", g.name, p.src, p.dst, ext, what)
	}
	g.parent.route(&packet{src: ext, dst: p.dst, data: p.data})
}

// expiredLocked reports whether m has timed out at now.
func (g *Gateway) expiredLocked(m *mapping, now time.Time) bool {
	return !m.static && now.Sub(m.lastOut) >= g.timeout
}

// allowedLocked applies the filtering behaviour to a packet from remote.
func (g *Gateway) allowedLocked(m *mapping, remote netip.AddrPort, now time.Time) bool {
	switch g.filtering {
	case EndpointIndependentFiltering:
		return true // the mapping is live, checked by the caller
	case AddressDependentFiltering:
		for r, t := range m.perms {
			if r.Addr() == remote.Addr() && now.Sub(t) < g.timeout {
				return true
			}
		}
		return false
	default:
		t, ok := m.perms[remote]
		return ok && now.Sub(t) < g.timeout
	}
}

func (g *Gateway) removeLocked(m *mapping) {
	if m == nil {
		return
	}
	if g.byKey[m.key] == m {
		delete(g.byKey, m.key)
	}
	if g.byExt[m.external] == m {
		delete(g.byExt, m.external)
	}
}

// allocLocked picks the external endpoint for a new mapping of internal.
func (g *Gateway) allocLocked(internal netip.AddrPort, now time.Time) (netip.AddrPort, bool) {
	if !g.translate {
		// A firewall: the "external" endpoint is the host's own. One
		// flow set per host endpoint, so it is free unless a live
		// mapping has it, which outbound would have found.
		return internal, true
	}
	free := func(port uint16) bool {
		ext := netip.AddrPortFrom(g.public, port)
		m := g.byExt[ext]
		if m == nil {
			return true
		}
		if g.expiredLocked(m, now) {
			g.mappingsExpired.Add(1)
			g.removeLocked(m)
			return true
		}
		return false
	}
	if g.preserve && free(internal.Port()) {
		return netip.AddrPortFrom(g.public, internal.Port()), true
	}
	const lo, hi = 1024, 65535
	for range 64 {
		port := uint16(lo + g.rng.IntN(hi-lo+1))
		if free(port) {
			return netip.AddrPortFrom(g.public, port), true
		}
	}
	for port := lo; port <= hi; port++ {
		if free(uint16(port)) {
			return netip.AddrPortFrom(g.public, uint16(port)), true
		}
	}
	return netip.AddrPort{}, false
}

func (g *Gateway) trace(p *packet, what string) {
	if g.in.tracing() {
		g.in.logf("%s: %v -> %v %s", g.name, p.src, p.dst, what)
	}
}
