package overlay

// Subnet routes and exit nodes: the prefixes a node offers and the ones it
// routes through its peers.
//
// A node offers prefixes (api.Prefs.AdvertiseRoutes; 0.0.0.0/0 and ::/0
// for an exit node) in its signed NodeInfo (NodeInfo.Routes), so every
// peer learns them by gossip. A peer that takes a prefix routes it
// through the offering node:
//
//   - WireGuard: the prefix is one of the offering peer's allowed IPs, so
//     wireguard-go picks that peer for packets to it whatever the path
//     (direct, relayed, a stream link), and accepts packets from the prefix
//     only from that peer;
//   - the TUN reader wakes the peer for it (Bind.wakeForDst, byRoute);
//   - the kernel routes it through the TUN (tun.Kernel.SetSubnetRoutes,
//     applied off Node.mu by routeApplier);
//   - the policy directory names the offering node as the owner of the
//     prefix's addresses, so replies from a LAN host pass the filter as the
//     router's.
//
// Which prefixes a node takes (subnetChoiceLocked): a peer's offered
// prefix is taken unless it is not a plain unicast prefix, overlaps the
// overlay's own ranges (member.IPv4Range, any user's /48) or a prefix this node
// offers itself, or is a network this node is directly on (the laptop at
// home keeps its LAN direct while the NAS offers that LAN to the others;
// the kernel's longest match keeps a connected network direct inside a
// wider prefix taken). Glow's own datagrams never go to an address the
// kernel routes into the tunnel (inTunnelLocked, peers.go): a subnet
// router's LAN address is among its endpoints and inside its prefix. Default routes are taken only from the exit node chosen
// (api.Prefs.ExitNode). A prefix two peers offer goes to one: a node of
// our own user before a friend's, then one with a path, then the lower
// node id.
//
// A friend's node's offer proves nothing: only the friend claims that the
// prefix is behind it, and a node that took it would send the friend our
// traffic to a public resolver, or to a part of our own LAN (by longest
// match). So a friend's routes are taken only from the friends named in
// api.Prefs.AcceptRoutesFrom (glow set --accept-routes-from bob), as
// Tailscale gives a shared machine's routes to no sharee and Linux clients
// take routes only with --accept-routes; and even then none that overlaps
// a prefix a node of our own user offers, or a network this node is
// directly on, nor one that overlaps a prefix another friend offers
// (markContested: by longest match one friend could take the other's
// traffic, and neither claim is proof). A friend's exit node is taken once
// chosen (--exit-node is the explicit choice). The friend's router still
// lets our packets through only where its policy shares the prefix with us
// (policy "allow bob -> route nas 10.71.1.0/24").
//
// The router's side (tun.Kernel.SetForwarding): while a node offers a
// prefix its kernel forwards (net.ipv4.ip_forward and
// net.ipv6.conf.all.forwarding set, their earlier values restored after)
// and glow's nftables routing table masquerades what the overlay sends out
// of other interfaces, and clamps the MSS of forwarded TCP.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"time"

	"glow/internal/wire"
	"glow/overlay/api"
	"glow/overlay/member"
)

// prefsFile holds api.Prefs in the state directory (JSON); sysctlSaved the
// forwarding sysctls' values from before the node turned them on.
const (
	prefsFile   = "prefs.json"
	sysctlSaved = "sysctl.saved"
)

var (
	defaultRoute4 = netip.MustParsePrefix("0.0.0.0/0")
	defaultRoute6 = netip.MustParsePrefix("::/0")
)

// routeEntry is one prefix routed to a peer, for the packet path.
type routeEntry struct {
	p netip.Prefix
	e *Endpoint
}

// setRoutes publishes the prefixes routed to peers (beyond their overlay
// addresses), longest first, for wakeForDst.
func (b *Bind) setRoutes(rs []routeEntry) {
	rs = slices.Clone(rs)
	slices.SortStableFunc(rs, func(a, b routeEntry) int { return b.p.Bits() - a.p.Bits() })
	b.byRoute.Store(&rs)
}

// routeFor returns the peer a prefix routed to peers holds dst, or nil.
func (b *Bind) routeFor(dst netip.Addr) *Endpoint {
	r, _ := b.routeEntryFor(dst)
	return r.e
}

// routeEntryFor returns the longest prefix routed to a peer that holds
// dst.
func (b *Bind) routeEntryFor(dst netip.Addr) (routeEntry, bool) {
	if rs := b.byRoute.Load(); rs != nil {
		for _, r := range *rs {
			if r.p.Contains(dst) {
				return r, true
			}
		}
	}
	return routeEntry{}, false
}

