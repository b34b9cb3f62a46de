package overlay

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"glow/internal/wire"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
	"glow/relay"
)

// The control plane's timers under a synthetic clock (STYLE habit 10).
//
// A clockRig is a node built without any goroutine: no control loop, no
// WireGuard device, no socket. Its Bind sends into a sentLog, which keeps
// every datagram, and the test plays the control loop: it calls the tick
// functions (tickPeersLocked, paceFragmentsLocked, trimWG ...) with a now it
// chooses and answers with packets sealed as the peer would seal them. So a
// test states what the node sends at each instant and when it gives up,
// without waiting on the wall clock, and holds whether the loop calls the
// tick functions every 250 ms or at their deadlines.

// sentLog is an inner conn.Bind that sends nowhere and keeps each datagram
// with its destination.
type sentLog struct {
	mu   sync.Mutex
	sent []sentPkt
}

type sentPkt struct {
	at  time.Time // by the clock Send reads: synctest's, in a bubble
	to  netip.AddrPort
	pkt []byte
}

var _ conn.Bind = (*sentLog)(nil)

func (s *sentLog) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	return nil, max(port, 1), nil
}
func (s *sentLog) Close() error         { return nil }
func (s *sentLog) SetMark(uint32) error { return nil }
func (s *sentLog) BatchSize() int       { return 1 }

func (s *sentLog) Send(bufs [][]byte, ep conn.Endpoint) error {
	to, _ := netip.ParseAddrPort(ep.DstToString())
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range bufs {
		s.sent = append(s.sent, sentPkt{now, to, append([]byte(nil), b...)})
	}
	return nil
}

func (s *sentLog) ParseEndpoint(str string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(str)
	if err != nil {
		return nil, err
	}
	return &conn.StdNetEndpoint{AddrPort: ap}, nil
}

// take returns the datagrams sent since the last take.
func (s *sentLog) take() []sentPkt {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sent
	s.sent = nil
	return out
}

// rigPeer is another node as the rig plays it.
type rigPeer struct {
	name   string
	keys   *member.NodeKeys
	cert   *member.Cert
	shared *[32]byte // its side of the control box key with the rig's node
	epoch  uint64
	seq    uint64
}

// rigMsg is one control message the node sent, opened as its peer would.
type rigMsg struct {
	at      time.Time
	peer    string         // the peer it is sealed to
	to      netip.AddrPort // where it went (the next hop's address when relayed)
	relayed bool
	msg     any // pingMsg, pongMsg, []DigestEntry, ...
}

type clockRig struct {
	t     *testing.T
	n     *Node
	log   *sentLog
	user  *member.UserKey
	now   time.Time
	peers map[string]*rigPeer
	byID  map[wire.NodeID]*rigPeer
	msgs  []rigMsg // everything sent so far, opened
}

