package overlay

import (
	"crypto/rand"
	"maps"
	"net/netip"
	"slices"
	"time"

	"glow/internal/wire"
	"glow/link"
	"glow/overlay/member"

	"golang.zx2c4.com/wireguard/device"
)

// Path timing. A direct path is confirmed by a pong and kept by heartbeat
// pings. While the peer carries traffic, heartbeats go every 300 ms and the
// path is dead once a heartbeat stays unanswered for deadActive; an idle
// peer is pinged only as often as NAT mappings need, and its path is dead
// after deadIdle. A dead direct path gives way to the best relay route at
// once, and direct probing goes on (fast for 10 s, slower for a minute, then
// only while the peer has traffic or new candidates). An idle peer on a relay
// route gets no heartbeats at all: its route's links are watched by their
// ends.
const (
	heartbeatActive = 300 * time.Millisecond
	heartbeatIdle   = 10 * time.Second
	deadActive      = 1000 * time.Millisecond
	deadIdle        = 25 * time.Second
	activeWindow    = 5 * time.Second  // traffic this recent makes a peer active
	probeEvery      = 1 * time.Second  // while a peer has no direct path, probe candidates this often
	probeIdle       = 5 * time.Second  // after 10 s in vain and without traffic, this often
	candidateTTL    = 10 * time.Minute // forget candidates not confirmed for this long
	pingTimeout     = 5 * time.Second
)

// peer is the control loop's view of another node. Guarded by Node.mu.
type peer struct {
	cert       *member.Cert
	routed     []netip.Addr   // the cert's addresses routed to the peer (shadow.go)
	subnets    []netip.Prefix // the prefixes it offers that we route to it (subnets.go)
	devices    []netip.Addr   // addresses of the devices it is the via node of, routed to it (devices.go)
	shared     *[32]byte      // control box key
	ep         *Endpoint
	cands      map[netip.AddrPort]*candidate
	pings      map[[12]byte]*pendingPing
	active     netip.AddrPort // current direct path, if valid
	rtt        time.Duration
	rtts       [3]time.Duration // the last RTT samples on the current direct path (costRTT)
	route      []wire.NodeID    // relay route when there is no direct path: next hop first, peer last
	stream     *link.Stream     // a live stream link to the peer, if any
	streamName string           // where the stream link goes
	streamQ    chan []byte      // its control queue
	hbWait     time.Time        // send time of the oldest heartbeat unanswered since the last pong
	added      time.Time        // when the peer became known
	since      time.Time        // when the current probing round started
	sums       bool             // it sent a digest summary: it gets them too (gossip.go)

	// Lower bounds that let tickPeersLocked pass a peer by without walking
	// its pings and candidates (zero: walk them): the oldest send time of
	// a ping pending, of one an API call waits for, the earliest expiry of
	// a candidate (the current path's included) and of one not the path.
	pingsFrom, replyFrom time.Time
	candsExp, candsDue   time.Time

	quality         link.Quality // RTT and loss of the heartbeats on the current path
	lastProbe       time.Time    // last heartbeat on the current path
	lastDirectProbe time.Time    // last probe of the direct candidates
	lastHeard       time.Time
	boot            [8]byte        // the peer's boot id from its pings: changes when it restarts
	bootAt          time.Time      // when boot last changed (not when first learned)
	pathAt          time.Time      // when active was last set
	spokeFrom       netip.AddrPort // where its last ping from outside active came from (roam.go)

	txEpoch, txSeq uint64         // numbering of our control packets to the peer (replay.go)
	rx             replayWindow   // freshness of its control packets to us
	beaconAt       time.Time      // time of the newest beacon taken from it
	seenUs         netip.AddrPort // where it last saw us (a pong's Seen): a hint
	seenAt         time.Time

	// Failover (failover.go): the relay route kept warm while the peer is
	// busy on a direct path, when it was last pinged and last answered, and
	// since when the direct path is suspect (zero: not).
	standby              []wire.NodeID
	standbyAt, standbyOK time.Time
	suspect              time.Time
}

