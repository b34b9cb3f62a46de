package overlay

import (
	"net/netip"
	"slices"
	"time"

	"glow/nat"
	"glow/overlay/member"
)

// Anti-entropy. As soon as a path to a peer is confirmed, a node sends its
// digest (which version of which record it holds). The receiver answers
// with the records it holds newer and asks (want) for those it holds
// older. A record that is new to a node is pushed at once to every other
// neighbour, so a change floods the graph in one pass; digests repair
// whatever the push missed. A record too large for one packet is
// announced instead (a digest of that one entry) and pulled by a want, so
// that it crosses to each node about once, not from every neighbour
// (fragment.go).
//
// Every gossipEvery (quietEvery once idle) a node sends each neighbour of
// its own user a summary of its digest instead (member.Summary: 64 sums,
// one packet, whatever the number of records; a digest is 41 bytes a
// record, 70 packets at 1,000 nodes). The receiver answers only for the
// ranges whose sums differ from its own, with the digest entries it holds
// there, and the exchange goes on as above; since both ends send
// summaries, a record only one end holds is found from the other's side.
// A peer gets summaries once it has sent one (a node sends one with each
// full digest), so a node that does not know them still gets full
// digests. A friend's node sees only part of our records and gets full
// digests, which are short.

func (n *Node) sendDigestLocked(p *peer, addr netip.AddrPort) {
	var d []member.DigestEntry
	for _, e := range n.mem.store.Digest() {
		if n.visibleLocked(p, e.RecordKey) {
			d = append(d, e)
		}
	}
	for _, m := range marshalDigests(d) {
		n.sendCtlLocked(p, addr, m)
	}
	if n.mem.store.Own(p.cert.User) {
		n.sendCtlLocked(p, addr, marshalSummary(member.Summarize(d)))
	}
}

// gossipLocked is the periodic anti-entropy with neighbour p (over its
// stream link if addr is invalid): a summary if p takes them, else the
// digest.
func (n *Node) gossipLocked(p *peer, addr netip.AddrPort) {
	if !p.sums || !n.mem.store.Own(p.cert.User) {
		n.sendDigestLocked(p, addr)
		return
	}
	n.sendCtlLocked(p, addr, marshalSummary(n.mem.store.Summary()))
}

// handleSummaryLocked answers a neighbour's summary with our digest
// entries in the ranges where it differs from ours. The first summary
// from p only says that p takes them: it came with p's full digest.
func (n *Node) handleSummaryLocked(p *peer, from netip.AddrPort, s member.Summary) {
	if !n.mem.store.Own(p.cert.User) {
		n.dropCtl["summary-not-own"]++ // friends exchange full digests
		return
	}
	if !p.sums {
		p.sums = true
		return
	}
	mine := n.mem.store.Summary() // kept between changes: no walk over the records
	if mine == s {
		return
	}
	d := n.mem.store.Digest()
	var diff []member.DigestEntry
	for _, e := range d {
		if b := member.SummaryBucket(e.RecordKey); mine[b] != s[b] {
			diff = append(diff, e)
		}
	}
	for _, m := range marshalDigests(diff) {
		n.sendCtlLocked(p, from, m)
	}
}

func (n *Node) handleDigestLocked(p *peer, from netip.AddrPort, d []member.DigestEntry, now time.Time) {
	var want []member.RecordKey
	var give []member.RecordKey
	for _, e := range d {
		switch have := n.mem.store.Version(e.RecordKey); {
		case e.Version > have:
			if !n.mem.frags.wantNow(e.RecordKey, e.Version, now) {
				continue // coming already from another neighbour
			}
			want = append(want, e.RecordKey)
		case e.Version < have:
			give = append(give, e.RecordKey)
		}
	}
	for _, m := range marshalWants(want) {
		n.sendCtlLocked(p, from, m)
	}
	// Newer records the peer did not ask for: large ones only announced,
	// since they may be on their way to it from another neighbour.
	n.pushRecordMsgsLocked(p, from, n.visibleRecordsLocked(p, give))
}

// sendRecordsLocked answers a want.
func (n *Node) sendRecordsLocked(p *peer, to netip.AddrPort, keys []member.RecordKey) {
	n.sendRecordMsgsLocked(p, to, n.visibleRecordsLocked(p, keys))
}

func (n *Node) visibleRecordsLocked(p *peer, keys []member.RecordKey) []recordMsg {
	var recs []recordMsg
	for _, k := range keys {
		if !n.visibleLocked(p, k) {
			continue
		}
		if raw := n.mem.store.Raw(k); raw != nil {
			recs = append(recs, recordMsg{k.Kind, raw})
		}
	}
	return recs
}

