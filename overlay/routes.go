package overlay

import (
	"container/heap"
	"maps"
	"slices"
	"strings"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
)

// Routing is link state. Each node's NodeInfo lists its links (neighbours it
// has a live direct path to, with a cost); every node runs Dijkstra over the
// graph of the records it holds and keeps, for each peer it cannot reach
// directly, the route through its neighbours. An edge counts only when both
// ends list it, so a one-sided or stale record cannot pull traffic into a
// black hole. The Bind sends such a peer's packets in relay frames to the
// route's first hop; each hop forwards by its own table (relay.Forwarder
// guards what it forwards for whom).

// linkCost turns a direct path's RTT into a routing cost. Coarse steps keep
// records from changing with every jitter of the RTT.
func linkCost(rtt time.Duration) uint16 {
	switch {
	case rtt < 2*time.Millisecond:
		return 10
	case rtt < 10*time.Millisecond:
		return 20
	case rtt < 50*time.Millisecond:
		return 50
	case rtt < 200*time.Millisecond:
		return 100
	}
	return 300
}

// costRefresh is how long a NodeInfo waits before it publishes a rise of
// link cost alone (links that come and go, and costs that fall, are
// published at once).
const costRefresh = 30 * time.Second

// stickyCost is the cost of a link whose RTT is rtt, given the cost
// published before: that one stays while rtt is within a factor 1.5 of its
// band, so that an RTT on a step's edge does not flip the cost.
func stickyCost(prev uint16, rtt time.Duration) uint16 {
	c := linkCost(rtt)
	if prev != 0 && c != prev && linkCost(rtt*2/3) <= prev && prev <= linkCost(rtt*3/2) {
		return prev
	}
	return c
}

// linksLocked lists this node's live links, ordered by node.
func (n *Node) linksLocked() []member.LinkInfo {
	var out []member.LinkInfo
	prev := map[wire.NodeID]uint16{}
	if n.mem.info != nil {
		for _, l := range n.mem.info.Links {
			prev[l.Node] = l.Cost
		}
	}
	for id, p := range n.paths.nbrs { // a link is a neighbour's path
		switch p.path().kind {
		case pathDirect:
			out = append(out, member.LinkInfo{Node: id, Cost: stickyCost(prev[id], p.costRTT())})
		case pathStream:
			cost := uint16(costStream)
			if strings.HasPrefix(p.streamName, "ssh") {
				cost = costSSH
			}
			out = append(out, member.LinkInfo{Node: id, Cost: cost})
		}
	}
	slices.SortFunc(out, func(a, b member.LinkInfo) int { return compareID(a.Node, b.Node) })
	if len(out) > member.MaxLinks {
		out = out[:member.MaxLinks]
	}
	return out
}

// costFell reports whether a link of now costs less than in was (both
// list the same nodes in the same order).
func costFell(was, now []member.LinkInfo) bool {
	for i := range min(len(was), len(now)) {
		if now[i].Cost < was[i].Cost {
			return true
		}
	}
	return false
}

// publishedCostLocked is the cost our NodeInfo gives the link to id (0:
// none).
func (n *Node) publishedCostLocked(id wire.NodeID) uint16 {
	if n.mem.info != nil {
		for _, l := range n.mem.info.Links {
			if l.Node == id {
				return l.Cost
			}
		}
	}
	return 0
}

func compareID(a, b wire.NodeID) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

// computeRoutesLocked recomputes shortest paths and moves every peer
// without a direct path onto its best relay route (or none). It applies the
// path of every relayed peer, changed route or not, so that one follows its
// next hop's path when that changed (a relay path copies it: Bind.SetRelay).
func (n *Node) computeRoutesLocked(now time.Time) {
	n.paths.routesDirty = false
	g := n.routeGraphLocked()
	prevs := map[[32]byte]map[wire.NodeID]wire.NodeID{} // by the user of the peer: routeGraph.forUser
	for id, p := range n.paths.peers {
		if p.path().neighbour() {
			continue // over UDP or a stream link
		}
		prev, ok := prevs[p.cert.User]
		if !ok {
			prev = n.routeGraphForLocked(g, p.cert.User).shortest(n.id, wire.NodeID{})
			prevs[p.cert.User] = prev
		}
		route := routeTo(prev, n.id, id)
		if len(route) < 2 || n.paths.peers[route[0]] == nil || !n.paths.peers[route[0]].path().neighbour() {
			if p.route != nil {
				n.logf("glow: %s: no route", n.fqdnLocked(p.cert))
			}
			p.route = nil
			n.applyPathLocked(p)
			continue
		}
		old := p.route
		p.route = route
		if err := n.applyPathLocked(p); err != nil {
			p.route = old
			continue
		}
		if !slices.Equal(route, old) {
			p.hbWait = time.Time{}
			n.logf("glow: %s: relay via %v", n.fqdnLocked(p.cert), n.routeNamesLocked(p))
		}
	}
}

// routeGraph is the link graph routes are computed over: each node's links
// and their costs, as its record lists them (this node's from linksLocked).
type routeGraph map[wire.NodeID]map[wire.NodeID]uint16