type candidate struct {
	lastPong  time.Time
	learned   time.Time
	rtt       time.Duration
	unproven  bool      // learned from an unauthenticated source and never answered
	confirmed time.Time // last ping to confirm it after the peer spoke from it (roam.go)
	probes    int       // pings sent while unproven
}

// Candidates of a peer from unauthenticated sources (beacons' senders) at
// most, of its maxCandidates.
const maxUnprovenCands = 4

// maxSeenHints is how many addresses that peers say they saw us at are
// published, after the endpoints this node verified itself.
const maxSeenHints = 4

type pendingPing struct {
	to    netip.AddrPort
	sent  time.Time
	reply chan PingResult // nil for the node's own probes
	// standby: sent over the standby route (failover.go); its pong proves
	// that route, not the path it came back on.
	standby bool
}

// addPeerLocked makes c a WireGuard peer and a peer of the control loop.
func (n *Node) addPeerLocked(c *member.Cert, now time.Time) *peer {
	if c.Node == n.id {
		return nil
	}
	p := n.paths.peers[c.Node]
	if p != nil && p.cert == c {
		return p
	}
	if p != nil && (p.cert.Ctl != c.Ctl || p.cert.WG != c.WG || p.cert.User != c.User) {
		// Another node with this id (ours, whose certificate displaced a
		// friend's naming our id): nothing the old one proved (its path,
		// stream link, candidates, the Bind's learned addresses) is ours.
		n.removePeerLocked(c.Node)
		p = nil
	}
	if p == nil {
		p = &peer{cands: map[netip.AddrPort]*candidate{}, pings: map[[12]byte]*pendingPing{}, added: now, since: now,
			txEpoch: newEpoch(now)}
		p.ep = n.bind.Peer(c.Node)
		n.paths.peers[c.Node] = p
	}
	if p.cert != nil {
		n.forgetCtlLocked(p)
		if p.cert.Ctl != c.Ctl {
			p.rx = replayWindow{} // another sender now
		}
	}
	p.cert = c
	p.shared = n.peerSharedKey(c.Ctl)
	n.paths.byCtl[c.Ctl] = p
	n.bind.SetControlKey(c.Node, c.Ctl)
	// The WireGuard peer itself is configured when traffic needs it
	// (lazywg.go), with the addresses routed to it (shadow.go).
	n.wgConfigLocked(p)
	if info := n.mem.store.Info(c.Node); info != nil {
		n.addCandidatesLocked(p, info.Endpoints, now)
	}
	return p
}

func (n *Node) removePeerLocked(id wire.NodeID) {
	p := n.paths.peers[id]
	if p == nil {
		return
	}
	n.bind.sleepWG(p.ep)
	if p.stream != nil {
		p.stream.Close() // authenticated by a certificate no longer held; its reader leaves p alone (detachStreamLocked)
	}
	n.forgetCtlLocked(p)
	delete(n.paths.peers, id)
	delete(n.paths.nbrs, id)
	n.bind.RemovePeer(id)
}

// forgetCtlLocked drops p from the control keys' map, unless another peer
// holds its key now: a node of ours whose certificate displaced a friend's
// that named its keys (member.Store.keysFree) is added before the friend's
// peer is removed.
func (n *Node) forgetCtlLocked(p *peer) {
	if n.paths.byCtl[p.cert.Ctl] == p {
		delete(n.paths.byCtl, p.cert.Ctl)
	}
}

// addCandidatesLocked adds the endpoints p's signed record names.
func (n *Node) addCandidatesLocked(p *peer, eps []netip.AddrPort, now time.Time) {
	for _, ep := range eps {
		n.addCandidateLocked(p, ep, false, now)
	}
}

