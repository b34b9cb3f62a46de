package nat

// Port mapping: asking the LAN gateway to forward a public UDP port to the
// node's glow port, through UPnP-IGD, NAT-PMP (RFC 6886) or PCP (RFC 6887).
// The protocols are spoken by tailscale.com/net/portmapper; this file is
// the only one in glow that imports tailscale, and it adapts that client's
// shape (event bus, network monitor, background creation) to a small
// synchronous API:
//
//	pm, err := nat.NewPortMapper(nat.PortMapConfig{LocalPort: 41641, OnChange: f})
//	probe, err := pm.Probe(ctx)  // which services answered (glow netcheck)
//	ext, err := pm.Mapping(ctx)  // the public endpoint, a Mapped candidate
//	...
//	pm.Close()                   // glow down: the gateway forgets the mapping
//
// How the library is wired:
//
//   - netmon: portmapper.Client requires a *netmon.Monitor but uses it only
//     to build tailscale's socket options (netns). A live monitor
//     (netmon.New) would open a netlink socket and run goroutines for
//     nothing, so a static snapshot (netmon.NewStatic) is used. Gateway
//     changes are still noticed: the client asks for the gateway on every
//     probe and mapping attempt and drops its state when the answer changes.
//   - netns: tailscale marks its sockets (SO_MARK 0x80000 as root, else
//     SO_BINDTODEVICE to the default-route interface) to escape
//     tailscaled's own policy routing. Glow installs no such routing and its
//     own UDP socket is a plain one, so the mapping requests should be routed
//     exactly like it: NewPortMapper turns tailscale's netns off
//     (netns.SetEnabled(false), process-wide, read only by tailscale code).
//   - Gateway: the gateway and own LAN address come from
//     netmon.LikelyHomeRouterIP (the routing table) unless
//     PortMapConfig.Gateway is set; that is passed to the client's
//     SetGatewayLookupFunc, the hook tailscale's tests use too. The
//     protocol ports are not injectable (5351 for NAT-PMP/PCP, 1900 for
//     SSDP; the client's test ports are unexported), so tests put a fake
//     gateway (glow/nat/igdtest) on those ports in a network namespace.
//   - Events: the client creates mappings in a background goroutine and
//     publishes each one on an eventbus.Bus that the PortMapper owns. The
//     PortMapper's loop goroutine receives them, caches the mapping, wakes
//     Mapping callers and calls OnChange.
//   - Renewal: the library renews a mapping (at half its lifetime) only
//     when GetCachedMappingOrStartCreatingOne is called after the renewal
//     time; tailscale's magicsock calls it on every endpoint update. The
//     loop calls it every renewCheckInterval once a mapping was asked for,
//     which costs nothing (a lock and a time check) until renewal is due.
//   - Env: TS_DISABLE_PORTMAPPER=1 and TS_DISABLE_UPNP=1 still switch the
//     library off; they are documented here so nobody is surprised.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"tailscale.com/net/netmon"
	"tailscale.com/net/netns"
	"tailscale.com/net/portmapper"
	"tailscale.com/net/portmapper/portmappertype"
	"tailscale.com/util/eventbus"
)

// ErrNoPortMapping is returned (wrapped) by [PortMapper.Mapping] when the
// gateway offers no port mapping service or none of them made a mapping.
var ErrNoPortMapping = errors.New("nat: no port mapping available")

// ErrPortMapperClosed is returned by methods called after
// [PortMapper.Close].
var ErrPortMapperClosed = errors.New("nat: port mapper closed")

const (
	// renewCheckInterval is how often the loop lets the library renew
	// a mapping that is past half of its lifetime (2 h for all three
	// protocols as tailscale requests them).
	renewCheckInterval = time.Minute

	// createTimeout bounds how long Mapping waits for the library's
	// background creation, which gives up after 5 s itself.
	createTimeout = 6 * time.Second
)