// routeGraphLocked builds the graph from the records held and our links.
func (n *Node) routeGraphLocked() routeGraph {
	adj := routeGraph{}
	for _, c := range n.mem.store.Certs() {
		info := n.mem.store.Info(c.Node)
		if info == nil || c.Node == n.id {
			continue
		}
		for _, l := range info.Links {
			if adj[c.Node] == nil {
				adj[c.Node] = map[wire.NodeID]uint16{}
			}
			adj[c.Node][l.Node] = l.Cost
		}
	}
	self := map[wire.NodeID]uint16{}
	for _, l := range n.linksLocked() {
		self[l.Node] = l.Cost
	}
	adj[n.id] = self
	return adj
}

// routeGraphForLocked is g less the nodes a route to a node of user may
// not cross: a friend's node relays for its own user only (relay.Forwarder
// drops a frame from one of our nodes that a friend's node passed on), so
// a route to our node crosses our nodes only, a route to a friend's node
// ours and that friend's. Else a friend's node whose record gives its
// links to two of our nodes a low cost (the cost is its to name) draws
// their traffic into a route that ends in a drop
// (TestAttackFriendRelaysOurTraffic).
func (n *Node) routeGraphForLocked(g routeGraph, user [32]byte) routeGraph {
	if !slices.ContainsFunc(slices.Collect(maps.Values(n.paths.peers)), func(p *peer) bool { return !n.mem.store.Own(p.cert.User) }) {
		return g // no friend's node: nothing to leave out
	}
	ok := func(id wire.NodeID) bool {
		if id == n.id {
			return true
		}
		c := n.mem.store.Cert(id)
		return c != nil && (n.mem.store.Own(c.User) || c.User == user)
	}
	out := make(routeGraph, len(g))
	for u, vs := range g {
		if !ok(u) {
			continue
		}
		m := make(map[wire.NodeID]uint16, len(vs))
		for v, c := range vs {
			if ok(v) {
				m[v] = c
			}
		}
		out[u] = m
	}
	return out
}

// shortest runs Dijkstra from src over the edges both ends list, leaving
// out the edge between src and skip (the zero id: none), and returns each
// reached node's predecessor.
func (g routeGraph) shortest(src, skip wire.NodeID) map[wire.NodeID]wire.NodeID {
	edge := func(u, v wire.NodeID) (uint16, bool) {
		if u == src && v == skip {
			return 0, false
		}
		c, ok := g[u][v]
		if !ok {
			return 0, false
		}
		if _, back := g[v][u]; !back {
			return 0, false
		}
		return c, true
	}
	// Of routes of equal cost, the one of fewer hops (each relay hop costs
	// the relay's CPU and the path's speed), then the lower previous hop.
	dist := map[wire.NodeID]int{src: 0}
	hops := map[wire.NodeID]int{src: 0}
	prev := map[wire.NodeID]wire.NodeID{}
	q := &nodeHeap{{src, 0}}
	for q.Len() > 0 {
		it := heap.Pop(q).(heapItem)
		if it.d > dist[it.id] {
			continue
		}
		for v := range g[it.id] {
			c, ok := edge(it.id, v)
			if !ok {
				continue
			}
			nd, nh := it.d+int(c), hops[it.id]+1
			d, seen := dist[v]
			if !seen || nd < d || nd == d && (nh < hops[v] || nh == hops[v] && compareID(it.id, prev[v]) < 0) {
				dist[v], hops[v], prev[v] = nd, nh, it.id
				heap.Push(q, heapItem{v, nd})
			}
		}
	}
	return prev
}

// routeTo is the route from src to id by prev (shortest), next hop first
// and id last: nil when id was not reached or the route is longer than the
// hop limit.
func routeTo(prev map[wire.NodeID]wire.NodeID, src, id wire.NodeID) []wire.NodeID {
	if _, ok := prev[id]; !ok {
		return nil
	}
	var route []wire.NodeID
	for v := id; v != src; v = prev[v] {
		route = append(route, v)
		if len(route) > wire.DefaultHopLimit {
			return nil
		}
	}
	slices.Reverse(route)
	return route
}

// routeNamesLocked names the relay nodes of p's route, in order.
func (n *Node) routeNamesLocked(p *peer) []string { return n.relayNamesLocked(p.route) }

// relayNamesLocked names the relay nodes of route, in order.
func (n *Node) relayNamesLocked(route []wire.NodeID) []string {
	out := []string{}
	for _, id := range route[:max(0, len(route)-1)] {
		if c := n.mem.store.Cert(id); c != nil {
			out = append(out, c.Name)
		} else {
			out = append(out, id.String())
		}
	}
	return out
}

type heapItem struct {
	id wire.NodeID
	d  int
}

type nodeHeap []heapItem

func (h nodeHeap) Len() int           { return len(h) }
func (h nodeHeap) Less(i, j int) bool { return h[i].d < h[j].d }
func (h nodeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *nodeHeap) Push(x any)        { *h = append(*h, x.(heapItem)) }
func (h *nodeHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
