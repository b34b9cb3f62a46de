package policy

import "time"

// Inbound: packets that arrive from the overlay, decrypted, on their way
// to the operating system. One packet goes through these stages in order,
// on the caller's goroutine, reading the caller's buffer and never keeping
// it:
//
//	decode     parse IPv4/IPv6, extension headers, fragment and L4 headers
//	identify   Directory.Lookup(source address); unknown sources drop
//	own        the owner's own nodes pass (ok-own)
//	dst        others reach this node's own overlay addresses only
//	           (wrong-destination), never another of its own, and an
//	           address it forwards to only where a route or exit rule
//	           names this node (Rules.allowForward)
//	fragment   later fragments pass only after an allowed first fragment
//	icmp       echo replies need our echo request; errors need a known flow
//	flow       replies to flows this node initiated pass (ok-reply);
//	           everything else, including packets of flows the remote side
//	           opened earlier, is checked against the rules now
//	record     a newly allowed remote flow and first fragment are remembered

// Inbound decides whether packet pkt, arriving from the overlay at time
// now, may reach this node. It never panics, whatever pkt holds.
func (f *Filter) Inbound(pkt []byte, now time.Time) Verdict {
	return f.verdict(f.inbound(pkt, now.UnixNano()))
}

func (f *Filter) inbound(b []byte, now int64) Reason {
	var p packet
	if !p.decode(b, false) {
		return ReasonMalformed
	}
	r := f.rules.Load()
	src, ok := r.dir.Lookup(p.srcAddr())
	if !ok || src.User == "" {
		return ReasonUnknownSource
	}
	if src.User == r.owner {
		return ReasonOwn
	}
	if !r.isSelf(p.dstAddr()) && !r.allowForward(&src, p.dstAddr()) {
		return ReasonWrongDst
	}
	if p.fragOff != 0 {
		if f.frags.has(p.fragKey(), now) {
			return ReasonFragment
		}
		return ReasonFragmentUnmatched
	}
	reason := f.inboundFirst(&p, r, &src, now)
	if p.frag && reason.Allowed() {
		f.frags.add(p.fragKey(), now)
	}
	return reason
}

// inboundFirst decides a whole packet or the first fragment of one from a
// source that is not the owner.
func (f *Filter) inboundFirst(p *packet, r *Rules, src *Principal, now int64) Reason {
	if p.isICMP() {
		switch p.icmpKind() {
		case icmpEchoReply:
			if found, local := f.flows.touch(p.key(true), now, int64(f.opts.ICMPTimeout), false); found && local {
				return ReasonReply
			}
			return ReasonUnsolicited
		case icmpError:
			return f.inboundICMPError(p, r, now)
		}
		// Echo requests and informational messages need an icmp rule.
		if r.allowDst(src, p.dstAddr(), p.proto, 0) {
			return ReasonOK
		}
		return ReasonNotShared
	}
	k := p.key(true)
	ttl, closing := f.flowTTL(p)
	found, local := f.flows.touch(k, now, ttl, closing)
	if found && local {
		return ReasonReply
	}
	if !r.allowDst(src, p.dstAddr(), p.proto, p.dport) {
		// A remote flow whose rule is gone stays in the table as remote,
		// so that this node's own packets in it cannot make it ours.
		return ReasonNotShared
	}
	if !found {
		f.flows.add(k, now, ttl, false, closing)
	}
	return ReasonOK
}

// inboundICMPError passes an ICMP error only if the packet it quotes is
// one this node sent in a known flow, and, for a flow the remote side
// opened, only while the rules still allow that flow.
func (f *Filter) inboundICMPError(p *packet, r *Rules, now int64) Reason {
	var e packet
	if !e.decode(p.l4[8:], true) || e.v6 != p.v6 || e.fragOff != 0 || e.src != p.dst {
		return ReasonICMPErrorUnmatched
	}
	found, local := f.flows.peek(e.key(false), now)
	switch {
	case !found:
		return ReasonICMPErrorUnmatched
	case local:
		return ReasonRelated
	}
	peer, ok := r.dir.Lookup(e.dstAddr())
	if !ok {
		return ReasonICMPErrorUnmatched
	}
	if peer.User == r.owner || r.allowSelf(&peer, e.proto, e.sport) {
		return ReasonRelated
	}
	return ReasonNotShared
}