// addCandidateLocked makes ep a candidate of p, unless no node should
// probe it (endpointOK) or it is one of ours. Of unproven ones (from an
// unauthenticated source) p keeps the maxUnprovenCands heard of last.
func (n *Node) addCandidateLocked(p *peer, ep netip.AddrPort, unproven bool, now time.Time) *candidate {
	ep = netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())
	if !endpointOK(ep, n.loopbackLab) || n.mem.info != nil && slices.Contains(n.mem.info.Endpoints, ep) {
		n.dropCtl["endpoint-refused"]++
		return nil
	}
	if n.inTunnelLocked(ep.Addr()) {
		n.dropCtl["endpoint-in-tunnel"]++
		return nil
	}
	if c := p.cands[ep]; c != nil {
		c.learned = now
		if !unproven && c.unproven {
			c.unproven = false // the peer itself names it
			delete(n.paths.unproven, ep)
		}
		return c
	}
	if unproven {
		// At maxUnprovenCands, the one heard of longest ago gives way.
		var weak []netip.AddrPort
		for a, c := range p.cands {
			if c.unproven {
				weak = append(weak, a)
			}
		}
		if len(weak) >= maxUnprovenCands {
			old := slices.MinFunc(weak, func(a, b netip.AddrPort) int { return p.cands[a].learned.Compare(p.cands[b].learned) })
			delete(p.cands, old)
			delete(n.paths.unproven, old)
			n.dropCtl["candidate-cap"]++
		}
	}
	c := n.addCandLocked(p, ep, now)
	c.unproven = unproven
	if !p.active.IsValid() {
		// Probe the newcomer at the next tick, and keep probing for a while.
		p.lastDirectProbe, p.since = time.Time{}, now
		n.dueLocked(now)
	}
	return c
}

// endpointOK says whether any node should send to ep as a peer's endpoint:
// not loopback (unless loopback is where this node's own host addresses
// are: tests and labs), link-local, multicast, unspecified, broadcast, or
// an overlay address.
func endpointOK(ep netip.AddrPort, loopback bool) bool {
	a := ep.Addr().Unmap()
	switch {
	case !a.IsValid() || ep.Port() == 0 || a.IsUnspecified() || a.IsMulticast():
		return false
	case a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast():
		return false
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || member.IPv4Range.Contains(a):
		return false
	case a.IsLoopback():
		return loopback
	}
	return true
}

// inTunnelLocked reports whether this host routes packets for a into
// glow's own TUN: our user's overlay /48, or a prefix a peer offers that
// the kernel routes to it (subnets.go; not an exit node's default routes,
// which glow's own marked sockets bypass). The underlay must never use
// such an address: a datagram to it would travel inside the tunnel it is
// meant to carry, and a path over it would be glow inside glow. A subnet
// router's own LAN address is always in the prefix it offers, and it is
// among its endpoints.
func (n *Node) inTunnelLocked(a netip.Addr) bool {
	a = a.Unmap()
	if n.mem.cert != nil && member.UserPrefix6(n.mem.cert.User[:]).Contains(a) {
		return true
	}
	if n.rt.kernel == nil {
		return false // a userspace node's own sockets use the host's routes
	}
	// The kernel's choice: the longest prefix holding a, a network the
	// host is on winning a tie (subnetChoiceLocked takes no prefix equal
	// to one).
	best, in := -1, false
	for _, r := range n.rt.applied.Subnets {
		if r.Contains(a) && r.Bits() > best {
			best, in = r.Bits(), true
		}
	}
	for _, c := range n.rt.connected {
		if c.Contains(a) && c.Bits() >= best {
			best, in = c.Bits(), false
		}
	}
	return in
}

// dropInTunnelLocked forgets p's candidates that the kernel now routes
// into the tunnel (inTunnelLocked) and reports whether p's direct path is
// one of them.
func (n *Node) dropInTunnelLocked(p *peer) (activeIn bool) {
	for a := range p.cands {
		if !n.inTunnelLocked(a.Addr()) {
			continue
		}
		if a == p.active {
			activeIn = true
			continue
		}
		delete(p.cands, a)
		delete(n.paths.unproven, a)
	}
	return activeIn
}