// PortMapConfig configures a [PortMapper]. Only LocalPort is required.
type PortMapConfig struct {
	// LocalPort is the node's UDP port (the glow socket) to be mapped.
	LocalPort uint16

	// Logf receives the library's log lines. Nil discards them.
	Logf func(format string, args ...any)

	// Gateway returns the gateway's IP address and this host's address on
	// the gateway's LAN; ok false means there is none (no mapping is
	// tried). Nil means the default route from the routing table. Tests
	// point it at a fake gateway.
	Gateway func() (gw, self netip.Addr, ok bool)

	// OnChange, if not nil, is called with the public endpoint each time a
	// mapping is made, renewed or changed. It runs on the PortMapper's loop
	// goroutine and must not block or call Close.
	OnChange func(mapped netip.AddrPort)
}

// PortMapProbe says which port mapping protocols the gateway answered.
type PortMapProbe struct {
	UPnP, PMP, PCP bool
}

// Any reports whether at least one protocol answered.
func (p PortMapProbe) Any() bool { return p.UPnP || p.PMP || p.PCP }

func (p PortMapProbe) String() string {
	return fmt.Sprintf("UPnP=%v NAT-PMP=%v PCP=%v", p.UPnP, p.PMP, p.PCP)
}

// PortMapper keeps one UDP port mapping on the LAN gateway. Its methods
// are safe for concurrent use.
type PortMapper struct {
	// Immutable after NewPortMapper.
	cfg    PortMapConfig
	bus    *eventbus.Bus
	busc   *eventbus.Client
	sub    *eventbus.Subscriber[portmappertype.Mapping]
	client *portmapper.Client
	stop   chan struct{} // closed by Close to end loop
	wg     sync.WaitGroup

	// mu guards the following. Never held while calling into client or
	// OnChange.
	mu        sync.Mutex
	mapped    netip.AddrPort // last mapping published, if goodUntil is ahead
	goodUntil time.Time
	changed   chan struct{} // closed and replaced when mapped changes
	wanted    bool          // Mapping was called: keep renewing
	closed    bool
}

