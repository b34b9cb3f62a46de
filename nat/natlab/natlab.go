// Package natlab is a virtual Internet in memory, for testing NAT traversal
// without a network: hosts get UDP sockets (net.PacketConn) with real
// netip addresses, some directly on the Internet, some behind NAT gateways
// or stateful firewalls that follow the behaviours of RFC 4787.
//
// # How to use
//
//	in := natlab.NewInternet()
//	nat := in.NewNAT(natlab.NATConfig{
//		Public:    netip.MustParseAddr("203.0.113.1"),
//		Mapping:   natlab.EndpointIndependent,
//		Filtering: natlab.AddressAndPortRestricted,
//		Timeout:   30 * time.Second,
//	})
//	h := nat.NewHost(netip.MustParseAddr("192.168.1.2"))  // behind the NAT
//	v := in.NewHost(netip.MustParseAddr("198.51.100.10")) // public
//	pc, err := h.ListenPacket(5000)                        // *Conn, a net.PacketConn
//	...
//	nat.Flush() // lose all mappings, like conntrack -F
//
// Gateways nest (a home NAT behind a carrier-grade NAT: nat.NewNAT), and
// [Gateway.Forward] adds a static port forward, which is what UPnP-IGD,
// NAT-PMP or PCP would have made. Every Internet, Gateway and Host keeps
// counters ([Internet.Stats], [Gateway.Stats], [Host.Stats]) so that tests
// can assert why a packet did not arrive.
//
// Set NATLAB_TRACE=1 (or [Config.Logf]) to log every packet and every
// decision a gateway makes.
//
// # How a packet travels
//
// A write routes the datagram synchronously, in the writer's goroutine, to
// the receive queue of the destination socket:
//
//	WriteTo ─► segment.route ─► on-link host? ─► Host.receive ─► Conn queue
//	                         └► else gateway.outbound (map, translate src)
//	                               ─► parent segment.route ─► ...
//	parent segment.route(dst = gateway public IP) ─► gateway.inbound
//	      (find mapping, filter, translate dst) ─► LAN segment.route ─► ...
//
// Each queue is bounded; a full queue drops the packet and counts it, as a
// kernel socket buffer would. With [Config.Latency] set, routing starts after
// that delay, on the runtime clock (so a test under testing/synctest sees
// fake time), in the order the packets were sent, from one goroutine per
// Internet; [Config.Loss] drops a seeded pseudo-random share of packets
// before routing.
//
// # Why this shape
//
// Synchronous routing makes a single-goroutine test fully deterministic: a
// write has either been queued at its destination or been dropped (and
// counted) by the time it returns. Gateway decisions read the time from
// [Config.Now], so a test can expire mappings with a [Clock] instead of
// sleeping; socket deadlines follow the runtime clock, as net.Conn's
// contract says. No lock is held while a packet moves on to the next stage,
// so there is no lock order to respect beyond "one at a time".
//
// The model is tailscale's tstest/natlab, reduced to what glow needs: UDP
// only, one address per host, mapping and filtering as separate knobs so
// that every cell of the RFC 4787 matrix can be tested.
package natlab

import (
	"fmt"
	"log"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultQueueLen is the receive queue length of each socket.
const DefaultQueueLen = 128

// Config configures an Internet. The zero value is a lossless, instant
// network on the runtime clock.
type Config struct {
	// Now is the clock for mapping timeouts. Nil means time.Now.
	Now func() time.Time

	// Latency delays every packet by this much, once, before routing.
	Latency time.Duration

	// Loss is the probability (0..1) that a packet is dropped before
	// routing. The choice is pseudo-random from Seed.
	Loss float64

	// Seed seeds loss and the gateways' port choices.
	Seed uint64

	// QueueLen is each socket's receive queue length. Zero means
	// DefaultQueueLen.
	QueueLen int

	// Logf receives a trace of every packet. Nil means log.Printf when the
	// environment variable NATLAB_TRACE is set to a non-empty value other
	// than 0, and no trace otherwise.
	Logf func(format string, args ...any)
}

// Internet is the public network at the root of a lab. It is safe for
// concurrent use.
type Internet struct {
	cfg  Config   // immutable
	root *segment // immutable

	droppedNoRoute atomic.Uint64
	lost           atomic.Uint64
	delivered      atomic.Uint64

	mu  sync.Mutex // guards the following
	rng *rand.Rand

	delay delayLine // packets waiting for Config.Latency
}

// delayLine holds the packets sent but not yet routed, in the order sent
// (which is the order due: the latency is the same for all), for one
// goroutine that routes each when it is due and exits once none wait. A
// timer per packet started a goroutine per packet: at 1,000 simulated
// nodes, 40% of the process's CPU went to creating them.
type delayLine struct {
	mu      sync.Mutex
	q       []delayed
	running bool
}

type delayed struct {
	due time.Time
	s   *segment
	p   *packet
}

// later queues p for routing on s after the latency.
func (in *Internet) later(s *segment, p *packet) {
	d := &in.delay
	d.mu.Lock()
	d.q = append(d.q, delayed{time.Now().Add(in.cfg.Latency), s, p})
	start := !d.running
	d.running = true
	d.mu.Unlock()
	if start {
		go d.run()
	}
}

func (d *delayLine) run() {
	var batch []delayed
	for {
		d.mu.Lock()
		batch, d.q = d.q, batch[:0]
		if len(batch) == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		for i, x := range batch {
			if wait := time.Until(x.due); wait > 0 {
				time.Sleep(wait)
			}
			x.s.route(x.p)
			batch[i] = delayed{} // no packet kept alive by the spare slice
		}
	}
}

// Stats counts what an Internet did with packets.
type Stats struct {
	Delivered      uint64 // queued at a destination socket
	DroppedNoRoute uint64 // no host or gateway has the destination address
	Lost           uint64 // dropped by Config.Loss
}

// NewInternet returns an Internet with the zero Config.
func NewInternet() *Internet { return New(Config{}) }

// New returns an Internet with cfg. It panics if cfg is invalid: a lab
// set-up mistake is a bug in the test.
func New(cfg Config) *Internet {
	if cfg.Loss < 0 || cfg.Loss > 1 {
		panic(fmt.Sprintf("natlab: Config.Loss %v is outside 0..1", cfg.Loss))
	}
	if cfg.Latency < 0 || cfg.QueueLen < 0 {
		panic("natlab: negative Config.Latency or Config.QueueLen")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.Logf == nil {
		if v := os.Getenv("NATLAB_TRACE"); v != "" && v != "0" {
			cfg.Logf = log.Printf
		}
	}
	in := &Internet{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x6e61746c6162))}
	in.root = &segment{in: in, name: "internet", nodes: make(map[netip.Addr]node)}
	return in
}