// maxCandidates bounds a peer's candidates: addresses from beacons, records
// and pings, which an outsider replaying them could send from any number of
// source addresses.
const maxCandidates = 32

// addCandLocked adds ep to p's candidates (it is not one yet). At
// maxCandidates, the oldest candidate that never answered gives way (nor
// the current path); when every one has answered, the oldest answered one
// does.
func (n *Node) addCandLocked(p *peer, ep netip.AddrPort, now time.Time) *candidate {
	if len(p.cands) >= maxCandidates {
		var victim netip.AddrPort
		var vc *candidate
		for a, c := range p.cands {
			if a == p.active {
				continue
			}
			if vc == nil || evictBefore(c, vc) {
				victim, vc = a, c
			}
		}
		if vc != nil {
			delete(p.cands, victim)
			delete(n.paths.unproven, victim)
		}
	}
	c := &candidate{learned: now}
	p.cands[ep] = c
	return c
}

// evictBefore reports whether candidate c should go before vc: one that
// never answered before one that did, then the one heard of longest ago.
func evictBefore(c, vc *candidate) bool {
	if c.lastPong.IsZero() != vc.lastPong.IsZero() {
		return c.lastPong.IsZero()
	}
	return later(c.learned, c.lastPong).Before(later(vc.learned, vc.lastPong))
}

// sendCtlLocked seals m to p and sends it to addr, or over p's current
// path (direct or relayed) when addr is invalid.
func (n *Node) sendCtlLocked(p *peer, addr netip.AddrPort, m []byte) {
	pkt := n.sealCtlLocked(p, make([]byte, 0, ctlOverhead+len(m)), m)
	n.ctlSent[m[0]] += uint64(len(pkt))
	var err error
	if addr.IsValid() {
		err = n.bind.SendTo(pkt, addr)
	} else {
		err = n.bind.SendToPeer(pkt, p.cert.Node)
	}
	if err != nil {
		n.dropCtl["send-error"]++
	}
}

// sealCtlLocked appends m, sealed to p with our next sequence number, to dst.
func (n *Node) sealCtlLocked(p *peer, dst, m []byte) []byte {
	p.txSeq++
	return sealCtlSeq(dst, n.ctlPub, p.shared, m, p.txEpoch, p.txSeq)
}

// pingLocked sends a ping to addr (invalid: over the current path) and
// remembers it.
func (n *Node) pingLocked(p *peer, addr netip.AddrPort, now time.Time, reply chan PingResult) [12]byte {
	var tx [12]byte
	rand.Read(tx[:])
	tx[0] &^= 1 // not a standby probe (failover.go: standbyTx)
	p.pings[tx] = &pendingPing{to: addr, sent: now, reply: reply}
	if reply != nil {
		if p.replyFrom.IsZero() {
			p.replyFrom = now
		}
		n.dueLocked(now.Add(pingTimeout + time.Millisecond)) // its timeout answers the caller
	}
	n.sendCtlLocked(p, addr, pingMsg{TxID: tx, Boot: n.boot}.marshal())
	return tx
}

func txKey(tx [12]byte) uint32 {
	return uint32(tx[0])<<24 | uint32(tx[1])<<16 | uint32(tx[2])<<8 | uint32(tx[3])
}

