package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Principal is who an overlay address belongs to, from its certificate.
type Principal struct {
	User string
	Node string
	Tags []string // tags certified for the node
}

// Directory tells the filter who owns an overlay address. The overlay only
// delivers packets whose source address belongs to the peer that sent them,
// so the answer identifies the sender. Lookup is called for every inbound
// packet: it must be cheap, must not allocate, must be safe for concurrent
// use, and must not call back into the Filter.
type Directory interface {
	Lookup(ip netip.Addr) (Principal, bool)
}

// CompileConfig says for whom a document is compiled.
type CompileConfig struct {
	Owner     string    // the user whose document it is and who owns this node
	Self      string    // this node's name; the Filter enforces rules for it
	Directory Directory // who owns each overlay address
	// Addrs are this node's overlay addresses (IPv4 and IPv6). A rule opens
	// a service on these only: another user's packet to any other address
	// (one this node routes, or another of its own) drops as
	// ReasonWrongDst, whatever the port.
	Addrs []netip.Addr
}

// Rules is a compiled, immutable policy for one node. It is safe for
// concurrent use; swap it into a running Filter with SetRules.
type Rules struct {
	owner, self string
	dir         Directory
	addrs       []netip.Addr // this node's overlay addresses
	all         []crule      // every rule, for Allow with any destination
	mine        index        // the rules whose destination includes self
	forward     []crule      // route and exit rules naming self: what others may reach through it
}

// crule is a compiled rule.
type crule struct {
	from     Peer
	members  []string // users of a group source
	to       TargetKind
	toNode   string   // TargetNode
	toNodes  []string // TargetTag: nodes of the tag
	proto    Proto
	ports    []PortRange
	fromNode string       // node constraint within the user, for PeerNode
	prefix   netip.Prefix // TargetRoute's
}

// grant is what a source may reach on this node.
type grant struct {
	node  string // required source node ("" for any node of the user)
	proto Proto
	ports []PortRange
}

// index holds the grants for one destination node by source.
type index struct {
	byUser     map[string][]grant
	byGroup    map[string][]grant
	byTag      map[string][]grant
	any        []grant
	userGroups map[string][]string // groups of each user that has a byGroup grant
}

// Compile checks doc and compiles it for the node cfg.Self of user
// cfg.Owner. doc is not retained.
func Compile(doc *Document, cfg CompileConfig) (*Rules, error) {
	if !validName(cfg.Owner) {
		return nil, fmt.Errorf("policy: compile: Owner %q is not a valid user name", cfg.Owner)
	}
	if !validName(cfg.Self) {
		return nil, fmt.Errorf("policy: compile: Self %q is not a valid node name", cfg.Self)
	}
	if cfg.Directory == nil {
		return nil, errors.New("policy: compile: Directory is nil")
	}
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("policy: compile: Addrs is empty (no rule could match a destination)")
	}
	for _, a := range cfg.Addrs {
		if !a.IsValid() || a.Zone() != "" {
			return nil, fmt.Errorf("policy: compile: Addrs: %v is not an overlay address", a)
		}
	}
	if doc == nil {
		doc = new(Document)
	}
	if err := doc.Validate(); err != nil {
		return nil, fmt.Errorf("policy: compile: %w", err)
	}
	groups := make(map[string][]string, len(doc.Groups))
	for _, g := range doc.Groups {
		groups[g.Name] = g.Members
	}
	tags := make(map[string][]string, len(doc.Tags))
	for _, t := range doc.Tags {
		tags[t.Name] = t.Nodes
	}
	r := &Rules{
		owner: cfg.Owner,
		self:  cfg.Self,
		dir:   cfg.Directory,
		addrs: unmapAll(cfg.Addrs),
		mine: index{
			byUser:     map[string][]grant{},
			byGroup:    map[string][]grant{},
			byTag:      map[string][]grant{},
			userGroups: map[string][]string{},
		},
	}
	for _, dr := range doc.Rules {
		c := crule{from: dr.From, to: dr.To.Kind, proto: dr.To.Proto, ports: slices.Clone(dr.To.Ports)}
		switch dr.From.Kind {
		case PeerGroup:
			c.members = groups[dr.From.Name]
		case PeerNode:
			c.fromNode = dr.From.Node
		}
		switch dr.To.Kind {
		case TargetNode:
			c.toNode = dr.To.Name
		case TargetTag:
			c.toNodes = tags[dr.To.Name]
		}
		if dr.To.Kind == TargetRoute || dr.To.Kind == TargetExit {
			c.toNode, c.prefix = dr.To.Name, dr.To.Prefix
			if c.toNode == cfg.Self {
				r.forward = append(r.forward, c)
			}
			continue
		}
		r.all = append(r.all, c)
		if !c.matchesDst(cfg.Self) {
			continue
		}
		g := grant{node: c.fromNode, proto: c.proto, ports: c.ports}
		switch dr.From.Kind {
		case PeerAny:
			r.mine.any = append(r.mine.any, g)
		case PeerUser, PeerNode:
			r.mine.byUser[dr.From.Name] = append(r.mine.byUser[dr.From.Name], g)
		case PeerGroup:
			r.mine.byGroup[dr.From.Name] = append(r.mine.byGroup[dr.From.Name], g)
		case PeerTag:
			r.mine.byTag[dr.From.Name] = append(r.mine.byTag[dr.From.Name], g)
		}
	}
	for name := range r.mine.byGroup {
		for _, m := range groups[name] {
			r.mine.userGroups[m] = append(r.mine.userGroups[m], name)
		}
	}
	return r, nil
}

