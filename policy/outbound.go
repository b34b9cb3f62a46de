package policy

import "time"

// Outbound: packets this node sends into the overlay, read from the TUN
// device before encryption. Outbound never refuses a well-formed packet;
// its job is to remember flows so that their replies pass Inbound:
//
//	decode    as for Inbound; malformed packets drop
//	fragment  later fragments pass without a look
//	icmp      an echo request records an echo flow; nothing else records
//	flow      a known flow is refreshed and keeps its initiator; a new one
//	          is recorded with who initiated it (below)
//
// Who initiated a new flow: a TCP SYN is ours and a SYN-ACK is theirs. For
// anything else (UDP, or TCP picked up mid-stream after its entry expired)
// the packet may be our reply to a flow the remote opened. If the rules let
// the remote open exactly that flow, it is recorded as theirs, so its
// packets stay subject to the rules; otherwise it is ours. A reply of this
// node therefore never turns a remote-opened flow into a "reply" pass that
// would outlive the rule, unless its entry was evicted and the rule
// removed before this node sent again.

// Outbound records packet pkt, leaving this node at time now, and says
// whether it may leave (every well-formed packet may).
func (f *Filter) Outbound(pkt []byte, now time.Time) Verdict {
	return f.verdict(f.outbound(pkt, now.UnixNano()))
}

func (f *Filter) outbound(b []byte, now int64) Reason {
	var p packet
	if !p.decode(b, false) {
		return ReasonMalformed
	}
	if p.fragOff != 0 {
		return ReasonOutbound
	}
	if p.isICMP() {
		if p.icmpKind() == icmpEchoRequest {
			f.flows.add(p.key(false), now, int64(f.opts.ICMPTimeout), true, false)
		}
		return ReasonOutbound
	}
	k := p.key(false)
	ttl, closing := f.flowTTL(&p)
	if found, _ := f.flows.touch(k, now, ttl, closing); found {
		return ReasonOutbound
	}
	local := true
	switch {
	case p.proto == ipProtoTCP && p.tcpFlags&(tcpSYN|tcpACK) == tcpSYN:
		// We open a connection.
	case p.proto == ipProtoTCP && p.tcpFlags&(tcpSYN|tcpACK) == tcpSYN|tcpACK:
		local = false // We accept one.
	default:
		r := f.rules.Load()
		if peer, ok := r.dir.Lookup(p.dstAddr()); ok && peer.User != r.owner && r.allowSelf(&peer, p.proto, p.sport) {
			local = false
		}
	}
	f.flows.add(k, now, ttl, local, closing)
	return ReasonOutbound
}
