package overlay

import (
	"net/netip"

	"glow/internal/wire"
	"glow/link"
)

// A peer's path is how its packets travel now: direct over UDP, over a
// stream link, relayed through a neighbour, or not at all. Its inputs live
// in the peer (guarded by Node.mu) and nowhere else:
//
//	peer.active   the proven direct address; set by a pong, cleared when
//	              its heartbeats die (lostPathLocked)
//	peer.stream   a live stream link (attachStream, detachStreamLocked)
//	peer.route    the relay route, next hop first (computeRoutesLocked);
//	              kept only for a peer that is not a neighbour
//
// choosePath derives the path from them (direct > stream > relay > none),
// and applyPathLocked publishes it to the Bind, whose Endpoint.path is only
// that published result. Whoever changes an input calls applyPathLocked;
// whoever asks how a peer is reached (status, ping, links) asks choosePath.
// applyPathLocked also keeps pathState.nbrs, the peers whose path is a
// neighbour, which flooding and gossip walk instead of every peer.

// pathState is the part of a node that knows its peers and how each is
// reached: the peers by node id and by control key, the addresses learned
// from strangers that have not answered yet, and what routes and the
// friends' prefixes routed through the TUN follow from them.
//
// Owner: Node.mu guards it; the control loop writes it (peers.go,
// routes.go, beacon.go, links.go's stream attach and detach), the API reads
// it for status, and a stream link's reader attaches its link under the
// lock. The Bind holds only what applyPathLocked publishes (atomics the
// packet path reads without a lock).
type pathState struct {
	peers        map[wire.NodeID]*peer
	byCtl        map[wire.Key]*peer
	unproven     map[netip.AddrPort]*addrCredit // addresses learned unauthenticated, not yet answering (beacon.go)
	routesDirty  bool                           // links or records changed: recompute routes
	friendRoutes []netip.Prefix                 // IPv6 prefixes of friends routed through the TUN (routeSetter, save.go)
	shadow       *shadowState                   // friends' addresses not routed (shadow.go)
	friendProbes map[[32]byte]*bucket           // per friend user, pings to its unanswered candidates (friendprobe.go)

	// nbrs holds the peers whose path is a neighbour (direct or stream
	// link: pathChoice.neighbour), a handful whatever N, so that a flood
	// or a gossip round does not walk all N peers for them. Kept by
	// notePathLocked, which applyPathLocked (every change of a path's
	// inputs goes through it) and removePeerLocked call; TestNeighbourIndex
	// checks it against a full scan.
	nbrs map[wire.NodeID]*peer
}

// pathKind is the way a peer's packets travel, best last.
type pathKind uint8

const (
	pathNone pathKind = iota
	pathRelay
	pathStream
	pathDirect
)

// String names the kind as status and ping show it: a stream link is a
// direct path too (to a neighbour), only not over UDP.
func (k pathKind) String() string {
	switch k {
	case pathDirect, pathStream:
		return "direct"
	case pathRelay:
		return "relay"
	}
	return "none"
}

// pathInputs is the part of a peer's state its path is chosen from.
type pathInputs struct {
	direct  netip.AddrPort // the proven direct address, invalid when there is none or it died
	stream  *link.Stream   // a live stream link, or nil
	streamQ chan<- []byte  // the stream's control queue
	route   []wire.NodeID  // relay route, next hop first and the peer last; nil when none
}

// pathChoice is a peer's path as chosen from its inputs.
type pathChoice struct {
	kind    pathKind
	direct  netip.AddrPort // pathDirect: the peer's address
	stream  *link.Stream   // pathStream: the link
	streamQ chan<- []byte  // pathStream: its control queue
	via     wire.NodeID    // pathRelay: the next hop
}

// neighbour reports whether the path reaches the peer without a relay.
func (c pathChoice) neighbour() bool { return c.kind == pathDirect || c.kind == pathStream }

// choosePath chooses a peer's path: a live direct address first, then a
// stream link (UDP is preferred whenever it works), then the relay route's
// next hop; a route shorter than a hop and the peer is none.
func choosePath(in pathInputs) pathChoice {
	switch {
	case in.direct.IsValid():
		return pathChoice{kind: pathDirect, direct: in.direct}
	case in.stream != nil:
		return pathChoice{kind: pathStream, stream: in.stream, streamQ: in.streamQ}
	case len(in.route) >= 2:
		return pathChoice{kind: pathRelay, via: in.route[0]}
	}
	return pathChoice{kind: pathNone}
}

// pathInputs returns the inputs of p's path.
func (p *peer) pathInputs() pathInputs {
	return pathInputs{direct: p.active, stream: p.stream, streamQ: p.streamQ, route: p.route}
}

// path returns p's path as chosen from its state.
func (p *peer) path() pathChoice { return choosePath(p.pathInputs()) }

// applyPathLocked publishes p's path to the Bind: the one place that does.
// On an error (an address the inner bind cannot parse, a next hop without
// a path) the published path stays as it was, and the caller restores the
// input it changed. Applying an unchanged path is a no-op.
func (n *Node) applyPathLocked(p *peer) error {
	id := p.cert.Node
	if n.paths.peers[id] != p {
		// Removed, or replaced by another node's peer (new keys:
		// addPeerLocked), and changed late (a stream reader ending): the
		// Bind's endpoint for id is no longer p's.
		return nil
	}
	defer n.notePathLocked(p) // from the inputs, applied or not: the caller may keep them
	switch c := p.path(); c.kind {
	case pathDirect:
		return n.bind.SetDirect(id, c.direct)
	case pathStream:
		n.bind.SetStream(id, c.stream, c.streamQ)
	case pathRelay:
		return n.bind.SetRelay(id, c.via)
	default:
		n.bind.ClearPath(id)
	}
	return nil
}

// notePathLocked puts p in pathState.nbrs or takes it out, as its path's
// inputs now say. A peer removed (or replaced by a new one of the same
// node) is left alone: a stream's reader may detach it late.
func (n *Node) notePathLocked(p *peer) {
	id := p.cert.Node
	if n.paths.peers[id] != p {
		return
	}
	if !p.path().neighbour() {
		delete(n.paths.nbrs, id)
		return
	}
	if n.paths.nbrs == nil {
		n.paths.nbrs = map[wire.NodeID]*peer{}
	}
	n.paths.nbrs[id] = p
}