// routeOwner is a prefix routed to a peer, for the policy directory.
type routeOwner struct {
	p   netip.Prefix
	who netip.Addr // an overlay address of the node the prefix is routed to
}

// validPrefs checks prefs a client or a state file gave.
func validPrefs(p api.Prefs) error {
	if len(p.AdvertiseRoutes) > member.MaxRoutes-2 {
		return api.Errorf(api.CodeInvalidArgument, "--advertise-routes: at most %d prefixes", member.MaxRoutes-2)
	}
	for _, r := range p.AdvertiseRoutes {
		if err := checkOffer(r); err != nil {
			return api.Errorf(api.CodeInvalidArgument, "--advertise-routes %v: %v", r, err)
		}
	}
	if p.ExitNode != "" && !member.ValidName(firstLabel(p.ExitNode)) && len(p.ExitNode) != 64 {
		return api.Errorf(api.CodeInvalidArgument, "--exit-node %q: want a node name", p.ExitNode)
	}
	if len(p.AcceptRoutesFrom) > maxAcceptFrom {
		return api.Errorf(api.CodeInvalidArgument, "--accept-routes-from: at most %d friends", maxAcceptFrom)
	}
	for _, u := range p.AcceptRoutesFrom {
		if !member.ValidName(u) {
			return api.Errorf(api.CodeInvalidArgument, "--accept-routes-from %q: want a friend's user name", u)
		}
	}
	return nil
}

// maxAcceptFrom bounds api.Prefs.AcceptRoutesFrom.
const maxAcceptFrom = 64

// acceptsRoutesLocked reports whether this node takes the subnet routes of
// user's nodes: our own user's, and the friends named in
// api.Prefs.AcceptRoutesFrom (by the name our friend list gives their
// key, not the one their certificates claim).
func (n *Node) acceptsRoutesLocked(user [32]byte) bool {
	if n.mem.store.Own(user) {
		return true
	}
	name, ok := n.mem.store.FriendName(user)
	return ok && slices.Contains(n.rt.prefs.AcceptRoutesFrom, name)
}

func firstLabel(s string) string {
	for i := range len(s) {
		if s[i] == '.' {
			return s[:i]
		}
	}
	return s
}

// checkOffer says why a prefix may not be offered or taken as a subnet
// route, or nil.
func checkOffer(p netip.Prefix) error {
	a := p.Addr()
	switch {
	case !p.IsValid() || a.Zone() != "" || a.Is4In6():
		return errors.New("not a prefix")
	case p != p.Masked():
		return fmt.Errorf("host bits set (write %v)", p.Masked())
	case p.Bits() == 0:
		return errors.New("a default route: use --advertise-exit-node")
	case a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsUnspecified():
		return errors.New("not a unicast range")
	case p.Overlaps(member.IPv4Range):
		return fmt.Errorf("overlaps the overlay's %v", member.IPv4Range)
	case a.Is6() && p.Bits() <= 48 && p.Overlaps(netip.MustParsePrefix("fd00::/8")):
		return errors.New("overlaps the overlay's IPv6 range (fd00::/8 holds the users' /48s)")
	}
	return nil
}

// loadPrefs reads the saved prefs (none saved: the zero Prefs) and applies
// the Config's changes; a state file that does not parse is an error that
// names it.
func (n *Node) loadPrefs() error {
	var p api.Prefs
	b, err := n.state.ReadFile(prefsFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(b, &p); err != nil {
			return &member.DamagedError{Path: n.state.Path(prefsFile), Err: err}
		}
		if err := validPrefs(p); err != nil {
			return &member.DamagedError{Path: n.state.Path(prefsFile), Err: err}
		}
		if n.canOffer(p) != nil { // saved by a run with a kernel TUN
			n.logf("glow: %s offers routes, which a --userspace node cannot: not offered", n.state.Path(prefsFile))
			p.AdvertiseRoutes, p.AdvertiseExitNode = nil, false
		}
	}
	if n.cfg.Prefs != nil && !n.cfg.Prefs.Empty() {
		p = n.cfg.Prefs.Apply(p)
		if err := validPrefs(p); err != nil {
			return err
		}
		if err := n.canOffer(p); err != nil {
			return err
		}
		if err := n.savePrefs(p); err != nil {
			return err
		}
	}
	n.rt.prefs = p
	return nil
}

func (n *Node) savePrefs(p api.Prefs) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return n.state.WriteFile(prefsFile, append(b, '\n'), 0o644)
}

