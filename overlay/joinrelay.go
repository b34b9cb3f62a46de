package overlay

// Joining through any member. A joiner cannot know which of the user's nodes
// it can reach, so it sends its request, sealed to the inviter's control key
// as always, wrapped in a join-via packet to every address it has (the
// code's, LAN beacons', and those of members that reached out to it):
//
//	"GLJ" 1 | inviter control key (32) | the sealed join request (a control packet)
//
// A member that is the inviter takes the request as if it came directly. Any
// other member of the same user that knows the inviter passes the sealed
// request on in a joinFwd message to the inviter's peer, over its current
// path (direct, stream link or relays), with the joiner's address; the
// inviter answers in a joinBack message, and the member sends the sealed
// answer to that address. The member cannot open either (they are sealed
// between the joiner's and the inviter's control keys), and the inviter's
// freshness checks (replay.go) apply to the request as to a direct one.
//
// What a member does for strangers is bounded: join-via packets come
// through the per-source limit of every unauthenticated datagram
// (ctlqueue.go), and on top of it a member passes on at most joinFwdRate
// requests per second per source address and joinFwdTotal in all; it sends
// an answer back only to an address it passed a request from in the last
// joinTimeout, and only if the inviter itself sealed it.

import (
	"net/netip"
	"time"

	"glow/internal/wire"
)

const (
	msgJoinFwd  msgType = 20 // member -> inviter: a joiner's sealed request
	msgJoinBack msgType = 21 // inviter -> member: the sealed answer for the joiner

	joinViaOverhead = wire.HeaderLen + 32

	joinFwdRate    = 2  // requests passed on per second per source address
	joinFwdBurst   = 6  //
	joinFwdTotal   = 20 // requests passed on per second, all sources
	maxJoinSources = 256
)

// joinVia wraps pkt, a control packet sealed to inviter, for any member.
func joinVia(inviter wire.Key, pkt []byte) []byte {
	h := wire.Header(wire.KindJoin)
	b := append(make([]byte, 0, joinViaOverhead+len(pkt)), h[:]...)
	b = append(b, inviter[:]...)
	return append(b, pkt...)
}

// joinFwd is a join request a member passes on to the inviter; joinBack is
// the inviter's answer for the member to send to the joiner at Addr.
type (
	joinFwd struct {
		Addr netip.AddrPort
		Pkt  []byte
	}
	joinBack joinFwd
)

func (m joinFwd) marshal() []byte  { return marshalJoinRelay(msgJoinFwd, joinFwd(m)) }
func (m joinBack) marshal() []byte { return marshalJoinRelay(msgJoinBack, joinFwd(m)) }

func marshalJoinRelay(t msgType, m joinFwd) []byte {
	w := wire.Writer{B: []byte{byte(t)}}
	w.AddrPort(m.Addr)
	w.Bytes16(m.Pkt)
	return w.B
}

// parseJoinRelay reads the body of a msgJoinFwd or msgJoinBack.
func parseJoinRelay(t msgType, r *wire.Reader) any {
	m := joinFwd{Addr: r.AddrPort(), Pkt: r.Bytes16(maxCtlPacket)}
	if t == msgJoinBack {
		return joinBack(m)
	}
	return m
}

// joinRelay is a member's bookkeeping of requests it passed on.
type joinRelay struct {
	src    map[netip.Addr]*bucket    // per source address (an IPv6 /64)
	total  bucket                    // all sources
	passed map[netip.AddrPort]passed // joiners' addresses, for the answers
}

// passed is when a request from an address was passed on, and whether it
// came over a TCP connection to the link port (joinstream.go).
type passed struct {
	t      time.Time
	stream bool
}

