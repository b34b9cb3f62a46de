package overlay

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
)

// Attacks on the control plane from the network (issue 11 item 7, issue 12
// items 1 and 5), performed in-process over loopback.

// tapConn is a node's UDP socket (its join socket too) that keeps a copy
// of every control packet the node sends.
type tapConn struct {
	net.PacketConn
	mu  sync.Mutex
	got [][]byte
}

func (c *tapConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ctl := b
	if wire.Classify(b) == wire.KindJoin && len(b) > joinViaOverhead { // a join request, for any member to pass on
		ctl = b[joinViaOverhead:]
	}
	if wire.Classify(ctl) == wire.KindControl {
		c.mu.Lock()
		c.got = append(c.got, append([]byte(nil), ctl...))
		c.mu.Unlock()
	}
	return c.PacketConn.WriteTo(b, addr)
}

// listen returns a Config.ListenPacket on IPv4 loopback through c.
func (c *tapConn) listen(port uint16) (net.PacketConn, error) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
	c.PacketConn = pc
	return c, err
}

// captured returns the first packet c holds that opens with shared and
// holds a message of type t.
func (c *tapConn) captured(shared *[32]byte, t msgType) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, pkt := range c.got {
		if m, err := openCtl(pkt, shared); err == nil && msgType(m[0]) == t {
			return pkt
		}
	}
	return nil
}

// memberPair starts an admin node and a node that joins it (changed by
// modAdmin, modMember), and waits for a direct path both ways.
func memberPair(t *testing.T, modAdmin, modMember func(*Config)) (admin, member *Node) {
	t.Helper()
	nodes := joinedNetMod(t, 2, func(i int, c *Config) {
		if mod := []func(*Config){modAdmin, modMember}[i]; mod != nil {
			mod(c)
		}
	})
	return nodes[0], nodes[1]
}

// sink is a UDP socket on a loopback address that counts what arrives.
type sink struct {
	pc          *net.UDPConn
	pkts, bytes atomic.Int64
	ctl         atomic.Int64 // sealed control packets among them
	marks       atomic.Int64 // sinkMarkers it sent itself (drain), not counted
}

// sinkMarker is what a sink sends itself to know it has read everything
// that came before.
var sinkMarker = []byte("glow test: sink marker")

