package overlay

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"

	"glow/internal/wire"
	"glow/link"
	"glow/relay"
)

// Bind is the overlay's conn.Bind: wireguard-go sends to and receives from
// peers named by node identity, and the Bind decides how each packet travels.
//
// It wraps an inner conn.Bind (link/udpbind in production: recvmmsg and
// sendmmsg with UDP GRO and GSO, made as raw system calls) and shares its
// one UDP socket with glow's control packets, beacons and STUN.
// The packet path is in bind_recv.go and bind_send.go; everything else
// changes it only through atomics (Endpoint.path, Bind.byAddr).
type Bind struct {
	inner  conn.Bind
	gather prefixSender // inner, when it sends behind a prefix without copying (bind_send.go)
	ctl    *ctlQueues   // control, beacon and STUN datagrams, to the node's loop (ctlqueue.go)
	self   wire.ShortID
	fwd    *relay.Forwarder

	byAddr    atomic.Pointer[map[netip.AddrPort]*Endpoint]         // copy on write
	turnVia   atomic.Pointer[map[netip.AddrPort]*relay.TURNClient] // peers that reach us through our TURN allocation; copy on write
	byShort   atomic.Pointer[map[wire.ShortID]*Endpoint]           // copy on write
	byCtlKey  atomic.Pointer[map[wire.Key]*Endpoint]               // peers' control keys; copy on write
	scratch   sync.Pool                                            // *sendScratch for relayed sends
	lastData  atomic.Int64                                         // unix nanos of the last WireGuard send
	joinMu    sync.Mutex                                           // guards joinConns
	joinConns map[netip.AddrPort]chan<- []byte                     // joiners on the link port (joinstream.go)

	// Packets inside wireguard-go, bounded (inflight.go): out from the TUN
	// reader to Send, in from the receive functions to the TUN writer.
	out, in *inflight

	// Lazy WireGuard peers (lazywg.go).
	dev      atomic.Pointer[device.Device]            // set once the device exists
	byIP     atomic.Pointer[map[netip.Addr]*Endpoint] // overlay address -> peer; copy on write
	byRoute  atomic.Pointer[[]routeEntry]             // prefixes routed to peers, longest first (subnets.go)
	wgWakes  atomic.Uint64                            // WireGuard peers configured on demand
	wgMu     sync.Mutex                               // guards what wireguard-go holds (Endpoint.wg.on, inKey, since) and wgClosed; serialises IpcSet; taken before wgCfgMu
	wgCfgMu  sync.Mutex                               // guards every Endpoint.wg.key, wg.cfg and wgQueue; never held across IpcSet, so Node.mu may be held
	wgClosed bool                                     // closeWG was called
	wgHook   func()                                   // tests: called before each IpcSet of a peer (Config.beforeIpcSet); set before use
	wgQueue  []func()                                 // changes made under Node.mu, applied in order by applyWG
	wgOwner  map[string]*Endpoint                     // public key -> the endpoint configured with it in wireguard-go; guarded by wgMu
	wgKick   chan struct{}                            // cap 1: wgQueue has work
	wgPaused bool                                     // rebind is moving the socket: configure nothing (portclash.go)

	// Drops, counted by reason; read with Counters.
	dropUnknownSrc  atomic.Uint64 // WireGuard packet from an address of no known peer
	dropCtlFull     atomic.Uint64 // control queue full
	dropCtlLimited  atomic.Uint64 // unauthenticated datagram over its source's rate
	dropUnknownKind atomic.Uint64 // neither WireGuard nor glow nor STUN
	sendNoPath      atomic.Uint64
	dropRelayNoPeer atomic.Uint64 // relay frame for us from an unknown source
	dropRelayUnauth atomic.Uint64 // relay frame from an address or link of no known peer
	dropRelayShort  atomic.Uint64 // relay frame shorter than its header
	dropRelayNoPath atomic.Uint64 // relay frame to forward, no path to its destination
	dropStreamFull  atomic.Uint64 // stream link's queue full (control sends, or reads faster than WireGuard takes them)

	traffic      trafficCounters // WireGuard's datagrams by path (traffic.go)
	devBindState                 // plain WireGuard devices this node is the via node of (devicewg.go)

	// Datagrams read from stream links, for the streams' ReceiveFunc.
	streamIn chan streamPkt
	// silent: peers sent to on a direct path that went silent (failover.go).
	silent chan *Endpoint

	mu       sync.Mutex // guards the following
	peers    map[wire.NodeID]*Endpoint
	addrs    map[netip.AddrPort]*Endpoint // the source of byAddr
	openDone chan struct{}                // closed by Close: ends the streams' ReceiveFunc
	held     publishHold                  // Hold..Release: the lookup maps' rebuilds wait (bind_hold.go)
}