// allow takes a token for a request from addr and remembers addr.
func (j *joinRelay) allow(addr netip.AddrPort, stream bool, now time.Time) bool {
	if j.src == nil {
		j.src, j.passed = map[netip.Addr]*bucket{}, map[netip.AddrPort]passed{}
		j.total = bucket{tokens: joinFwdTotal, last: now}
	}
	if len(j.src) >= maxJoinSources || len(j.passed) >= maxJoinSources {
		for a, b := range j.src {
			if now.Sub(b.last) > joinFwdBurst*time.Second/joinFwdRate {
				delete(j.src, a)
			}
		}
		for a, p := range j.passed {
			if now.Sub(p.t) > joinTimeout {
				delete(j.passed, a)
			}
		}
		if len(j.src) >= maxJoinSources || len(j.passed) >= maxJoinSources {
			return false
		}
	}
	key := sourceKey(addr.Addr())
	b := j.src[key]
	if b == nil {
		b = &bucket{tokens: joinFwdBurst, last: now}
		j.src[key] = b
	}
	take := func(b *bucket, rate, burst float64) bool {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
		b.last = now
		return b.tokens >= 1
	}
	if !take(b, joinFwdRate, joinFwdBurst) || !take(&j.total, joinFwdTotal, joinFwdTotal) {
		return false
	}
	b.tokens--
	j.total.tokens--
	j.passed[addr] = passed{now, stream}
	return true
}

// asked reports whether a request from addr was passed on lately, and
// whether it came over a stream.
func (j *joinRelay) asked(addr netip.AddrPort, now time.Time) (ok, stream bool) {
	p, ok := j.passed[addr]
	return ok && now.Sub(p.t) <= joinTimeout, p.stream
}

// handleJoinViaLocked takes a join-via packet from a joiner at from.
// stream: it came over a TCP connection to the link port (joinstream.go).
func (n *Node) handleJoinViaLocked(pkt []byte, from netip.AddrPort, stream bool, now time.Time) {
	if !from.IsValid() {
		n.dropCtl["join-via-relayed"]++ // only straight from a joiner
		return
	}
	if len(pkt) < joinViaOverhead+ctlOverhead || wire.Classify(pkt[joinViaOverhead:]) != wire.KindControl {
		n.dropCtl["join-via-malformed"]++
		return
	}
	inviter := wire.Key(pkt[wire.HeaderLen:joinViaOverhead])
	inner := pkt[joinViaOverhead:]
	if inviter == n.ctlPub {
		sender, _ := ctlSender(inner)
		if stream {
			n.handshakeLocked(inner, sender, from, now, func(b []byte) error { return n.bind.sendJoinConn(b, from) })
		} else {
			n.handleJoinLocked(inner, sender, from, now)
		}
		return
	}
	p := n.paths.byCtl[inviter]
	if p == nil || !p.cert.Admin || p.cert.User != n.mem.cert.User {
		n.dropCtl["join-via-unknown-inviter"]++
		return
	}
	if !n.adm.joinRelay.allow(from, stream, now) {
		n.dropCtl["join-via-rate-limited"]++
		return
	}
	n.sendCtlLocked(p, netip.AddrPort{}, joinFwd{Addr: from, Pkt: inner}.marshal())
}

// handleJoinFwdLocked is the inviter's side of a request member p passed on.
func (n *Node) handleJoinFwdLocked(p *peer, m joinFwd, now time.Time) {
	if p.cert.User != n.mem.cert.User || !m.Addr.IsValid() || wire.Classify(m.Pkt) != wire.KindControl {
		n.dropCtl["join-fwd-bad"]++
		return
	}
	sender, _ := ctlSender(m.Pkt)
	n.handshakeLocked(m.Pkt, sender, m.Addr, now, func(b []byte) error {
		n.sendCtlLocked(p, netip.AddrPort{}, joinBack{Addr: m.Addr, Pkt: b}.marshal())
		return nil
	})
}

// handleJoinBackLocked sends the inviter's answer on to the joiner.
func (n *Node) handleJoinBackLocked(p *peer, m joinBack, now time.Time) {
	sender, err := ctlSender(m.Pkt)
	asked, stream := n.adm.joinRelay.asked(m.Addr, now)
	if err != nil || sender != p.cert.Ctl || !p.cert.Admin || p.cert.User != n.mem.cert.User || !asked {
		n.dropCtl["join-back-unasked"]++
		return
	}
	if stream {
		n.bind.sendJoinConn(m.Pkt, m.Addr)
		return
	}
	n.bind.SendTo(m.Pkt, m.Addr)
}