// Stats returns a snapshot of the Internet's counters.
func (in *Internet) Stats() Stats {
	return Stats{
		Delivered:      in.delivered.Load(),
		DroppedNoRoute: in.droppedNoRoute.Load(),
		Lost:           in.lost.Load(),
	}
}

// NewHost attaches a host with the public address ip to the Internet. It
// panics if ip is invalid or taken.
func (in *Internet) NewHost(ip netip.Addr) *Host { return in.root.newHost(ip) }

// NewNAT attaches a NAT gateway with public address cfg.Public to the
// Internet. It panics if cfg is invalid or the address is taken.
func (in *Internet) NewNAT(cfg NATConfig) *Gateway { return in.root.newNAT(cfg) }

// NewFirewall attaches a stateful firewall to the Internet: its hosts have
// public addresses, and inbound packets pass only as replies to what the
// host sent (per cfg.Filtering).
func (in *Internet) NewFirewall(cfg FirewallConfig) *Gateway { return in.root.newFirewall(cfg) }

func (in *Internet) logf(format string, args ...any) {
	if in.cfg.Logf != nil {
		in.cfg.Logf("natlab: "+format, args...)
	}
}

func (in *Internet) tracing() bool { return in.cfg.Logf != nil }

// lose reports whether Config.Loss drops this packet.
func (in *Internet) lose() bool {
	if in.cfg.Loss == 0 {
		return false
	}
	in.mu.Lock()
	f := in.rng.Float64()
	in.mu.Unlock()
	return f < in.cfg.Loss
}

// Clock is a manual clock for Config.Now. The zero value is not usable;
// use NewClock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock that reads start until advanced.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// packet is one datagram in flight. data is owned by the packet: the
// sender's buffer was copied when the packet was made.
type packet struct {
	src, dst netip.AddrPort
	data     []byte
}

// node is anything a segment can deliver to: a host, or the outside of a
// gateway (its public address, or a firewalled host's address).
type node interface {
	receive(p *packet)
}

// segment is one broadcast domain: the Internet, or the LAN behind a
// gateway. Addresses are unique within a segment, so two LANs may both
// use 192.168.1.0/24.
type segment struct {
	in   *Internet // immutable
	name string    // immutable, for traces
	gw   *Gateway  // immutable; nil for the Internet

	mu    sync.Mutex // guards the following
	nodes map[netip.Addr]node
}

// attach registers n at ip, panicking if ip is unusable or taken.
func (s *segment) attach(ip netip.Addr, n node) {
	if !ip.IsValid() || ip.IsUnspecified() || ip.Zone() != "" || ip.Is4In6() {
		panic(fmt.Sprintf("natlab: invalid address %v", ip))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.nodes[ip]; ok {
		panic(fmt.Sprintf("natlab: address %v already taken on %s", ip, s.name))
	}
	s.nodes[ip] = n
}

func (s *segment) lookup(ip netip.Addr) node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[ip]
}

// route moves p one step: to an on-link node, else up through the
// segment's gateway, else nowhere.
func (s *segment) route(p *packet) {
	if n := s.lookup(p.dst.Addr()); n != nil {
		n.receive(p)
		return
	}
	if s.gw != nil {
		s.gw.outbound(p)
		return
	}
	s.in.droppedNoRoute.Add(1)
	if s.in.tracing() {
		s.in.logf("%v -> %v: dropped, no route on %s", p.src, p.dst, s.name)
	}
}

// send is where a host's packet enters the lab: loss, then latency, then
// routing on the host's segment.
func (s *segment) send(p *packet) {
	in := s.in
	if in.lose() {
		in.lost.Add(1)
		if in.tracing() {
			in.logf("%v -> %v: lost", p.src, p.dst)
		}
		return
	}
	if in.cfg.Latency > 0 {
		in.later(s, p)
		return
	}
	s.route(p)
}

func (s *segment) newHost(ip netip.Addr) *Host {
	h := &Host{seg: s, ip: ip, conns: make(map[uint16]*Conn), nextPort: firstEphemeralPort}
	s.attach(ip, h)
	return h
}