// handlePongLocked confirms a candidate and perhaps makes it the path.
// from is invalid for a pong that came relayed.
func (n *Node) handlePongLocked(p *peer, m pongMsg, from netip.AddrPort, now time.Time) {
	pp := p.pings[m.TxID]
	if pp == nil {
		n.dropCtl["pong-unknown"]++
		return
	}
	delete(p.pings, m.TxID)
	rtt := now.Sub(pp.sent)
	p.lastHeard = now
	if pp.standby {
		n.standbyAnsweredLocked(p, now) // the standby route carried the ping (failover.go)
		return
	}
	p.quality.Acked(txKey(m.TxID), now)
	if !from.IsValid() {
		// Relayed: the peer is alive on its relay route.
		if !p.active.IsValid() {
			p.rtt, p.hbWait = rtt, time.Time{}
		}
		if pp.reply != nil {
			r := PingResult{Peer: n.fqdnLocked(p.cert), Path: pathRelay.String(), Via: n.routeNamesLocked(p), RTT: rtt}
			if p.stream != nil {
				// Not relayed (a peer with a stream link has no route):
				// over the link.
				r.Path, r.Via, r.Endpoint = pathStream.String(), nil, p.streamName
			}
			deliver(pp.reply, r)
		}
		return
	}
	if seen := netip.AddrPortFrom(m.Seen.Addr().Unmap(), m.Seen.Port()); endpointOK(seen, n.loopbackLab) {
		// Where the peer saw us: one hint per peer (localEndpointsLocked).
		if seen != p.seenUs {
			n.mem.infoDirty = true // perhaps a new public address: tell the peers now
		}
		p.seenUs, p.seenAt = seen, now
	}
	c := p.cands[from]
	if c == nil {
		c = n.addCandLocked(p, from, now)
	}
	if c.unproven {
		c.unproven = false // it answered: proven
		delete(n.paths.unproven, from)
	}
	c.lastPong, c.rtt = now, rtt
	n.bind.Learn(p.cert.Node, from)
	if pp.reply != nil {
		deliver(pp.reply, PingResult{Peer: n.fqdnLocked(p.cert), Path: "direct", Endpoint: from.String(), RTT: rtt})
	}
	switch {
	case !p.active.IsValid():
		n.setPathLocked(p, from, rtt, now)
	case p.active == from:
		p.hbWait = time.Time{}
		p.noteRTT(rtt)
		p.ep.directIn.Store(now.UnixNano())
		if c := n.publishedCostLocked(p.cert.Node); c != 0 && stickyCost(c, p.costRTT()) < c {
			n.mem.infoDirty = true // the link got cheaper: publish it now (refreshInfoLocked)
		}
	default:
		// Switch only for a clearly better path, so that paths do not flap,
		// or when the current one has stopped answering (the peer's NAT
		// mapping moved: roam at once rather than wait for the path to die).
		a := p.cands[p.active]
		if a == nil || p.stalled(now) || n.movedLocked(p, from) || rtt*2 < a.rtt && a.rtt-rtt > time.Millisecond {
			n.setPathLocked(p, from, rtt, now)
		}
	}
}

// noteRTT takes an RTT sample of p's direct path.
func (p *peer) noteRTT(rtt time.Duration) {
	p.rtt = rtt
	copy(p.rtts[1:], p.rtts[:])
	p.rtts[0] = rtt
}

// costRTT is the RTT the link cost is taken from: the least of the last
// samples, so that one heartbeat delayed by a busy host does not make the
// link dearer (and re-sign our NodeInfo, and route around it) while a
// lasting rise still shows within len(rtts) heartbeats.
func (p *peer) costRTT() time.Duration {
	least := p.rtt
	for _, r := range p.rtts {
		if r > 0 && r < least {
			least = r
		}
	}
	return least
}

