package overlay

// Failover: a busy peer's second path, kept warm, and a dead direct path
// found while traffic flows.
//
// Standby. While a peer carries traffic over a direct path, the node keeps
// a standby: the best relay route to the peer that avoids the direct link
// (routeGraph.shortest without that edge), pinged every standbyEvery
// through its first hop (a relay frame, so the ping crosses the whole
// route). The peer answers over its own path; the pong proves the route
// for standbyFresh. An idle peer has no standby, and no timer for one.
//
// Detection. The Bind notes when each peer was last heard on its direct
// path (Endpoint.directIn: WireGuard from its address, or a pong there).
// When it sends to a peer whose direct path has been silent for
// suspectAfter, it reports the peer (reportSilence, at most once per
// suspectAfter) to watchPaths, which sends a heartbeat on the direct path
// at once (if none is outstanding). If the standby is proven and that
// heartbeat, or an older one, stays unanswered for deadFast while nothing
// else comes on the direct path either, the path is dead: the traffic
// moves to the relay route (lostPathLocked) and a heartbeat over it tells
// the peer at once. A peer that hears that heartbeat (a relayed ping that is
// not a standby probe: standbyTx) while its direct path to us has been
// silent for deadFast follows onto a relay route at once, proven or not
// (heardRelayedLocked). Without a proven standby, the rules of peers.go
// hold: the path is dead deadActive after its first unanswered heartbeat.
// So a transfer stalls for about suspectAfter + deadFast and the TCP
// retransmission after it, when a second path is proven, and deadActive
// plus a tick when none is.
//
// Back to direct: as before, a peer on a relay route is probed directly,
// and the first pong from its address makes the path direct again.

import (
	"crypto/rand"
	"net/netip"
	"slices"
	"time"

	"glow/internal/wire"
)

const (
	standbyEvery = 2 * time.Second        // a busy peer's standby route is pinged this often
	standbyFresh = 3 * standbyEvery       // and counts as proven this long after a pong
	suspectAfter = 100 * time.Millisecond // a direct path silent this long while we send is suspect
	deadFastMin  = 200 * time.Millisecond // the least deadFast
)

// deadFast is how long a suspect direct path may stay silent, a heartbeat
// unanswered, before a proven standby takes its traffic: deadFastMin, or
// three round trips if longer.
func (p *peer) deadFast() time.Duration { return max(deadFastMin, 3*p.rtt) }

// directSilence is how long p's direct path has gone unheard.
func (p *peer) directSilence(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, p.ep.directIn.Load()))
}

// reportSilence tells the node, from the send path, that e's direct path
// has been silent for suspectAfter: at most once per suspectAfter, and
// never blocking (a full queue drops the report; the next send repeats it).
func (b *Bind) reportSilence(e *Endpoint, now int64) {
	if now-e.silentAt.Load() < int64(suspectAfter) {
		return
	}
	e.silentAt.Store(now)
	select {
	case b.silent <- e:
	default:
	}
}

// watchPaths handles the Bind's silence reports and the deadlines they
// set. It waits on a channel: without traffic it never wakes.
func (n *Node) watchPaths() {
	defer n.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	var armed time.Time
	for {
		var next time.Time
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case e := <-n.bind.silent:
			n.mu.Lock()
			next = n.suspectLocked(e.ID, time.Now())
			n.mu.Unlock()
		case <-t.C:
			armed = time.Time{}
			n.mu.Lock()
			next = n.checkSuspectsLocked(time.Now())
			n.mu.Unlock()
		}
		if !next.IsZero() && (armed.IsZero() || next.Before(armed)) {
			armed = next
			t.Reset(time.Until(next))
		}
	}
}