// newClockRig builds node "a" of a user with the named peers (of the same
// user), at a synthetic now that starts at the wall clock's (certificates
// and epochs need a plausible time; nothing reads the wall clock after).
func newClockRig(t *testing.T, peers ...string) *clockRig {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	u := membertest.NewUser(t, "alice")
	keys, err := member.NewNodeKeys()
	if err != nil {
		t.Fatal(err)
	}
	cert := rigCert(u, keys, "a", now, true)
	log := &sentLog{}
	n := &Node{
		cfg:  Config{HostAddrs: func() []netip.Addr { return nil }},
		keys: keys, id: keys.ID(), ctlPub: keys.CtlPublic(),
		mem:     membership{cert: cert, user: u},
		logf:    func(string, ...any) {},
		paths:   pathState{peers: map[wire.NodeID]*peer{}, byCtl: map[wire.Key]*peer{}},
		dropCtl: map[string]uint64{},
		adm:     admission{pendingFriend: map[wire.Key]chan friendAnswer{}, joinAnswers: map[netip.AddrPort]int{}},
		lnk:     linkState{links: map[string]*configuredLink{}},
		done:    make(chan struct{}),
	}
	n.ctlq = newCtlQueues()
	n.fwd = relay.New(relay.Limits{})
	n.bind = NewBind(log, n.id, n.fwd, n.ctlq)
	n.mem.store = member.NewStore(cert.User[:])
	n.adm.invites = &member.Invites{ByID: map[[16]byte]*member.PendingInvite{}} // none
	if _, err := n.mem.store.AddCert(cert, now); err != nil {
		t.Fatal(err)
	}
	r := &clockRig{t: t, n: n, log: log, user: u, now: now, peers: map[string]*rigPeer{}, byID: map[wire.NodeID]*rigPeer{}}
	for _, name := range peers {
		k, err := member.NewNodeKeys()
		if err != nil {
			t.Fatal(err)
		}
		c := rigCert(u, k, name, now, false)
		if _, err := n.mem.store.AddCert(c, now); err != nil {
			t.Fatal(err)
		}
		p := &rigPeer{name: name, keys: k, cert: c, shared: sharedKey(k.Ctl, n.ctlPub), epoch: newEpoch(now)}
		r.peers[name], r.byID[c.Node] = p, p
		n.mu.Lock()
		n.addPeerLocked(c, now)
		n.mu.Unlock()
	}
	return r
}

func rigCert(u *member.UserKey, k *member.NodeKeys, name string, now time.Time, admin bool) *member.Cert {
	v4, _ := member.AllocIPv4(k.ID(), nil)
	c := &member.Cert{Node: k.ID(), Name: name, WG: k.WGPublic(), Ctl: k.CtlPublic(), IPv4: v4,
		IPv6: member.NodeAddr6(u.Public(), k.ID()), Admin: admin,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}
	member.SignCert(u, c)
	return c
}

// peer returns the node's state for the named peer; the caller holds n.mu.
func (r *clockRig) peer(name string) *peer { return r.n.paths.peers[r.peers[name].cert.Node] }

// locked runs f with the node's lock held.
func (r *clockRig) locked(f func()) {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	f()
}

// tickAt moves the clock to at (never back) and runs the peers' timers.
func (r *clockRig) tickAt(at time.Time) {
	r.t.Helper()
	if at.Before(r.now) {
		r.t.Fatalf("clock set back from %v to %v", r.now, at)
	}
	r.now = at
	r.locked(func() { r.n.tickPeersLocked(at) })
	r.collect()
}

// run ticks every step from now (exclusive) to until (inclusive), calling
// each (if not nil) before every tick, as traffic or answers would arrive.
func (r *clockRig) run(until time.Time, step time.Duration, each func(now time.Time)) {
	r.t.Helper()
	for at := r.now.Add(step); !at.After(until); at = at.Add(step) {
		r.now = at
		if each != nil {
			each(at)
		}
		r.tickAt(at)
	}
}

// collect opens what the node sent since the last call.
func (r *clockRig) collect() {
	for _, s := range r.log.take() {
		pkt, relayed := s.pkt, false
		if wire.Classify(pkt) == wire.KindRelay && len(pkt) > wire.RelayHeaderLen {
			pkt, relayed = pkt[wire.RelayHeaderLen:], true
		}
		if wire.Classify(pkt) == wire.KindJoin && len(pkt) > joinViaOverhead {
			pkt = pkt[joinViaOverhead:] // wrapped for any member (renew.go)
		}
		for _, p := range r.peers {
			m, err := openCtl(pkt, p.shared)
			if err != nil {
				continue
			}
			msg, err := parseCtl(m)
			if err != nil {
				r.t.Fatalf("node sent %s a control message that does not parse: %v", p.name, err)
			}
			r.msgs = append(r.msgs, rigMsg{at: r.now, peer: p.name, to: s.to, relayed: relayed, msg: msg})
			break
		}
	}
}

// pings returns the pings sent to the named peer (to addr, if valid) since
// from, in order.
func (r *clockRig) pings(name string, addr netip.AddrPort, from time.Time) []rigMsg {
	var out []rigMsg
	for _, m := range r.msgs {
		if _, ok := m.msg.(pingMsg); ok && m.peer == name && !m.at.Before(from) && (!addr.IsValid() || m.to == addr) {
			out = append(out, m)
		}
	}
	return out
}