// Prefs returns the node's prefs.
func (n *Node) Prefs() api.Prefs {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rt.prefs
}

// SetPrefs changes the node's prefs (glow set): saved first, then in
// force at once (the NodeInfo is signed again at the next tick).
func (n *Node) SetPrefs(ch api.PrefsChange) (api.Prefs, error) {
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	n.mu.Lock()
	p := ch.Apply(n.rt.prefs)
	n.mu.Unlock()
	if err := validPrefs(p); err != nil {
		return api.Prefs{}, err
	}
	if err := n.canOffer(p); err != nil {
		return api.Prefs{}, err
	}
	if p.ExitNode != "" {
		n.mu.Lock()
		_, err := n.findLocked(p.ExitNode)
		n.mu.Unlock()
		if err != nil {
			return api.Prefs{}, api.Errorf(api.CodeNotFound, "--exit-node %s: %v", p.ExitNode, err)
		}
	}
	if ch.AcceptRoutesFrom != nil {
		n.mu.Lock()
		fs := n.friendsLocked()
		n.mu.Unlock()
		for _, u := range p.AcceptRoutesFrom {
			if !slices.ContainsFunc(fs, func(f member.Friend) bool { return f.Name == u }) {
				return api.Prefs{}, api.Errorf(api.CodeNotFound, "--accept-routes-from %s: no friend of that name (see 'glow friend list')", u)
			}
		}
	}
	if err := n.savePrefs(p); err != nil {
		return api.Prefs{}, err
	}
	n.mu.Lock()
	n.rt.prefs = p
	n.mem.infoDirty = true
	n.dueLocked(time.Now())
	// Routes and rules now, not at the next tick: once glow set returns,
	// the exit node (or its absence) is in force.
	applied := n.refreshSubnetsLocked()
	n.mu.Unlock()
	select {
	case <-applied:
	case <-time.After(10 * time.Second):
		return p, api.Errorf(api.CodeUnavailable, "saved, but the routes are not in place after 10 s (see the log)")
	case <-n.ctx.Done():
	}
	return p, nil
}

// canOffer refuses offers from a userspace node: it has no kernel to
// forward with, so its peers' traffic would go nowhere (it may use routes
// and exit nodes: userdial.go).
func (n *Node) canOffer(p api.Prefs) error {
	if n.cfg.Userspace && !n.cfg.offerUserspace && (len(p.AdvertiseRoutes) > 0 || p.AdvertiseExitNode) {
		return api.Errorf(api.CodeInvalidArgument, "a --userspace node cannot offer routes or be an exit node (it has no kernel to forward with); it can use them (--exit-node)")
	}
	return nil
}

// offeredLocked is what our NodeInfo offers.
func (n *Node) offeredLocked() []netip.Prefix {
	out := slices.Clone(n.rt.prefs.AdvertiseRoutes)
	if n.rt.prefs.AdvertiseExitNode {
		out = append(out, defaultRoute4, defaultRoute6)
	}
	return out
}

// exitPeerLocked is the peer named as exit node, or nil.
func (n *Node) exitPeerLocked() *peer {
	if n.rt.prefs.ExitNode == "" {
		return nil
	}
	p, err := n.findLocked(n.rt.prefs.ExitNode)
	if err != nil {
		return nil
	}
	return p
}

