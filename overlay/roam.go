package overlay

// Roaming: following a peer whose address moved (its NAT remapped its
// port, a port clash moved it, it restarted on another port, it changed
// networks). An authenticated, fresh ping from the peer at an address that
// is not its current path's says it speaks from there now
// (peerSpokeFromLocked); the node then
//
//   - confirms the new address with a ping of its own: only a pong from an
//     address proves it (a ping's source may be a replay's);
//   - checks the current path with a heartbeat now, if none is
//     outstanding, rather than at the idle heartbeat's next turn.
//
// The path moves to the new address, once its pong came back,
//
//   - at once if the peer says it moved: it restarted since the path was
//     set (its boot id changed), or its signed info lists the new address
//     and no longer the old one (movedLocked);
//   - as soon as the current path has left a heartbeat unanswered for
//     heartbeatActive (twice its RTT if longer: stallAfter) while the new
//     address answered after it was sent
//     (roamLocked, from the tick; handlePongLocked's "stalled" rule is the
//     same test when the pong comes last).
//
// So an idle peer is followed within heartbeatActive of its first ping
// from the new address instead of after deadIdle, and a peer that merely
// speaks from a second working address (a probe, another family) does not
// move the path: its current one answers the heartbeat in time.

import (
	"net/netip"
	"slices"
	"time"
)

// peerSpokeFromLocked notes an authenticated ping from p at from, which is
// not p's current direct path (valid).
func (n *Node) peerSpokeFromLocked(p *peer, from netip.AddrPort, now time.Time) {
	p.spokeFrom = from
	if p.hbWait.IsZero() { // is the current path alive? ask now
		p.lastProbe, p.hbWait = now, now
		tx := n.pingLocked(p, p.active, now, nil)
		p.quality.Sent(txKey(tx), now)
	}
	if c := p.cands[from]; c != nil && now.Sub(c.confirmed) >= probeEvery {
		c.confirmed = now
		n.pingLocked(p, from, now, nil)
	}
	n.dueLocked(p.hbWait.Add(p.stallAfter() + time.Millisecond))
}

// roamLocked moves p's path to the address it speaks from if the current
// path stalls while that address answered since. It reports whether it
// moved.
func (n *Node) roamLocked(p *peer, now time.Time) bool {
	if !p.active.IsValid() || !p.spokeFrom.IsValid() || p.spokeFrom == p.active || p.hbWait.IsZero() {
		return false
	}
	c := p.cands[p.spokeFrom]
	if c == nil || c.unproven || c.lastPong.Before(p.hbWait) {
		return false
	}
	if !p.stalled(now) {
		n.dueLocked(p.hbWait.Add(p.stallAfter() + time.Millisecond))
		return false
	}
	n.logf("glow: %s: %v does not answer; the peer speaks from %v now", n.fqdnLocked(p.cert), p.active, p.spokeFrom)
	n.setPathLocked(p, p.spokeFrom, c.rtt, now)
	return true
}

// movedLocked reports whether a pong from from, not p's current path,
// proves p moved there: it speaks from there, and it says it moved: it
// restarted since the current path was set, or its signed info lists from
// and no longer the current path.
func (n *Node) movedLocked(p *peer, from netip.AddrPort) bool {
	if from != p.spokeFrom {
		return false
	}
	if p.bootAt.After(p.pathAt) {
		return true
	}
	info := n.mem.store.Info(p.cert.Node)
	return info != nil && slices.Contains(info.Endpoints, from) && !slices.Contains(info.Endpoints, p.active)
}

// stallAfter is how long a heartbeat on p's current path may go
// unanswered before the path counts as stalled: heartbeatActive, or twice
// the path's RTT if that is longer, so that a slow path that works is not
// left for another one.
func (p *peer) stallAfter() time.Duration { return max(heartbeatActive, 2*p.rtt) }

// stalled reports whether p's current path has left a heartbeat
// unanswered for stallAfter.
func (p *peer) stalled(now time.Time) bool {
	return !p.hbWait.IsZero() && now.Sub(p.hbWait) > p.stallAfter()
}