// setPathLocked makes addr, which a pong just proved, p's direct path.
func (n *Node) setPathLocked(p *peer, addr netip.AddrPort, rtt time.Duration, now time.Time) {
	first := !p.active.IsValid()
	old, oldRoute := p.active, p.route
	p.active, p.route = addr, nil // a neighbour now: no relay route
	p.candsExp = time.Time{}      // the path's candidate now expires as the others (tickPeersLocked)
	if err := n.applyPathLocked(p); err != nil {
		p.active, p.route = old, oldRoute
		n.notePathLocked(p)
		n.logf("glow: path to %s via %v: %v", n.fqdnLocked(p.cert), addr, err)
		return
	}
	p.hbWait, p.pathAt = time.Time{}, now
	p.rtts = [3]time.Duration{}
	p.noteRTT(rtt)
	p.ep.directIn.Store(now.UnixNano()) // heard there just now
	p.lastProbe, p.quality = now, link.Quality{}
	if linkCost(rtt) > linkCost(0) {
		// One sample, perhaps slowed by both ends' setting up: confirm it
		// at the next tick rather than keep the link dear until the
		// next heartbeat (a cost that falls is published at once).
		p.lastProbe = time.Time{}
	}
	n.paths.routesDirty, n.mem.infoDirty = true, true // our links changed
	n.logf("glow: %s: direct path %v (rtt %v)", n.fqdnLocked(p.cert), addr, rtt.Round(time.Microsecond))
	if first {
		// A new neighbour: exchange records at once.
		n.sendDigestLocked(p, addr)
	}
}

// lostPathLocked drops p's direct path; the next route computation moves
// its traffic to a relay, and probing for a direct path starts again.
func (n *Node) lostPathLocked(p *peer, now time.Time) {
	n.logf("glow: %s: direct path %v lost", n.fqdnLocked(p.cert), p.active)
	p.active, p.hbWait = netip.AddrPort{}, time.Time{}
	p.candsExp = time.Time{} // the old path's candidate now expires as the others (tickPeersLocked)
	n.applyPathLocked(p)     // a stream link carries on; else none until the routes below
	p.since, p.lastProbe = now, time.Time{}
	n.paths.routesDirty, n.mem.infoDirty = true, true // our links changed
	n.computeRoutesLocked(now)                        // fail over now, not at the next tick
}

// tickPeersLocked runs heartbeats, path expiry and probing, and notes
// when each is due next (dueLocked).
func (n *Node) tickPeersLocked(now time.Time) {
	for _, p := range n.paths.peers {
		n.expirePingsLocked(p, now)
		active := now.Sub(time.Unix(0, p.ep.lastSend.Load())) < activeWindow ||
			now.Sub(time.Unix(0, p.ep.relayedIn.Load())) < activeWindow
		hb, dead := heartbeatIdle, deadIdle
		switch {
		case active:
			hb, dead = heartbeatActive, deadActive
		case !p.active.IsValid() && p.stream == nil:
			// An idle relayed peer gets no heartbeats: every link of its
			// route is watched by the link's two ends, and a dead one
			// leaves the records, and so the route, within deadIdle.
			hb = -1
		}
		n.roamLocked(p, now) // roam.go
		if p.active.IsValid() && !p.hbWait.IsZero() && now.Sub(p.hbWait) > dead {
			n.lostPathLocked(p, now)
		}
		n.tickStandbyLocked(p, active, now) // failover.go
		if !p.active.IsValid() && p.stream != nil && !p.hbWait.IsZero() && now.Sub(p.hbWait) > deadIdle {
			n.logf("glow: %s: link %s does not answer", n.fqdnLocked(p.cert), p.streamName)
			p.stream.Close() // its reader detaches it
		}
		if (p.active.IsValid() || p.route != nil || p.stream != nil) && hb > 0 {
			if now.Sub(p.lastProbe) >= hb {
				// Heartbeat on the current path (relayed when route is set).
				p.lastProbe = now
				if p.hbWait.IsZero() {
					p.hbWait = now
				}
				tx := n.pingLocked(p, p.active, now, nil)
				p.quality.Sent(txKey(tx), now)
				p.quality.Expire(now, pingTimeout)
			}
			n.dueLocked(p.lastProbe.Add(hb))
		}
		switch {
		case p.hbWait.IsZero():
		case p.active.IsValid():
			n.dueLocked(p.hbWait.Add(dead + time.Millisecond)) // the path dies then unless a pong comes
		case p.stream != nil:
			n.dueLocked(p.hbWait.Add(deadIdle + time.Millisecond))
		}
		if !p.active.IsValid() {
			// Probing for a direct path is what makes a network of N nodes
			// cost N² packets, so it is fast only while the peer is new,
			// has new candidates or carries traffic, slower for a minute,
			// and then stops until the peer has traffic or new candidates:
			// an idle node is quiet.
			every := probeEvery
			switch {
			case active:
			case now.Sub(p.since) > time.Minute:
				every = -1
			case now.Sub(p.since) > 10*time.Second:
				every = probeIdle
			}
			if every > 0 && now.Sub(p.lastDirectProbe) >= every {
				p.lastDirectProbe = now
				for addr, c := range p.cands {
					if c.unproven {
						// From an unauthenticated source: a few pings
						// within its credit, then it is given up.
						if c.probes >= maxUnprovenProbes {
							delete(p.cands, addr)
							delete(n.paths.unproven, addr)
							n.dropCtl["candidate-unanswered"]++
							continue
						}
						if !n.spendLocked(c, addr, pingSize) {
							continue
						}
						c.probes++
					} else if c.lastPong.IsZero() && !n.mem.store.Own(p.cert.User) && !n.friendProbeLocked(p.cert.User, now) {
						continue // friendprobe.go
					}
					n.pingLocked(p, addr, now, nil)
				}
			}
			if every > 0 && len(p.cands) > 0 {
				n.dueLocked(p.lastDirectProbe.Add(every))
			}
		}
		n.expireCandsLocked(p, now)
	}
}