func newSink(t *testing.T, ip string) *sink {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	s := &sink{pc: pc}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == string(sinkMarker) {
				s.marks.Add(1)
				continue
			}
			s.pkts.Add(1)
			s.bytes.Add(int64(n))
			if wire.Classify(buf[:n]) == wire.KindControl {
				s.ctl.Add(1)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return s
}

func (s *sink) addr() netip.AddrPort { return s.pc.LocalAddr().(*net.UDPAddr).AddrPort() }

// drain returns once the sinks have counted every datagram that reached
// their sockets before it was called: each sends itself a marker, which
// its socket queues behind them.
func drain(t *testing.T, sinks ...*sink) {
	t.Helper()
	for _, s := range sinks {
		m0 := s.marks.Load()
		s.send(t, sinkMarker, s.addr())
		waitFor(t, 10*time.Second, fmt.Sprintf("%v to read its marker", s.addr()), func() bool { return s.marks.Load() > m0 })
	}
}

func (s *sink) send(t *testing.T, b []byte, to netip.AddrPort) {
	t.Helper()
	if _, err := s.pc.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

func loopbackAP(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
}

func dropped(n *Node, reason string) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dropCtl[reason]
}

// TestAttackControlReplay: sealed control packets a node really sent (a
// ping, a digest, a want, its join request), captured on the wire and
// replayed to their receiver from another address, must change nothing
// there: the receiver neither learns that address nor sends it anything.
func TestAttackControlReplay(t *testing.T) {
	tap, tapB := &tapConn{}, &tapConn{}
	a, b := memberPair(t, func(c *Config) { c.ListenPacket = tap.listen }, func(c *Config) { c.ListenPacket = tapB.listen })
	bAddr := loopbackAP(b.Port())

	// a sends b one message of each kind, over the path in use; b gets them.
	a.mu.Lock()
	pb := a.paths.peers[b.id]
	a.pingLocked(pb, pb.active, time.Now(), nil)
	a.sendDigestLocked(pb, pb.active)
	a.sendCtlLocked(pb, pb.active, marshalWants([]member.RecordKey{{Kind: member.KindInfo, Node: b.id}, {Kind: member.KindCert, Node: b.id}})[0])
	a.mu.Unlock()
	captured := map[string][]byte{}
	shared := sharedKey(b.keys.Ctl, a.ctlPub)
	waitFor(t, 5*time.Second, "a ping, a digest and a want on the wire", func() bool {
		for kind, typ := range map[string]msgType{"ping": msgPing, "digest": msgDigest, "want": msgWant} {
			if pkt := tap.captured(shared, typ); pkt != nil {
				captured[kind] = pkt
			}
		}
		return len(captured) == 3
	})
	// b has handled the originals: a ping sent after them over the same
	// path is answered (b's loop takes control packets in order).
	waitFor(t, 10*time.Second, "a ping from a to b after the originals", func() bool {
		r, err := a.Ping(t.Context(), "n2")
		return err == nil && r.Err == ""
	})
	// b's records move on, so the captured digest asks for them.
	b.mu.Lock()
	b.mem.info = nil
	b.refreshInfoLocked(time.Now())
	b.mu.Unlock()

	// The attacker replays each packet 10 times from its own address.
	atk := newSink(t, "127.0.0.1")
	before := dropped(b, "replay")
	const copies = 10
	for _, kind := range []string{"ping", "digest", "want"} {
		for range copies {
			atk.send(t, captured[kind], bAddr)
		}
	}
	// And b's join request, which a answered (with b's certificate).
	join := tapB.captured(sharedKey(a.keys.Ctl, b.ctlPub), msgJoinReq)
	if join == nil {
		t.Fatal("no join request captured")
	}
	atkA := newSink(t, "127.0.0.1")
	beforeA := dropped(a, "handshake-replay")
	for range copies {
		atkA.send(t, join, loopbackAP(a.Port()))
	}
	// Looked at once every replay has been taken and refused: anything b or
	// a would have sent the attacker was sent while handling them.
	waitFor(t, 30*time.Second, "b and a to refuse every replay", func() bool {
		return dropped(b, "replay")-before >= 3*copies && dropped(a, "handshake-replay")-beforeA >= copies
	})
	drain(t, atk, atkA)
	b.mu.Lock()
	pa := b.paths.peers[a.id]
	_, cand := pa.cands[atk.addr()]
	learned := b.bind.addrs[atk.addr()] != nil
	b.mu.Unlock()
	drops := dropped(b, "replay") - before
	t.Logf("replayed %d sealed packets from %v: b sent it %d packets (%d sealed, %d B), candidate %v, learned %v, counted replays %d",
		3*copies, atk.addr(), atk.pkts.Load(), atk.ctl.Load(), atk.bytes.Load(), cand, learned, drops)
	if atk.pkts.Load() != 0 || cand || learned {
		t.Errorf("a replay made b learn the attacker's address or send to it")
	}
	if drops < 3*copies {
		t.Errorf("%d replays counted, want %d", drops, 3*copies)
	}
	dropsA := dropped(a, "handshake-replay") - beforeA
	t.Logf("replayed b's join request (%d B) %d times from %v: a sent it %d packets (%d B), counted %d",
		len(join), copies, atkA.addr(), atkA.pkts.Load(), atkA.bytes.Load(), dropsA)
	if atkA.pkts.Load() != 0 || dropsA < copies {
		t.Errorf("a replayed join request was answered")
	}
	// The real sender still gets through.
	waitFor(t, 10*time.Second, "a ping from a to b after the replays", func() bool {
		r, err := a.Ping(t.Context(), "n2")
		return err == nil && r.Err == ""
	})
}

// TestAttackBeaconReflection: beacons carrying a member's certificate,
// replayed from many spoofed source addresses, must not make a node send
// those addresses more than they sent it.
func TestAttackBeaconReflection(t *testing.T) {
	a := testNode(t, "n1", func(c *Config) { c.UserName = "alice" })
	// A member a has never heard of, whose beacon the attacker captured.
	k, err := member.NewNodeKeys()
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	user := a.mem.user
	a.mu.Unlock()
	now := time.Now()
	c := &member.Cert{Node: k.ID(), Name: "laptop", WG: k.WGPublic(), Ctl: k.CtlPublic(), IPv4: netip.MustParseAddr("100.64.9.9"),
		IPv6: member.NodeAddr6(user.Public(), k.ID()), NotBefore: now, NotAfter: now.Add(time.Hour)}
	member.SignCert(user, c)
	c, _ = member.ParseCert(c.Marshal())
	member := &Node{id: k.ID(), keys: k, mem: membership{cert: c}}
	member.port.Store(9)
	beacon := member.beaconLocked()

	// The member itself sends it once; then 40 spoofed sources replay it.
	// Each step is looked at once it is done, not after a while: the
	// origin's beacon once a holds the member as a peer, the replays once a
	// has counted each (the first spoofed one is not taken as the
	// origin), and what the sources got once a probe round has passed
	// over the member's candidates after that (probedAfter) and the sinks
	// have read what reached them (drain).
	origin := newSink(t, "127.0.0.1")
	origin.send(t, beacon, loopbackAP(a.Port()))
	waitFor(t, 10*time.Second, "a to take the origin's beacon", func() bool { _, p := holds(a, k.ID()); return p })
	replays0 := dropped(a, "beacon-replay")
	var fakes []*sink
	for i := range 40 {
		s := newSink(t, netip.AddrFrom4([4]byte{127, 0, 1, byte(2 + i)}).String())
		s.send(t, beacon, loopbackAP(a.Port()))
		fakes = append(fakes, s)
	}
	waitFor(t, 10*time.Second, "a to refuse the 40 replays", func() bool { return dropped(a, "beacon-replay")-replays0 >= 40 })
	probedAfter(t, a, k.ID(), time.Now())
	drain(t, append(fakes, origin)...)
	var pkts, ctl, bytes int64
	for _, s := range fakes {
		pkts += s.pkts.Load()
		ctl += s.ctl.Load()
		bytes += s.bytes.Load()
	}
	in := int64(len(fakes) * len(beacon))
	t.Logf("%d replayed beacons of %d B (%d B in), %d counted as replays: after a probe round the node had sent the spoofed sources %d packets (%d sealed pings), %d B; ratio out/in %.2f; the origin got %d B for its %d B",
		len(fakes), len(beacon), in, dropped(a, "beacon-replay")-replays0, pkts, ctl, bytes, float64(bytes)/float64(in), origin.bytes.Load(), len(beacon))
	if bytes > in || ctl > 0 {
		t.Errorf("reflection: %d B out for %d B in, %d sealed pings to spoofed sources", bytes, in, ctl)
	}
	for _, s := range append(fakes, origin) {
		if s.bytes.Load() > int64(len(beacon)) {
			t.Errorf("%v got %d B for the %d B it sent", s.addr(), s.bytes.Load(), len(beacon))
		}
	}

	// An attacker on the path sends live beacons on from 40 other sources
	// (each one fresh): the node may probe them, but sends no source more
	// than it sent, and stops when they do not answer. Looked at once a
	// has taken all 40 (a replay of the last, from one more source, is
	// counted behind them: one queue takes every stranger's datagrams in
	// order) and a probe round has passed over them.
	var relayed []*sink
	var last []byte
	for i := range 40 {
		s := newSink(t, netip.AddrFrom4([4]byte{127, 0, 2, byte(2 + i)}).String())
		last = member.beaconLocked()
		s.send(t, last, loopbackAP(a.Port()))
		relayed = append(relayed, s)
	}
	replays0 = dropped(a, "beacon-replay")
	barrier := newSink(t, "127.0.0.1")
	waitFor(t, 10*time.Second, "a to take the 40 fresh beacons", func() bool {
		if dropped(a, "beacon-replay") > replays0 {
			return true
		}
		barrier.send(t, last, loopbackAP(a.Port())) // again: the per-source limit may refuse one
		return false
	})
	probedAfter(t, a, k.ID(), time.Now())
	drain(t, relayed...)
	bytes, ctl = 0, 0
	for _, s := range relayed {
		bytes += s.bytes.Load()
		ctl += s.ctl.Load()
		if s.bytes.Load() > int64(len(beacon)) {
			t.Errorf("%v got %d B for the %d B it sent", s.addr(), s.bytes.Load(), len(beacon))
		}
	}
	a.mu.Lock()
	cands := len(a.paths.peers[k.ID()].cands)
	a.mu.Unlock()
	t.Logf("%d fresh beacons from as many sources (%d B in): %d B out (%d sealed pings), ratio %.2f; %d candidates left",
		len(relayed), len(relayed)*len(beacon), bytes, ctl, float64(bytes)/float64(len(relayed)*len(beacon)), cands)
}

// probedAfter returns once n has run a round of probes over peer id's
// direct candidates (peers.go) that began after t: whatever that round
// sends has been sent.
func probedAfter(t *testing.T, n *Node, id wire.NodeID, after time.Time) {
	t.Helper()
	waitFor(t, 20*time.Second, "a probe round after "+after.Format("05.000"), func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		p := n.paths.peers[id]
		return p != nil && p.lastDirectProbe.After(after)
	})
}