// streamPkt is one datagram read from a stream link (from set) or
// through a TURN allocation (addr set: the peer's address); buf is its own.
type streamPkt struct {
	buf  []byte
	from *Endpoint
	addr netip.AddrPort
}

// DeliverTURN hands a datagram that peer address from sent to this node's
// TURN relayed address to the receive path, and remembers that from is
// answered through c.
func (b *Bind) DeliverTURN(buf []byte, from netip.AddrPort, c *relay.TURNClient) {
	if m := *b.turnVia.Load(); m[from] != c {
		b.mu.Lock()
		nm := make(map[netip.AddrPort]*relay.TURNClient, len(m)+1)
		for k, v := range *b.turnVia.Load() {
			nm[k] = v
		}
		nm[from] = c
		b.turnVia.Store(&nm)
		b.mu.Unlock()
	}
	select {
	case b.streamIn <- streamPkt{buf: buf, addr: from}:
	default:
		b.dropStreamFull.Add(1)
	}
}

// DeliverStream hands a datagram read from a stream link with peer e to the
// streams' ReceiveFunc. Like a UDP socket's buffer, the queue drops what
// does not fit: a reader that waited could stall the writer at the other
// end, and with both ends doing so, deadlock.
func (b *Bind) DeliverStream(buf []byte, e *Endpoint) {
	select {
	case b.streamIn <- streamPkt{buf: buf, from: e}:
	default:
		b.dropStreamFull.Add(1)
	}
}

// inbound is one datagram for the control loop; buf is its own copy.
type inbound struct {
	lan  bool // came from the LAN discovery socket
	kind wire.Kind
	buf  []byte
	from netip.AddrPort // invalid when the datagram came relayed
	via  wire.NodeID    // the node that sent a relayed datagram
	// stream: a join-via packet from a joiner's TCP connection on the link
	// port (joinstream.go), which its answer goes back down.
	stream bool
}

// Endpoint is a peer as wireguard-go sees it: a node identity. The path its
// packets take can change at any time without wireguard-go noticing.
type Endpoint struct {
	ID       wire.NodeID
	path     atomic.Pointer[path]
	lastSend atomic.Int64 // unix nanos of the last WireGuard send, for heartbeats
	// relayedIn is when WireGuard traffic last came from this peer in a
	// relay frame: if we still think our direct path works, the peer does
	// not, and our path deserves fast heartbeats to find out.
	relayedIn atomic.Int64
	// directIn is when the peer was last heard on its direct path (UDP
	// from its address); silentAt is when a send into silence on it was
	// last reported to the node (failover.go).
	directIn, silentAt atomic.Int64
	// held is the latest handshake message (initiation or response)
	// wireguard-go sent while the peer had no path; it goes out as soon as a
	// path appears, so a connection does not wait for wireguard-go's 5 s
	// retry (a response can arrive relayed before the route back is known).
	held atomic.Pointer[[]byte]
	// recentHS is the last handshake message sent on a path, and when: a
	// path that dies right after it took the message with it, so a new
	// path resends it rather than leave the peer to a 5 s retry.
	recentHS   atomic.Pointer[[]byte]
	recentHSAt atomic.Int64
	// wg is the peer's WireGuard configuration, applied on demand; ips
	// are its overlay addresses (guarded by Bind.mu, published in byIP).
	wg  wgPeer
	ips []netip.Addr
	// ctlKey is the peer's control key (guarded by Bind.mu, published in
	// byCtlKey); learned are its addresses in byAddr, oldest first (Learn).
	ctlKey  wire.Key
	learned []netip.AddrPort
}