func unmapAll(as []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, len(as))
	for i, a := range as {
		out[i] = a.Unmap()
	}
	return out
}

// isSelf reports whether dst is one of this node's overlay addresses.
func (r *Rules) isSelf(dst netip.Addr) bool {
	for _, a := range r.addrs {
		if a == dst {
			return true
		}
	}
	return false
}

// Allow is the policy as a pure decision: may src reach node dstNode of the
// owner with IP protocol proto (6 TCP, 17 UDP, 1 or 58 ICMP, other) on
// dstPort (ignored for ICMP and other protocols)? The owner's own nodes
// are always allowed (ReasonOwn); an empty Principal is ReasonUnknownSource;
// otherwise the answer is ReasonOK or ReasonNotShared.
func (r *Rules) Allow(src Principal, dstNode string, proto uint8, dstPort uint16) (bool, Reason) {
	switch {
	case src.User == "":
		return false, ReasonUnknownSource
	case src.User == r.owner:
		return true, ReasonOwn
	case dstNode == r.self:
		if r.allowSelf(&src, proto, dstPort) {
			return true, ReasonOK
		}
		return false, ReasonNotShared
	}
	for i := range r.all {
		c := &r.all[i]
		if c.matchesDst(dstNode) && c.matchesSrc(&src) && matchProto(c.proto, c.ports, proto, dstPort) {
			return true, ReasonOK
		}
	}
	return false, ReasonNotShared
}

// allowForward reports whether src, not the owner, may reach dst (not an
// address of this node) through this node: a route rule whose prefix holds
// dst, or an exit rule and a public Internet address.
func (r *Rules) allowForward(src *Principal, dst netip.Addr) bool {
	for i := range r.forward {
		c := &r.forward[i]
		if !c.matchesSrc(src) {
			continue
		}
		if c.to == TargetRoute && c.prefix.Contains(dst) || c.to == TargetExit && publicAddr(dst) {
			return true
		}
	}
	return false
}

// nonPublic are ranges IsPrivate leaves out that an exit rule does not
// open: carrier-grade NAT space (which holds the overlay's IPv4
// addresses), "this network", and IETF protocol assignments.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("192.0.0.0/24"),
}

// publicAddr reports whether a is an address of the public Internet: what
// an exit rule opens (the exit node's LANs and the overlay need route
// rules or service rules).
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsGlobalUnicast() || a.IsPrivate() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// allowDst is allowSelf for this node's own addresses and allowForward
// for the others.
func (r *Rules) allowDst(src *Principal, dst netip.Addr, proto uint8, port uint16) bool {
	if r.isSelf(dst) {
		return r.allowSelf(src, proto, port)
	}
	return r.allowForward(src, dst)
}

// allowSelf is Allow for this node and a source that is not the owner.
func (r *Rules) allowSelf(src *Principal, proto uint8, port uint16) bool {
	if matchGrants(r.mine.byUser[src.User], src.Node, proto, port) ||
		matchGrants(r.mine.any, src.Node, proto, port) {
		return true
	}
	for _, g := range r.mine.userGroups[src.User] {
		if matchGrants(r.mine.byGroup[g], src.Node, proto, port) {
			return true
		}
	}
	if len(r.mine.byTag) > 0 {
		for _, t := range src.Tags {
			if matchGrants(r.mine.byTag[t], src.Node, proto, port) {
				return true
			}
		}
	}
	return false
}

func matchGrants(gs []grant, node string, proto uint8, port uint16) bool {
	for i := range gs {
		g := &gs[i]
		if (g.node == "" || g.node == node) && matchProto(g.proto, g.ports, proto, port) {
			return true
		}
	}
	return false
}

// IP protocol numbers.
const (
	ipProtoICMP   = 1
	ipProtoTCP    = 6
	ipProtoUDP    = 17
	ipProtoICMPv6 = 58
)

func matchProto(allowed Proto, ports []PortRange, proto uint8, port uint16) bool {
	var bit Proto
	switch proto {
	case ipProtoTCP:
		bit = ProtoTCP
	case ipProtoUDP:
		bit = ProtoUDP
	case ipProtoICMP, ipProtoICMPv6:
		return allowed&ProtoICMP != 0
	default:
		return allowed&ProtoOther != 0
	}
	if allowed&bit == 0 {
		return false
	}
	if ports == nil {
		return true
	}
	for _, pr := range ports {
		if pr.First <= port && port <= pr.Last {
			return true
		}
	}
	return false
}

func (c *crule) matchesDst(node string) bool {
	switch c.to {
	case TargetAny:
		return true
	case TargetNode:
		return c.toNode == node
	case TargetTag:
		return slices.Contains(c.toNodes, node)
	}
	return false
}

func (c *crule) matchesSrc(p *Principal) bool {
	switch c.from.Kind {
	case PeerAny:
		return true
	case PeerUser:
		return p.User == c.from.Name
	case PeerNode:
		return p.User == c.from.Name && p.Node == c.fromNode
	case PeerGroup:
		return slices.Contains(c.members, p.User)
	case PeerTag:
		return slices.Contains(p.Tags, c.from.Name)
	}
	return false
}