// TestAttackEndpointPoison: a member's record naming endpoints no node
// should probe (link-local, multicast, unspecified, the receiver's own),
// and a peer's pongs naming fake addresses as where it saw us, must neither
// become candidates nor push our own endpoints out of our record.
func TestAttackEndpointPoison(t *testing.T) {
	m, v := memberPair(t, nil, nil)
	own := loopbackAP(v.Port())
	bad := []netip.AddrPort{
		netip.MustParseAddrPort("169.254.0.1:9"),
		netip.MustParseAddrPort("[fe80::1]:9"),
		netip.MustParseAddrPort("224.0.0.1:9"),
		netip.MustParseAddrPort("0.0.0.0:9"),
		netip.MustParseAddrPort("[::]:9"),
		own,
	}
	// m signs a record of its own endpoints naming them, and sends it to v.
	m.mu.Lock()
	// (a Seq ahead of any m signs meanwhile, so that v takes this one)
	info := &member.NodeInfo{Node: m.id, Seq: uint64(time.Now().Add(time.Hour).UnixNano()), Endpoints: append(slices.Clone(m.mem.info.Endpoints), bad...), Links: m.mem.info.Links}
	member.SignInfo(m.keys.Sign, info)
	pv := m.paths.peers[v.id]
	for _, msg := range marshalRecords([]recordMsg{{member.KindInfo, info.Marshal()}}) {
		m.sendCtlLocked(pv, pv.active, msg)
	}
	m.mu.Unlock()
	waitFor(t, 5*time.Second, "v to take m's new record", func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		i := v.mem.store.Info(m.id)
		return i != nil && i.Seq == info.Seq
	})
	v.mu.Lock()
	var taken []netip.AddrPort
	for _, ap := range bad {
		if _, ok := v.paths.peers[m.id].cands[ap]; ok {
			taken = append(taken, ap)
		}
	}
	v.mu.Unlock()
	t.Logf("record naming %d bad endpoints: %d became candidates %v", len(bad), len(taken), taken)
	if len(taken) > 0 {
		t.Errorf("bad endpoints became candidates: %v", taken)
	}

	// m answers 20 of v's pings saying it saw v at fake, low addresses.
	m.mu.Lock()
	pv = m.paths.peers[v.id]
	v.mu.Lock()
	pm := v.paths.peers[m.id]
	for i := range 20 {
		var tx [12]byte
		tx[0], tx[1] = 0xee, byte(i)
		pm.pings[tx] = &pendingPing{to: pm.active, sent: time.Now()}
		seen := netip.AddrPortFrom(netip.AddrFrom4([4]byte{1, 0, 0, byte(1 + i)}), 1)
		m.sendCtlLocked(pv, pv.active, pongMsg{TxID: tx, Seen: seen}.marshal())
	}
	v.mu.Unlock()
	m.mu.Unlock()
	waitFor(t, 10*time.Second, "v to take the 20 pongs", func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		for tx := range pm.pings {
			if tx[0] == 0xee {
				return false
			}
		}
		return true
	})
	v.mu.Lock()
	v.refreshInfoLocked(time.Now())
	eps := slices.Clone(v.mem.info.Endpoints)
	v.mu.Unlock()
	fake := 0
	for _, ep := range eps {
		if ep.Addr().As4()[0] == 1 {
			fake++
		}
	}
	t.Logf("after 20 pongs naming fake addresses, v publishes %d endpoints, %d fake, its own %v: %v",
		len(eps), fake, own, slices.Contains(eps, own))
	if !slices.Contains(eps, own) {
		t.Errorf("v's own endpoint %v pushed out of its record: %v", own, eps)
	}
	if fake > maxSeenHints {
		t.Errorf("%d fake endpoints published, at most %d hints allowed", fake, maxSeenHints)
	}
}