// touch notes that traffic went out on e's path (and the link under it),
// so that heartbeats watch it closely. It reports whether either was idle
// (no traffic for activeWindow): the control loop must hear of it then.
func (e *Endpoint) touch(p *path, now int64) (resumed bool) {
	resumed = now-e.lastSend.Swap(now) >= int64(activeWindow)
	if p.viaEP != nil && now-p.viaEP.lastSend.Swap(now) >= int64(activeWindow) {
		resumed = true
	}
	return resumed
}

// setPath publishes p (nil: no path), the one swap of a live peer's path,
// and, if the peer had no path, sends a held handshake; on a change of
// path, it resends a handshake message the old path carried in the last
// seconds.
func (b *Bind) setPath(e *Endpoint, p *path) {
	old := e.path.Swap(p)
	if p == nil {
		return
	}
	var h *[]byte
	if old == nil {
		h = e.held.Swap(nil)
	}
	if h == nil && old != p && time.Since(time.Unix(0, e.recentHSAt.Load())) < 3*time.Second {
		h = e.recentHS.Swap(nil)
	}
	if h != nil {
		// Not here: the caller may hold the node's lock, and a stream link's
		// write can block. The write ends when it is done or the link closes.
		go b.Send([][]byte{*h}, e)
	}
}

// path is how packets for a peer travel now. Immutable once published.
type path struct {
	addr   netip.AddrPort    // the peer's address (direct) or the next hop's (relay)
	ep     conn.Endpoint     // inner endpoint for addr
	stream *link.Stream      // a stream link (TCP, WebSocket, ssh) instead of UDP, if set
	ctlq   chan<- []byte     // the stream's queue for control datagrams (the control loop never blocks)
	turn   *relay.TURNClient // addr is reached through this TURN allocation
	relay  bool
	via    wire.NodeID               // next hop, when relay
	viaEP  *Endpoint                 // next hop's endpoint, when relay (its link carries our traffic)
	hdr    [wire.RelayHeaderLen]byte // frame header from this node to the peer, when relay
}

var _ conn.Endpoint = (*Endpoint)(nil)

func (e *Endpoint) ClearSrc() {
	if p := e.path.Load(); p != nil && p.ep != nil {
		p.ep.ClearSrc()
	}
}
func (e *Endpoint) SrcToString() string { return "" }
func (e *Endpoint) DstToString() string {
	if p := e.path.Load(); p != nil {
		return p.addr.String()
	}
	return e.ID.Hex()
}

// DstToBytes is used for WireGuard's cookie MACs: the identity is stable.
func (e *Endpoint) DstToBytes() []byte { return e.ID[:] }
func (e *Endpoint) DstIP() netip.Addr {
	if p := e.path.Load(); p != nil {
		return p.addr.Addr()
	}
	return netip.Addr{}
}
func (e *Endpoint) SrcIP() netip.Addr { return netip.Addr{} }