// expirePingsLocked forgets p's pings unanswered for pingTimeout, telling
// the API calls waiting for them, and notes when the next such call times
// out. With none pending for that long (pingsFrom), it walks none: a tick
// costs O(1) a peer whatever its pings.
func (n *Node) expirePingsLocked(p *peer, now time.Time) {
	if len(p.pings) == 0 {
		p.pingsFrom, p.replyFrom = time.Time{}, time.Time{}
		return
	}
	if !p.pingsFrom.IsZero() && now.Sub(p.pingsFrom) <= pingTimeout {
		if !p.replyFrom.IsZero() {
			n.dueLocked(p.replyFrom.Add(pingTimeout + time.Millisecond)) // the oldest waiting call's timeout, at the latest
		}
		return
	}
	p.pingsFrom, p.replyFrom = time.Time{}, time.Time{}
	for tx, pp := range p.pings {
		if now.Sub(pp.sent) > pingTimeout {
			if pp.reply != nil {
				deliver(pp.reply, PingResult{Peer: n.fqdnLocked(p.cert), Err: "timeout"})
			}
			delete(p.pings, tx)
			continue
		}
		if p.pingsFrom.IsZero() || pp.sent.Before(p.pingsFrom) {
			p.pingsFrom = pp.sent
		}
		if pp.reply != nil {
			n.dueLocked(pp.sent.Add(pingTimeout + time.Millisecond))
			if p.replyFrom.IsZero() || pp.sent.Before(p.replyFrom) {
				p.replyFrom = pp.sent
			}
		}
	}
}

