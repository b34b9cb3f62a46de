package overlay

import (
	"container/heap"
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
	for id, p := range n.paths.peers {
		switch p.path().kind {
		case pathDirect:
			out = append(out, member.LinkInfo{Node: id, Cost: stickyCost(prev[id], p.rtt)})
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
	// Adjacency from records, keeping only edges both ends list.
	adj := map[wire.NodeID]map[wire.NodeID]uint16{}
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
	edge := func(u, v wire.NodeID) (uint16, bool) {
		c, ok := adj[u][v]
		if !ok {
			return 0, false
		}
		if _, back := adj[v][u]; !back {
			return 0, false
		}
		return c, true
	}
	dist := map[wire.NodeID]int{n.id: 0}
	prev := map[wire.NodeID]wire.NodeID{}
	q := &nodeHeap{{n.id, 0}}
	for q.Len() > 0 {
		it := heap.Pop(q).(heapItem)
		if it.d > dist[it.id] {
			continue
		}
		for v := range adj[it.id] {
			c, ok := edge(it.id, v)
			if !ok {
				continue
			}
			nd := it.d + int(c)
			if d, seen := dist[v]; !seen || nd < d || nd == d && compareID(it.id, prev[v]) < 0 {
				dist[v], prev[v] = nd, it.id
				heap.Push(q, heapItem{v, nd})
			}
		}
	}
	for id, p := range n.paths.peers {
		if p.path().neighbour() {
			continue // over UDP or a stream link
		}
		var route []wire.NodeID
		if _, ok := dist[id]; ok {
			for v := id; v != n.id; v = prev[v] {
				route = append(route, v)
				if len(route) > wire.DefaultHopLimit {
					route = nil
					break
				}
			}
			slices.Reverse(route)
		}
		if len(route) < 2 || n.paths.peers[route[0]] == nil || !n.paths.peers[route[0]].path().neighbour() {
			if p.route != nil {
				n.logf("glow: %s: no route", p.cert.FQDN())
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
			n.logf("glow: %s: relay via %v", p.cert.FQDN(), n.routeNamesLocked(p))
		}
	}
}

// routeNamesLocked names the relay nodes of p's route, in order.
func (n *Node) routeNamesLocked(p *peer) []string {
	out := []string{}
	for _, id := range p.route[:max(0, len(p.route)-1)] {
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