// NewBind wraps inner for node self. Datagrams that are not WireGuard go to
// ctl's queues (ctlqueue.go); when one is full they are dropped and counted
// (the receive path never blocks). Relay frames for others are forwarded as
// fwd allows.
func NewBind(inner conn.Bind, self wire.NodeID, fwd *relay.Forwarder, ctl *ctlQueues) *Bind {
	gather, _ := inner.(prefixSender)
	b := &Bind{inner: inner, gather: gather, ctl: ctl, self: self.Short(), fwd: fwd,
		streamIn: make(chan streamPkt, 1024), silent: make(chan *Endpoint, 16),
		wgOwner: map[string]*Endpoint{}, wgKick: make(chan struct{}, 1),
		out: newInflight(inflightLimit), in: newInflight(inflightLimit),
		peers: map[wire.NodeID]*Endpoint{}, addrs: map[netip.AddrPort]*Endpoint{}}
	m := map[netip.AddrPort]*Endpoint{}
	b.byAddr.Store(&m)
	s := map[wire.ShortID]*Endpoint{}
	b.byShort.Store(&s)
	ck := map[wire.Key]*Endpoint{}
	b.byCtlKey.Store(&ck)
	ips := map[netip.Addr]*Endpoint{}
	b.byIP.Store(&ips)
	t := map[netip.AddrPort]*relay.TURNClient{}
	b.turnVia.Store(&t)
	return b
}

// Peer returns the endpoint for id, creating it if needed.
func (b *Bind) Peer(id wire.NodeID) *Endpoint {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peerLocked(id)
}

// known returns peer id's endpoint, or nil when id is no peer: only
// adding a peer (Peer) makes one, so that a late call for a removed peer
// cannot bring its endpoint back with a path, an address or a short id.
func (b *Bind) known(id wire.NodeID) *Endpoint {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peers[id]
}

// errNoPeer is returned for a node that is not (or no longer) a peer.
var errNoPeer = errors.New("not a peer")

func (b *Bind) peerLocked(id wire.NodeID) *Endpoint {
	e := b.peers[id]
	if e == nil {
		e = &Endpoint{ID: id}
		b.peers[id] = e
		b.publishShortLocked()
	}
	return e
}

func (b *Bind) publishShortLocked() {
	if b.held.on {
		b.held.short = true
		return
	}
	m := make(map[wire.ShortID]*Endpoint, len(b.peers))
	for id, e := range b.peers {
		m[id.Short()] = e
	}
	b.byShort.Store(&m)
}

// publishIPsLocked rebuilds byIP from the peers' overlay addresses.
func (b *Bind) publishIPsLocked() {
	if b.held.on {
		b.held.ips = true
		return
	}
	m := make(map[netip.Addr]*Endpoint, 2*len(b.peers))
	for _, e := range b.peers {
		for _, a := range e.ips {
			m[a] = e
		}
	}
	b.byIP.Store(&m)
}

// Known reports whether id is a peer of this node.
func (b *Bind) Known(id wire.ShortID) bool {
	_, ok := (*b.byShort.Load())[id]
	return ok
}

// RemovePeer forgets a peer and its addresses.
func (b *Bind) RemovePeer(id wire.NodeID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.peers[id]
	if e == nil {
		return
	}
	b.setPath(e, nil)
	delete(b.peers, id)
	b.publishShortLocked()
	b.publishIPsLocked()
	b.publishCtlKeysLocked()
	for a, p := range b.addrs {
		if p == e {
			delete(b.addrs, a)
		}
	}
	e.learned = nil
	b.publishAddrsLocked()
}

// maxLearnedAddrs bounds the addresses learned for one peer: the oldest
// gives way (never the peer's current path).
const maxLearnedAddrs = 16

// Learn records that WireGuard packets from addr come from peer id. Only
// addresses proven by an authenticated control packet are learned, at most
// maxLearnedAddrs per peer.
func (b *Bind) Learn(id wire.NodeID, addr netip.AddrPort) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.peers[id]
	if e == nil || b.addrs[addr] == e {
		return
	}
	if old := b.addrs[addr]; old != nil {
		old.learned = slices.DeleteFunc(old.learned, func(a netip.AddrPort) bool { return a == addr })
	}
	if len(e.learned) >= maxLearnedAddrs {
		var cur netip.AddrPort
		if p := e.path.Load(); p != nil && !p.relay {
			cur = p.addr
		}
		i := 0
		if e.learned[0] == cur {
			i = 1
		}
		delete(b.addrs, e.learned[i])
		e.learned = slices.Delete(e.learned, i, i+1)
	}
	e.learned = append(e.learned, addr)
	b.addrs[addr] = e
	b.publishAddrsLocked()
}