// expireCandsLocked forgets p's candidates (but its path) not heard of for
// candidateTTL, and notes when the next one expires. Candidates only grow
// older from when they were walked (a new one expires last), so until the
// earliest expiry then (candsExp) none is walked; a path change walks them
// again (setPathLocked, lostPathLocked).
func (n *Node) expireCandsLocked(p *peer, now time.Time) {
	if !p.candsExp.IsZero() && now.Before(p.candsExp) {
		if !p.candsDue.IsZero() {
			n.dueLocked(p.candsDue)
		}
		return
	}
	p.candsExp, p.candsDue = time.Time{}, time.Time{}
	for addr, c := range p.cands {
		exp := later(c.learned, c.lastPong).Add(candidateTTL)
		if addr != p.active && now.After(exp) {
			delete(p.cands, addr)
			delete(n.paths.unproven, addr)
			continue
		}
		if p.candsExp.IsZero() || exp.Before(p.candsExp) {
			p.candsExp = exp
		}
		if addr != p.active {
			if due := exp.Add(time.Millisecond); p.candsDue.IsZero() || due.Before(p.candsDue) {
				p.candsDue = due
			}
		}
	}
	if !p.candsDue.IsZero() {
		n.dueLocked(p.candsDue)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// localEndpointsLocked lists where this node can be reached: first the
// endpoints it verified itself (interface addresses with its port, the
// gateway's port mapping, TURN allocations), then as hints, in the room
// left and at most maxSeenHints, addresses peers saw it at (one per peer,
// those most peers agree on first). A hint never pushes out a verified
// endpoint, and an endpoint no peer should probe (endpointOK) is left out.
func (n *Node) localEndpointsLocked(now time.Time) []netip.AddrPort {
	var eps []netip.AddrPort
	add := func(ap netip.AddrPort) {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if endpointOK(ap, n.loopbackLab) && !slices.Contains(eps, ap) {
			eps = append(eps, ap)
		}
	}
	for _, a := range n.cfg.HostAddrs() {
		add(netip.AddrPortFrom(a, n.Port()))
	}
	if n.ports.mapped.IsValid() {
		add(n.ports.mapped)
	}
	for _, ap := range n.turnEndpointsLocked() {
		add(ap)
	}
	slices.SortFunc(eps, func(a, b netip.AddrPort) int { return a.Compare(b) })
	if len(eps) > member.MaxEndpoints {
		eps = eps[:member.MaxEndpoints]
	}
	// Each node of ours is one observer; a friend's nodes together are
	// one, for the address most of them name: a friend mints nodes at will
	// and each pong says what it likes (TestAttackFriendSeenVotes).
	votes := map[netip.AddrPort]int{}
	friends := map[[32]byte]map[netip.AddrPort]int{}
	for _, p := range n.paths.peers {
		if p.seenUs.IsValid() && now.Sub(p.seenAt) <= 10*time.Minute && !slices.Contains(eps, p.seenUs) {
			if n.mem.store.Own(p.cert.User) {
				votes[p.seenUs]++
				continue
			}
			if friends[p.cert.User] == nil {
				friends[p.cert.User] = map[netip.AddrPort]int{}
			}
			friends[p.cert.User][p.seenUs]++
		}
	}
	for _, seen := range friends {
		top := slices.MaxFunc(slices.Collect(maps.Keys(seen)), func(a, b netip.AddrPort) int {
			if seen[a] != seen[b] {
				return seen[a] - seen[b]
			}
			return b.Compare(a)
		})
		votes[top]++
	}
	hints := slices.Collect(maps.Keys(votes))
	slices.SortFunc(hints, func(a, b netip.AddrPort) int {
		if votes[a] != votes[b] {
			return votes[b] - votes[a]
		}
		return a.Compare(b)
	})
	eps = append(eps, hints[:min(len(hints), maxSeenHints, member.MaxEndpoints-len(eps))]...)
	slices.SortFunc(eps, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return eps
}

// deliver hands a ping result to a waiting API call without ever blocking the loop.
func deliver(ch chan PingResult, r PingResult) {
	select {
	case ch <- r:
	default:
	}
}

// noteBootLocked notices that a peer restarted (its pings carry a new boot
// id). Its WireGuard session with us died with its old process, so the
// session keys are expired here: the next packet starts a handshake at once
// instead of waiting for wireguard-go's timers to give up on the old keys.
func (n *Node) noteBootLocked(p *peer, boot [8]byte, now time.Time) {
	if boot == p.boot {
		return
	}
	old := p.boot
	p.boot = boot
	if old == ([8]byte{}) {
		return
	}
	p.bootAt = now
	if n.dev == nil { // a clock rig's node (clockrig_test.go)
		return
	}
	if wp := n.dev.LookupPeer(device.NoisePublicKey(p.cert.WG)); wp != nil {
		n.logf("glow: %s restarted; starting a new WireGuard session", n.fqdnLocked(p.cert))
		wp.ExpireCurrentKeypairs()
	}
}