func (n *Node) handleRecordsLocked(from *peer, recs []recordMsg, now time.Time) {
	// Certificates and friend lists first: other records depend on them.
	slices.SortStableFunc(recs, func(a, b recordMsg) int { return member.RecordOrder(a.Kind) - member.RecordOrder(b.Kind) })
	var fresh []recordMsg
	certs, held := false, false
	for _, r := range recs {
		if !n.acceptableLocked(from, r) {
			n.dropCtl["record-not-theirs"]++
			continue
		}
		isNew, err := n.mem.store.Apply(r.Kind, r.Raw, now)
		if err != nil {
			n.logf("glow: record from %s rejected: %v", n.fqdnLocked(from.cert), err)
			continue
		}
		if !isNew {
			continue
		}
		fresh = append(fresh, r)
		if r.Kind == member.KindCert && member.PeekCertNode(r.Raw) != n.id {
			// Another node's certificate: what follows from the set of
			// certificates (peers displaced, names, policy, TURN
			// permissions, each O(N)) is done once for the datagrams
			// queued (flushCertsLocked), not once per certificate or
			// message: a cold start brings N of them. So are the Bind's
			// lookup maps (bind_hold.go).
			if !held {
				n.bind.Hold()
				held = true
			}
			certs = n.certPeerLocked(r.Raw, now) || certs
			continue
		}
		n.recordChangedLocked(r.Kind, r.Raw, now)
	}
	switch {
	case certs:
		n.mem.certsPending = true // the Bind released with them (flushCertsLocked)
	case held:
		n.bind.Release()
	}
	if len(fresh) == 0 {
		return
	}
	n.mem.dirty = true
	n.floodLocked(from, fresh)
}

// floodLocked pushes new records to every neighbour (direct UDP or stream
// link) but from, each seeing only what it may (visibleLocked). Peers
// reached through relays get them from their own neighbours, so a change
// crosses each link about once.
func (n *Node) floodLocked(from *peer, recs []recordMsg) {
	for _, p := range n.paths.nbrs { // not all N peers: a flood is per batch of records
		if p == from {
			continue
		}
		var vis []recordMsg
		for _, r := range recs {
			if n.visibleRawLocked(p, r) {
				vis = append(vis, r)
			}
		}
		n.pushRecordMsgsLocked(p, p.active, vis)
	}
}

// visibleLocked says whether peer p may learn the record at k. A user's
// own nodes see everything (friends' revocation lists included); a
// friend's node sees only certificates and endpoints of this user's nodes
// that the policy shares with that friend, and this user's revocation list
// (node ids, no names), so that it drops a removed node too.
func (n *Node) visibleLocked(p *peer, k member.RecordKey) bool {
	if n.mem.store.Own(p.cert.User) {
		return true
	}
	if k.Kind == member.KindRevoked {
		return n.mem.store.Own(k.Node)
	}
	if k.Kind != member.KindCert && k.Kind != member.KindInfo {
		return false
	}
	c := n.mem.store.Cert(k.Node)
	if c == nil || !n.mem.store.Own(c.User) {
		return false
	}
	// This node's own records: the friend talks to it already, so it knows them.
	return c.Node == n.id || n.sharedWithLocked(c.Name, p.cert.User)
}

func (n *Node) visibleRawLocked(p *peer, r recordMsg) bool {
	if n.mem.store.Own(p.cert.User) {
		return true // no need to parse: the user's own nodes see everything
	}
	switch r.Kind {
	case member.KindCert:
		if c, err := member.ParseCert(r.Raw); err == nil {
			return n.visibleLocked(p, member.RecordKey{Kind: member.KindCert, Node: c.Node})
		}
	case member.KindInfo:
		if i, err := member.ParseInfo(r.Raw); err == nil {
			return n.visibleLocked(p, member.RecordKey{Kind: member.KindInfo, Node: i.Node})
		}
	case member.KindRevoked:
		u, ok := member.PeekDocUser(r.Raw)
		return ok && n.visibleLocked(p, member.RecordKey{Kind: member.KindRevoked, Node: u})
	default:
		return n.mem.store.Own(p.cert.User)
	}
	return false
}

// acceptableLocked says whether a record from p may be taken at all: a
// friend's node speaks only for its own user's nodes, and brings only its
// user's revocation list among the user documents (the Store checks the
// signature, and that it revokes only that user's nodes).
func (n *Node) acceptableLocked(p *peer, r recordMsg) bool {
	if n.mem.store.Own(p.cert.User) {
		return true
	}
	switch r.Kind {
	case member.KindCert:
		c, err := member.ParseCert(r.Raw)
		return err == nil && c.User == p.cert.User
	case member.KindInfo:
		i, err := member.ParseInfo(r.Raw)
		if err != nil {
			return false
		}
		c := n.mem.store.Cert(i.Node)
		return c != nil && c.User == p.cert.User
	case member.KindRevoked:
		u, ok := member.PeekDocUser(r.Raw)
		return ok && [32]byte(u) == p.cert.User
	}
	return false
}