func (b *Bind) publishAddrsLocked() {
	m := make(map[netip.AddrPort]*Endpoint, len(b.addrs))
	for a, e := range b.addrs {
		m[a] = e
	}
	b.byAddr.Store(&m)
}

// The node chooses each peer's path and sets it with one of the following
// (paths.go: applyPathLocked); setPath is where it is swapped.

// ClearPath leaves the peer without a path: its packets are dropped, and a
// handshake is held for the next path.
func (b *Bind) ClearPath(id wire.NodeID) {
	if e := b.known(id); e != nil {
		b.setPath(e, nil)
	}
}

// SetDirect makes addr the peer's direct path (an invalid addr clears it).
func (b *Bind) SetDirect(id wire.NodeID, addr netip.AddrPort) error {
	e := b.known(id)
	if e == nil {
		return errNoPeer
	}
	if !addr.IsValid() {
		b.setPath(e, nil)
		return nil
	}
	turn := (*b.turnVia.Load())[addr]
	if p := e.path.Load(); p != nil && !p.relay && p.addr == addr && p.turn == turn && p.stream == nil {
		return nil
	}
	ep, err := b.inner.ParseEndpoint(addr.String())
	if err != nil {
		return err
	}
	b.Learn(id, addr)
	b.setPath(e, &path{addr: addr, ep: ep, turn: turn})
	return nil
}

// SetStream makes the stream link s the peer's path (nil clears it);
// control datagrams for it go through ctlq.
func (b *Bind) SetStream(id wire.NodeID, s *link.Stream, ctlq chan<- []byte) {
	e := b.known(id)
	if e == nil {
		return
	}
	if s == nil {
		b.setPath(e, nil)
		return
	}
	if p := e.path.Load(); p != nil && !p.relay && p.stream == s {
		return
	}
	b.setPath(e, &path{stream: s, ctlq: ctlq})
}

// SetRelay sends the peer's packets in relay frames to the neighbour via,
// over via's current path (UDP or a stream link).
func (b *Bind) SetRelay(id, via wire.NodeID) error {
	e, v := b.known(id), b.known(via)
	if e == nil {
		return errNoPeer
	}
	if v == nil {
		return errNoPath
	}
	vp := v.path.Load()
	if vp == nil || vp.relay {
		return errNoPath
	}
	if p := e.path.Load(); p != nil && p.relay && p.via == via && p.addr == vp.addr && p.stream == vp.stream {
		return nil
	}
	p := &path{addr: vp.addr, ep: vp.ep, stream: vp.stream, ctlq: vp.ctlq, turn: vp.turn, relay: true, via: via, viaEP: v}
	wire.PutRelayHeader(p.hdr[:], wire.DefaultHopLimit, b.self, id.Short())
	b.setPath(e, p)
	return nil
}

// SendToPeer sends one glow datagram to a peer over its current path. It
// never blocks: over a stream link the datagram is queued (dropped, and
// counted, when the queue is full).
func (b *Bind) SendToPeer(pkt []byte, id wire.NodeID) error {
	e := b.known(id)
	if e == nil {
		return errNoPeer
	}
	p := e.path.Load()
	if p == nil || p.stream == nil {
		return b.Send([][]byte{pkt}, e) // TURN writes do not block (pion sends at once)
	}
	if p.relay {
		pkt = append(p.hdr[:len(p.hdr):len(p.hdr)], pkt...)
	}
	select {
	case p.ctlq <- pkt:
		return nil
	default:
		b.dropStreamFull.Add(1)
		return errStreamFull
	}
}

var errStreamFull = errors.New("stream link queue full")