// lastPing returns the newest ping to the named peer, failing if none.
func (r *clockRig) lastPing(name string) rigMsg {
	r.t.Helper()
	for _, m := range slices.Backward(r.msgs) {
		if _, ok := m.msg.(pingMsg); ok && m.peer == name {
			return m
		}
	}
	r.t.Fatalf("no ping to %s", name)
	return rigMsg{}
}

// deliver hands the node message m from the named peer, sealed and
// numbered as the peer would, as if it arrived now from addr (invalid:
// relayed).
func (r *clockRig) deliver(name string, m []byte, from netip.AddrPort) {
	p := r.peers[name]
	p.seq++
	pkt := sealCtlSeq(nil, p.keys.CtlPublic(), p.shared, m, p.epoch, p.seq)
	r.locked(func() { r.n.handleControlLocked(pkt, from, r.now) })
	r.collect()
}

// answer has the named peer answer ping (a message the node sent) now,
// from where it went (or relayed, if it went relayed).
func (r *clockRig) answer(ping rigMsg) {
	r.t.Helper()
	pm, ok := ping.msg.(pingMsg)
	if !ok {
		r.t.Fatalf("answer to %T, not a ping", ping.msg)
	}
	from := ping.to
	if ping.relayed {
		from = netip.AddrPort{}
	}
	r.deliver(ping.peer, pongMsg{TxID: pm.TxID}.marshal(), from)
}

// addCandidate makes addr a candidate of the named peer, as its signed
// record would.
func (r *clockRig) addCandidate(name string, addr netip.AddrPort) {
	r.locked(func() { r.n.addCandidatesLocked(r.peer(name), []netip.AddrPort{addr}, r.now) })
}

// direct gives the named peer a direct path at addr: the node probes its
// candidates, the peer answers from addr.
func (r *clockRig) direct(name string, addr netip.AddrPort) {
	r.t.Helper()
	r.addCandidate(name, addr)
	r.tickAt(r.now)
	probes := r.pings(name, addr, r.now)
	if len(probes) == 0 {
		r.t.Fatalf("no probe of %s at %v", name, addr)
	}
	r.answer(probes[len(probes)-1])
	var active netip.AddrPort
	r.locked(func() { active = r.peer(name).active })
	if active != addr {
		r.t.Fatalf("%s: path %v after the pong from %v", name, active, addr)
	}
}

// busy marks the named peer as carrying traffic at now (WireGuard sent to it).
func (r *clockRig) busy(name string, now time.Time) {
	r.n.bind.Peer(r.peers[name].cert.Node).lastSend.Store(now.UnixNano())
}

// publishInfo stores a signed NodeInfo of the named peer listing links to
// the named neighbours ("a" is the rig's node), as gossip would bring it.
func (r *clockRig) publishInfo(name string, links ...string) {
	r.t.Helper()
	p := r.peers[name]
	info := &member.NodeInfo{Node: p.cert.Node, Seq: uint64(r.now.UnixNano())}
	for _, l := range links {
		id := r.n.id
		if l != "a" {
			id = r.peers[l].cert.Node
		}
		info.Links = append(info.Links, member.LinkInfo{Node: id, Cost: 10})
	}
	member.SignInfo(p.keys.Sign, info)
	r.locked(func() {
		if _, err := r.n.mem.store.AddInfo(info); err != nil {
			r.t.Fatal(err)
		}
		r.n.paths.routesDirty = true
	})
}

// intervals returns the gaps between consecutive messages.
func intervals(ms []rigMsg) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(ms); i++ {
		out = append(out, ms[i].at.Sub(ms[i-1].at))
	}
	return out
}

// offsets returns each message's time after t0.
func offsets(ms []rigMsg, t0 time.Time) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = m.at.Sub(t0)
	}
	return out
}