// subnetChoiceLocked returns the prefixes to route to each peer (see the
// file comment).
func (n *Node) subnetChoiceLocked() map[wire.NodeID][]netip.Prefix {
	mine := n.rt.prefs.AdvertiseRoutes // not the default routes of an exit node: they overlap everything
	exit := n.exitPeerLocked()
	// No prefix that overlaps a user's /48 (ours, a friend's) is taken:
	// the overlay's own addresses are routed by certificate only. No
	// friend's prefix that overlaps one our own user's nodes offer (ours
	// included) is taken.
	var users []netip.Prefix
	own := slices.Clone(mine)
	for _, c := range n.mem.store.Certs() {
		if u := member.UserPrefix6(c.User[:]); !slices.Contains(users, u) {
			users = append(users, u)
		}
		if info := n.mem.store.Info(c.Node); info != nil && c.Node != n.id && n.mem.store.Own(c.User) {
			for _, r := range info.Routes {
				if r.Bits() > 0 {
					own = append(own, r)
				}
			}
		}
	}
	var cands []routeOffer
	for _, p := range n.paths.peers {
		info := n.mem.store.Info(p.cert.Node)
		if info == nil {
			continue
		}
		rank, friend := 0, !n.mem.store.Own(p.cert.User)
		if friend {
			rank += 2
		}
		if p.path().kind == pathNone {
			rank++
		}
		accept := n.acceptsRoutesLocked(p.cert.User)
		for _, r := range info.Routes {
			if r.Bits() == 0 {
				if p != exit {
					continue
				}
			} else if !accept || checkOffer(r) != nil || slices.ContainsFunc(mine, r.Overlaps) || slices.ContainsFunc(users, r.Overlaps) ||
				slices.Contains(n.rt.connected, r) ||
				friend && (slices.ContainsFunc(own, r.Overlaps) || slices.ContainsFunc(n.rt.connected, r.Overlaps)) {
				continue
			}
			cands = append(cands, routeOffer{p: p, r: r, rank: rank, friend: friend && r.Bits() > 0})
		}
	}
	markContested(cands)
	best := map[netip.Prefix]routeOffer{}
	for _, c := range cands {
		if c.contested {
			continue
		}
		o, ok := best[c.r]
		if ok && (o.rank < c.rank || o.rank == c.rank && bytes.Compare(o.p.cert.Node[:], c.p.cert.Node[:]) < 0) {
			continue
		}
		best[c.r] = c
	}
	out := map[wire.NodeID][]netip.Prefix{}
	for r, o := range best {
		out[o.p.cert.Node] = append(out[o.p.cert.Node], r)
	}
	for _, rs := range out {
		slices.SortFunc(rs, comparePrefix)
	}
	return out
}

// routeOffer is a prefix a peer offers that passed every check but the
// comparison between friends.
type routeOffer struct {
	p         *peer
	r         netip.Prefix
	rank      int
	friend    bool // a friend's subnet route (not a default route)
	contested bool // another friend (user) offers an overlapping prefix
}