// NewPortMapper builds a PortMapper and starts its loop goroutine. It
// sends nothing until Probe or Mapping is called.
func NewPortMapper(cfg PortMapConfig) (*PortMapper, error) {
	if cfg.LocalPort == 0 {
		return nil, errors.New("nat: PortMapConfig.LocalPort is 0")
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	netns.SetEnabled(false) // see the file comment

	m := &PortMapper{
		cfg:     cfg,
		bus:     eventbus.New(),
		stop:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	m.busc = m.bus.Client("glow-portmap")
	m.sub = eventbus.Subscribe[portmappertype.Mapping](m.busc)
	m.client = portmapper.NewClient(portmapper.Config{
		EventBus: m.bus,
		Logf:     cfg.Logf,
		NetMon:   netmon.NewStatic(),
	})
	if cfg.Gateway != nil {
		m.client.SetGatewayLookupFunc(cfg.Gateway)
	}
	m.client.SetLocalPort(cfg.LocalPort)

	m.wg.Add(1)
	go m.loop()
	return m, nil
}

// loop owns the delivery of mapping events and the renewal ticks. It
// blocks only on OnChange.
func (m *PortMapper) loop() {
	defer m.wg.Done()
	tick := time.NewTicker(renewCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-m.sub.Done():
			return
		case ev := <-m.sub.Events():
			m.mu.Lock()
			changed := ev.External != m.mapped
			m.mapped, m.goodUntil = ev.External, ev.GoodUntil
			close(m.changed)
			m.changed = make(chan struct{})
			m.mu.Unlock()
			m.cfg.Logf("portmap: %s mapping %v (changed %v) good until %v",
				ev.Type, ev.External, changed, ev.GoodUntil.Format(time.RFC3339))
			if m.cfg.OnChange != nil {
				m.cfg.OnChange(ev.External)
			}
		case <-tick.C:
			m.mu.Lock()
			wanted := m.wanted && !m.closed
			m.mu.Unlock()
			if wanted {
				m.client.GetCachedMappingOrStartCreatingOne()
			}
		}
	}
}

// Probe asks the gateway which of UPnP-IGD, NAT-PMP and PCP it speaks. It
// takes at most about 250 ms (the library's bound), less if ctx ends
// sooner. Answers are cached by the library for up to 10 minutes while
// the gateway stays the same.
func (m *PortMapper) Probe(ctx context.Context) (PortMapProbe, error) {
	if m.isClosed() {
		return PortMapProbe{}, ErrPortMapperClosed
	}
	res, err := m.client.Probe(ctx)
	p := PortMapProbe{UPnP: res.UPnP, PMP: res.PMP, PCP: res.PCP}
	if err != nil {
		return p, fmt.Errorf("nat: port mapping probe: %w", err)
	}
	return p, nil
}

// Mapping returns the public endpoint that the gateway forwards to
// LocalPort, creating the mapping if there is none. A valid mapping is
// returned from the cache at once. Otherwise Mapping probes the gateway
// (when the library has no recent probe), asks for a mapping and waits
// for it until ctx ends or about 6 s have passed. Without any mapping
// service the error wraps ErrNoPortMapping and comes back after the probe
// (about 250 ms). From then on the mapping is renewed in the background
// and OnChange reports each renewal.
func (m *PortMapper) Mapping(ctx context.Context) (netip.AddrPort, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return netip.AddrPort{}, ErrPortMapperClosed
	}
	m.wanted = true
	if m.mapped.IsValid() && time.Now().Before(m.goodUntil) {
		ext := m.mapped
		m.mu.Unlock()
		return ext, nil
	}
	m.mu.Unlock()

	// The library learns UPnP gateways only from a probe, and skips a
	// second NAT-PMP/PCP round trip when a probe just found neither.
	probe, err := m.Probe(ctx)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %w", ErrNoPortMapping, err)
	}
	if !probe.Any() {
		return netip.AddrPort{}, fmt.Errorf("%w: no UPnP, NAT-PMP or PCP answer from the gateway", ErrNoPortMapping)
	}

	m.mu.Lock()
	changed := m.changed
	m.mu.Unlock()
	if ext, ok := m.client.GetCachedMappingOrStartCreatingOne(); ok {
		return ext, nil
	}
	timer := time.NewTimer(createTimeout)
	defer timer.Stop()
	select {
	case <-changed:
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.closed {
			return netip.AddrPort{}, ErrPortMapperClosed
		}
		return m.mapped, nil
	case <-ctx.Done():
		return netip.AddrPort{}, fmt.Errorf("%w: %w", ErrNoPortMapping, ctx.Err())
	case <-timer.C:
		return netip.AddrPort{}, fmt.Errorf("%w: the gateway (%v) made none", ErrNoPortMapping, probe)
	}
}

// SetLocalPort changes the local port to map (the node's socket moved):
// the mapping of the old port is forgotten and, if Mapping was called,
// one for the new port is asked for in the background. The old mapping
// expires at the gateway.
func (m *PortMapper) SetLocalPort(port uint16) {
	m.mu.Lock()
	if m.closed || port == 0 {
		m.mu.Unlock()
		return
	}
	m.mapped, m.goodUntil = netip.AddrPort{}, time.Time{}
	wanted := m.wanted
	m.mu.Unlock()
	m.client.SetLocalPort(port)
	if wanted {
		m.client.GetCachedMappingOrStartCreatingOne()
	}
}

// Close releases the mapping on the gateway (a NAT-PMP or PCP request with
// lifetime 0, or a UPnP DeletePortMapping), stops the loop and waits for
// it. Mapping callers still waiting get ErrPortMapperClosed. Close is
// idempotent.
func (m *PortMapper) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()

	err := m.client.Close() // releases the mapping synchronously
	close(m.stop)
	m.wg.Wait()
	m.sub.Close()
	m.busc.Close()
	m.bus.Close()

	m.mu.Lock()
	close(m.changed) // wakes Mapping callers; they see closed
	m.changed = make(chan struct{})
	m.mapped = netip.AddrPort{}
	m.mu.Unlock()
	return err
}

func (m *PortMapper) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}