// recordChangedLocked applies an accepted record to peers and paths.
func (n *Node) recordChangedLocked(kind member.RecordKind, raw []byte, now time.Time) {
	switch kind {
	case member.KindCert:
		if n.mem.store.Cert(member.PeekCertNode(raw)) == nil {
			return
		}
		n.dropDisplacedLocked()
		n.certPeerLocked(raw, now)
		n.certsChangedLocked()
	case member.KindFriends, member.KindPolicy, member.KindRevoked, member.KindDevices:
		for id := range n.paths.peers {
			if n.mem.store.Cert(id) == nil {
				n.removePeerLocked(id) // a friend removed
			}
		}
		n.certsChangedLocked()
		n.docArrivedLocked(kind) // did it see this node's last change? (docmerge.go)
	case member.KindInfo:
		info := n.mem.store.Info(member.PeekInfoNode(raw)) // as just applied (and verified)
		if info == nil {
			return
		}
		if p := n.paths.peers[info.Node]; p != nil {
			n.addCandidatesLocked(p, info.Endpoints, now)
		}
		n.paths.routesDirty, n.rt.dirty = true, true
		n.permitTURNLocked()
	}
}

// certPeerLocked makes the node of an accepted certificate a peer (or
// takes our own), and reports whether the certificate is held.
func (n *Node) certPeerLocked(raw []byte, now time.Time) bool {
	c := n.mem.store.Cert(member.PeekCertNode(raw)) // as just applied (and verified)
	if c == nil {
		return false
	}
	if c.Node != n.id {
		n.addPeerLocked(c, now)
	} else {
		n.takeOwnCertLocked(now) // renewed, promoted, demoted (renew.go, admins.go)
	}
	return true
}

// dropDisplacedLocked removes the peers whose certificate a newer one
// displaced (an address conflict).
func (n *Node) dropDisplacedLocked() {
	for id := range n.paths.peers {
		if n.mem.store.Cert(id) == nil {
			n.removePeerLocked(id)
		}
	}
}

// flushCertsLocked runs certsAppliedLocked for the certificates taken
// since the last flush. The control loop calls it once its queues are
// empty (or after flushCertsEvery datagrams) and before each tick.
func (n *Node) flushCertsLocked() {
	if n.mem.certsPending {
		n.mem.certsPending = false
		n.certsAppliedLocked()
		n.bind.Release()
	}
}

// certsAppliedLocked follows up certificates taken with certPeerLocked.
func (n *Node) certsAppliedLocked() {
	n.dropDisplacedLocked()
	n.certsChangedLocked()
}

// refreshInfoLocked re-signs this node's endpoints when they changed, and
// pushes the new record to the neighbours.
func (n *Node) refreshInfoLocked(now time.Time) {
	eps := n.localEndpointsLocked(now)
	links := n.linksLocked()
	routes := n.offeredLocked()
	if n.mem.info != nil && slices.Equal(n.mem.info.Endpoints, eps) && slices.Equal(n.mem.info.Routes, routes) {
		if slices.Equal(n.mem.info.Links, links) {
			return
		}
		// Only a cost changed: every record change costs each node of the
		// network a signature check, so a cost that rises waits for
		// costRefresh. One that falls goes at once: a new link's first RTT
		// sample may be far too high (both ends were busy), and a link
		// published too dear is left out of the routes meanwhile.
		sameNodes := slices.EqualFunc(n.mem.info.Links, links, func(a, b member.LinkInfo) bool { return a.Node == b.Node })
		if sameNodes && !costFell(n.mem.info.Links, links) && now.Sub(n.mem.infoSigned) < costRefresh {
			return
		}
	}
	seq := uint64(now.UnixNano())
	if n.mem.info != nil && seq <= n.mem.info.Seq {
		seq = n.mem.info.Seq + 1
	}
	if old := n.mem.store.Info(n.id); old != nil && seq <= old.Seq {
		seq = old.Seq + 1
	}
	info := &member.NodeInfo{Node: n.id, Seq: seq, Endpoints: eps, Links: links, Routes: routes}
	member.SignInfo(n.keys.Sign, info)
	if _, err := n.mem.store.AddInfo(info); err != nil {
		n.logf("glow: own node info: %v", err)
		return
	}
	n.mem.info, n.mem.infoSigned = info, now
	n.mem.dirty = true
	n.floodLocked(nil, []recordMsg{{member.KindInfo, info.Marshal()}})
}

// handleSTUNLocked answers STUN binding requests on the glow port, so that
// any node with a public address serves its peers as a STUN server.
func (n *Node) handleSTUNLocked(b []byte, from netip.AddrPort) {
	if n.stun.HandleResponse(b, from) {
		return
	}
	resp, ok := nat.Respond(b, from)
	if !ok {
		n.dropCtl["stun-not-request"]++
		return
	}
	if err := n.bind.SendTo(resp, from); err != nil {
		n.dropCtl["send-error"]++
	}
}