// markContested marks the friends' candidates that overlap (equal,
// contain or lie inside) a prefix another friend offers. Neither friend's
// claim proves the range is behind its node, and by longest match the
// narrower would take traffic for the wider's range, so neither is taken.
// A user's several nodes offering one prefix are not a conflict (they are
// routers for the same network). Prefixes nest or are disjoint, so one
// sweep in address order over the distinct (prefix, user) pairs, with a
// stack of the enclosing ones, finds every overlap; the stack holds at most
// 129 prefix lengths times the friends that offer the same prefix.
func markContested(cands []routeOffer) {
	type key struct {
		r    netip.Prefix
		user [32]byte
	}
	type group struct {
		key
		contested bool
	}
	idx := map[key]*group{}
	var gs []*group
	for _, c := range cands {
		if !c.friend {
			continue
		}
		k := key{c.r.Masked(), c.p.cert.User}
		if idx[k] == nil {
			idx[k] = &group{key: k}
			gs = append(gs, idx[k])
		}
	}
	slices.SortFunc(gs, func(a, b *group) int { return comparePrefix(a.r, b.r) })
	var stack []*group
	for _, g := range gs {
		for len(stack) > 0 && !stack[len(stack)-1].r.Contains(g.r.Addr()) {
			stack = stack[:len(stack)-1]
		}
		for _, up := range stack {
			if up.user != g.user {
				up.contested, g.contested = true, true
			}
		}
		stack = append(stack, g)
	}
	for i := range cands {
		if c := &cands[i]; c.friend {
			c.contested = idx[key{c.r.Masked(), c.p.cert.User}].contested
		}
	}
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// refreshSubnetsLocked applies the subnet choice: the peers' WireGuard
// allowed IPs, the packet path's and the directory's view, and the
// kernel's routes. The control loop calls it when routes may have changed.
// The channel it returns is closed once the kernel holds the routes (at
// once when nothing changed there).
func (n *Node) refreshSubnetsLocked() <-chan struct{} {
	n.rt.dirty = false
	choice := n.subnetChoiceLocked()
	var entries []routeEntry
	var owners []routeOwner
	var kernel []netip.Prefix
	for id, p := range n.paths.peers {
		want := choice[id]
		if !slices.Equal(p.subnets, want) {
			p.subnets = want
			n.wgConfigLocked(p)
		}
		for _, r := range want {
			entries = append(entries, routeEntry{r, p.ep})
			if len(p.routed) > 0 {
				owners = append(owners, routeOwner{r, p.routed[0]})
			}
			if r.Bits() > 0 {
				kernel = append(kernel, r)
			}
		}
	}
	n.bind.setRoutes(entries)
	slices.SortStableFunc(owners, func(a, b routeOwner) int { return b.p.Bits() - a.p.Bits() })
	n.dir.routes.Store(&owners)
	n.exitDNSLocked() // exitdns.go
	slices.SortFunc(kernel, comparePrefix)
	want := kernelRoutes{Subnets: kernel, Forward: len(n.offeredLocked()) > 0,
		Exit: n.rt.prefs.ExitNode != "", AllowLAN: n.rt.prefs.ExitNodeAllowLANAccess,
		ExitDNS: n.rt.prefs.AdvertiseExitNode}
	if want.equal(n.rt.applied) || n.rt.kernel == nil {
		return closedChan
	}
	want.done = make(chan struct{})
	moved := !slices.Equal(want.Subnets, n.rt.applied.Subnets)
	n.rt.applied = want
	n.setKernelRoutesLocked(want)
	if moved {
		// Addresses now inside the tunnel are no path to anyone
		// (inTunnelLocked): a direct path there is lost, not flapped.
		now := time.Now()
		for _, p := range n.paths.peers {
			if n.dropInTunnelLocked(p) {
				a := p.active
				n.lostPathLocked(p, now)
				delete(p.cands, a)
				delete(n.paths.unproven, a)
			}
		}
	}
	return want.done
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// kernelRoutes is what the kernel should hold for subnet routes.
type kernelRoutes struct {
	Subnets []netip.Prefix // peers' prefixes routed through the TUN
	Forward bool           // we offer routes: forward and masquerade
	// Exit: an exit node is chosen: everything but glow's own traffic goes
	// into the TUN (tun.Kernel.SetExit), whether the exit node takes it
	// or not (fail closed); AllowLAN keeps the local LANs out.
	Exit, AllowLAN bool
	ExitDNS        bool          // we offer an exit node: serve DNS on the overlay addresses (exitdns.go)
	done           chan struct{} // closed once applied (or replaced by a newer set)
}

func (k kernelRoutes) equal(o kernelRoutes) bool {
	return slices.Equal(k.Subnets, o.Subnets) && k.Forward == o.Forward && k.Exit == o.Exit && k.AllowLAN == o.AllowLAN &&
		k.ExitDNS == o.ExitDNS
}

// routeState is the node's subnet and exit node state, guarded by Node.mu.
type routeState struct {
	prefs   api.Prefs
	dirty   bool         // prefs or offers changed: refreshSubnetsLocked at the next tick
	applied kernelRoutes // last handed to the route applier
	want    chan kernelRoutes
	kernel  subnetKernel // nil without a kernel TUN
	// connected are the networks the host is directly on (Config.HostNets,
	// read by the control loop off the lock): a peer's prefix equal to one
	// of them is not taken, so the LAN a node sits on stays direct.
	connected []netip.Prefix
}

// subnetKernel is what the route applier needs of the kernel TUN.
type subnetKernel interface {
	SetSubnetRoutes(prefixes []netip.Prefix, srcs ...netip.Addr) error
	SetForwarding(on bool) error
	SetExit(on, allowLAN bool, srcs ...netip.Addr) error
}

// setKernelRoutesLocked hands the applier the latest kernel routes,
// replacing a set it has not taken yet.
func (n *Node) setKernelRoutesLocked(want kernelRoutes) {
	for {
		select {
		case n.rt.want <- want:
			return
		default:
		}
		select {
		case old := <-n.rt.want:
			close(old.done) // superseded
		default:
		}
	}
}

// routeApplier applies subnet routes and forwarding to the kernel, off
// n.mu; a set that fails is tried again at the next change.
func (n *Node) routeApplier(k subnetKernel, v4, v6 netip.Addr) {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			n.serveExitDNS(false)
			return
		case want := <-n.rt.want:
			err := errors.Join(k.SetForwarding(want.Forward), k.SetSubnetRoutes(want.Subnets, v4, v6),
				k.SetExit(want.Exit, want.AllowLAN, v4, v6), n.serveExitDNS(want.ExitDNS))
			if n.bind.devForwarding.Load() {
				n.enableForwarding() // ip_forward's change set every interface's own flag (devices.go)
			}
			close(want.done)
			if err == nil {
				continue
			}
			n.logf("glow: subnet routes: %v", err)
			n.mu.Lock()
			if n.rt.applied.equal(want) {
				n.rt.applied = kernelRoutes{Subnets: []netip.Prefix{}} // differs from any wanted: sent again
				n.rt.dirty = true
			}
			n.mu.Unlock()
		}
	}
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