// suspectLocked notes that peer id's direct path went silent while we
// send: a heartbeat goes now (unless one is outstanding or went within
// suspectAfter), and, if the standby is not proven and was not pinged in
// the last second (a peer that was idle has none), a standby ping too. It
// returns when checkSuspectsLocked should look again (zero: not before a
// standby pong; handlePongLocked reports that).
func (n *Node) suspectLocked(id wire.NodeID, now time.Time) time.Time {
	p := n.paths.peers[id]
	if p == nil || !p.active.IsValid() || p.directSilence(now) < suspectAfter {
		return time.Time{}
	}
	if p.hbWait.IsZero() && now.Sub(p.lastProbe) >= suspectAfter {
		p.lastProbe, p.hbWait = now, now
		tx := n.pingLocked(p, p.active, now, nil)
		p.quality.Sent(txKey(tx), now)
	}
	if !n.standbyProvenLocked(p, now) && now.Sub(p.standbyAt) >= standbyEvery/2 {
		n.pingStandbyLocked(p, now)
	}
	if p.suspect.IsZero() {
		p.suspect = now
	}
	return n.suspectDueLocked(p, now)
}

// standbyAnsweredLocked notes a pong to a standby ping: the route is
// proven, and a suspect direct path may now fail over onto it (watchPaths
// looks again at once).
func (n *Node) standbyAnsweredLocked(p *peer, now time.Time) {
	p.standbyOK = now
	if !p.suspect.IsZero() {
		select {
		case n.bind.silent <- p.ep:
		default:
		}
	}
}

// suspectDueLocked is when suspect p's direct path dies unless heard from:
// zero when it cannot die fast (no proven standby, no heartbeat waiting).
func (n *Node) suspectDueLocked(p *peer, now time.Time) time.Time {
	if p.hbWait.IsZero() || !n.standbyProvenLocked(p, now) {
		return time.Time{}
	}
	heard := time.Unix(0, p.ep.directIn.Load())
	return later(p.hbWait, heard).Add(p.deadFast() + time.Millisecond)
}

// checkSuspectsLocked fails over each suspect peer whose direct path stayed
// silent for deadFast with a proven standby, forgets the suspicion of those
// heard from, and returns the next deadline (zero: none).
func (n *Node) checkSuspectsLocked(now time.Time) time.Time {
	var next time.Time
	for _, p := range n.paths.peers {
		if p.suspect.IsZero() {
			continue
		}
		due := n.suspectDueLocked(p, now)
		switch {
		case !p.active.IsValid() || p.directSilence(now) < suspectAfter:
			p.suspect = time.Time{} // heard from
		case due.IsZero():
			// No proven standby (yet): a standby pong looks again, and
			// meanwhile the heartbeats' rules hold.
		case !now.Before(due):
			p.suspect = time.Time{}
			n.failoverLocked(p, now)
		case next.IsZero() || due.Before(next):
			next = due
		}
	}
	return next
}

// standbyTx marks a standby ping: the low bit of its TxID's first byte is
// set, and clear in every other ping, so that the peer tells a probe of a
// second path from a sign that we left the direct one (the TxID is random
// otherwise, and only echoed).
func standbyTx(tx [12]byte) bool { return tx[0]&1 != 0 }

// heardRelayedLocked notes a ping that is not a standby probe (tx), or
// WireGuard, from p that came relayed: p's current path to us is a relay
// route. If our direct path to it has been silent for deadFast too, our
// traffic follows onto a relay route now, proven or not, if there is one;
// if not, the direct path gets a heartbeat now rather than at its turn.
func (n *Node) heardRelayedLocked(p *peer, tx [12]byte, now time.Time) {
	if standbyTx(tx) || !p.active.IsValid() || p.directSilence(now) < p.deadFast() {
		return
	}
	if n.standbyProvenLocked(p, now) || len(n.relayRouteLocked(p)) >= 2 {
		n.failoverLocked(p, now)
		return
	}
	n.suspectLocked(p.cert.Node, now)
}