// SendTo sends one glow datagram (control, beacon) to addr on the shared
// socket, or through the TURN allocation addr reaches this node by.
func (b *Bind) SendTo(pkt []byte, addr netip.AddrPort) error {
	if c := (*b.turnVia.Load())[addr]; c != nil {
		return c.WriteTo(pkt, addr)
	}
	ep, err := b.inner.ParseEndpoint(addr.String())
	if err != nil {
		return err
	}
	return b.inner.Send([][]byte{pkt}, ep)
}

// BindCounters are the Bind's drop counters.
type BindCounters struct {
	UnknownSource, ControlQueueFull, UnknownKind, SendNoPath, RelayNoPeer, RelayNoPath, StreamFull uint64
	ControlRateLimited                                                                             uint64 // unauthenticated, over its source's rate

	// RelayUnauthenticated: relay frames from a sender that is not a
	// peer's proven path; RelayShort: relay frames shorter than a header.
	RelayUnauthenticated, RelayShort uint64

	// WireGuardWakes counts WireGuard peers configured on demand (not a drop).
	WireGuardWakes uint64

	// SocketLost: datagrams the UDP socket read but could not hand on
	// (cut short, or no room to split a GRO read; udpbind.Bind.Drops).
	SocketLost uint64
}

// Counters returns the drop counters.
func (b *Bind) Counters() BindCounters {
	return BindCounters{
		UnknownSource:        b.dropUnknownSrc.Load(),
		ControlQueueFull:     b.dropCtlFull.Load(),
		ControlRateLimited:   b.dropCtlLimited.Load(),
		UnknownKind:          b.dropUnknownKind.Load(),
		SendNoPath:           b.sendNoPath.Load(),
		RelayNoPeer:          b.dropRelayNoPeer.Load(),
		RelayNoPath:          b.dropRelayNoPath.Load(),
		StreamFull:           b.dropStreamFull.Load(),
		RelayUnauthenticated: b.dropRelayUnauth.Load(),
		RelayShort:           b.dropRelayShort.Load(),
		WireGuardWakes:       b.wgWakes.Load(),
		SocketLost:           socketDrops(b.inner),
	}
}

// socketDrops returns the inner bind's own count of lost datagrams, if it
// keeps one.
func socketDrops(inner conn.Bind) uint64 {
	if d, ok := inner.(interface{ Drops() uint64 }); ok {
		return d.Drops()
	}
	return 0
}

// conn.Bind methods that are not the packet path.

func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.inner.Open(port)
	if err != nil {
		return nil, 0, err
	}
	done := make(chan struct{})
	b.mu.Lock()
	b.openDone = done
	b.mu.Unlock()
	out := make([]conn.ReceiveFunc, len(fns), len(fns)+1)
	for i, fn := range fns {
		out[i] = b.makeReceive(fn)
	}
	out = append(out, b.makeStreamReceive(done))
	return out, actual, nil
}

func (b *Bind) Close() error {
	b.mu.Lock()
	if b.openDone != nil {
		close(b.openDone)
		b.openDone = nil
	}
	b.mu.Unlock()
	return b.inner.Close()
}

func (b *Bind) SetMark(mark uint32) error { return b.inner.SetMark(mark) }
func (b *Bind) BatchSize() int            { return b.inner.BatchSize() }

// ParseEndpoint accepts a node identity (64 hex digits), which is how the
// node configures every WireGuard peer, or an address for the inner bind.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if id, err := wire.ParseNodeID(s); err == nil {
		if e := b.known(id); e != nil {
			return e, nil
		}
		// A configuration queued before the peer's removal (lazywg.go):
		// an endpoint of its own, with no path, that the Bind does not
		// hold; the removal queued after it takes the WireGuard peer out.
		return &Endpoint{ID: id}, nil
	}
	return b.inner.ParseEndpoint(s)
}

var errNoPath = errors.New("no path to peer")