// relayRouteLocked is the best route to p that avoids our direct link to
// it, next hop (a neighbour) first; nil when there is none.
func (n *Node) relayRouteLocked(p *peer) []wire.NodeID {
	route := routeTo(n.routeGraphForLocked(n.routeGraphLocked(), p.cert.User).shortest(n.id, p.cert.Node), n.id, p.cert.Node)
	if len(route) < 2 || n.paths.peers[route[0]] == nil || !n.paths.peers[route[0]].path().neighbour() {
		return nil
	}
	return route
}

// failoverLocked moves p's traffic from its silent direct path to its best
// relay route and heartbeats over it now: the peer hears it relayed and
// follows (heardRelayedLocked).
func (n *Node) failoverLocked(p *peer, now time.Time) {
	n.logf("glow: %s: direct path %v silent for %v; failing over", n.fqdnLocked(p.cert), p.active, p.directSilence(now).Round(time.Millisecond))
	n.lostPathLocked(p, now)
	if p.route != nil {
		p.lastProbe, p.hbWait = now, now
		tx := n.pingLocked(p, netip.AddrPort{}, now, nil)
		p.quality.Sent(txKey(tx), now)
	}
	n.dueLocked(now) // publish the lost link at once
}

// standbyProvenLocked reports whether p has a standby route that answered
// within standbyFresh and whose first hop is still a neighbour.
func (n *Node) standbyProvenLocked(p *peer, now time.Time) bool {
	if len(p.standby) < 2 || p.standbyOK.IsZero() || now.Sub(p.standbyOK) > standbyFresh {
		return false
	}
	hop := n.paths.peers[p.standby[0]]
	return hop != nil && hop.path().neighbour()
}

// tickStandbyLocked keeps busy p's standby warm: at its first heartbeat
// tick past standbyEvery, the route is recomputed (a new one is unproven)
// and pinged. A peer that is
// idle, or not on a direct path, has none. For a peer on a direct path that
// receives relayed traffic, it looks whether the peer has left the path.
func (n *Node) tickStandbyLocked(p *peer, busy bool, now time.Time) {
	if !busy || !p.active.IsValid() {
		p.standby, p.standbyOK, p.suspect = nil, time.Time{}, time.Time{}
		return
	}
	if in := time.Unix(0, p.ep.relayedIn.Load()); now.Sub(in) < activeWindow && in.After(time.Unix(0, p.ep.directIn.Load())) {
		n.heardRelayedLocked(p, [12]byte{}, now)
		if !p.active.IsValid() {
			return
		}
	}
	if now.Sub(p.standbyAt) >= standbyEvery {
		n.pingStandbyLocked(p, now)
	}
	// No deadline of its own: a busy peer's heartbeats tick often enough.
}

// pingStandbyLocked recomputes p's standby route (a new one is unproven)
// and pings over it.
func (n *Node) pingStandbyLocked(p *peer, now time.Time) {
	p.standbyAt = now
	route := n.relayRouteLocked(p)
	if !slices.Equal(route, p.standby) {
		p.standby, p.standbyOK = route, time.Time{}
	}
	if route != nil {
		n.pingViaLocked(p, route[0], now)
	}
}

// pingViaLocked sends p a standby ping in a relay frame to the neighbour
// via, which forwards it along the route.
func (n *Node) pingViaLocked(p *peer, via wire.NodeID, now time.Time) {
	var tx [12]byte
	rand.Read(tx[:])
	tx[0] |= 1 // standbyTx
	p.pings[tx] = &pendingPing{sent: now, standby: true}
	m := pingMsg{TxID: tx, Boot: n.boot}.marshal()
	frame := make([]byte, wire.RelayHeaderLen, wire.RelayHeaderLen+ctlOverhead+len(m))
	wire.PutRelayHeader(frame, wire.DefaultHopLimit, n.id.Short(), p.cert.Node.Short())
	frame = n.sealCtlLocked(p, frame, m)
	n.ctlSent[m[0]] += uint64(len(frame) - wire.RelayHeaderLen)
	if err := n.bind.SendToPeer(frame, via); err != nil {
		n.dropCtl["send-error"]++
	}
}
