package overlay

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"glow/internal/wire"
	"glow/overlay/api"
	"glow/overlay/member"
	"glow/policy"
	"glow/relay"
	"glow/tun"
)

// Policy wiring. The user's policy is a text document (package policy)
// carried in a KindPolicy UserDoc: signed by the user key on an admin node,
// versioned, gossiped to the user's own nodes, and compiled on each node
// into the rules of its packet filter (tunwrap.go), without a restart. The
// admin node keeps every version in STATE/policy.d/ for history and
// rollback; a rollback signs the old text again as a new version, so
// versions only grow and every node converges on the newest.
//
// The filter learns who owns an overlay address from the certificates this
// node holds (its user's and its friends'), through directory below.

// directory maps overlay addresses to certified principals for the filter.
type directory struct {
	m      atomic.Pointer[map[netip.Addr]policy.Principal]
	routes atomic.Pointer[[]routeOwner] // prefixes routed to peers, longest first (subnets.go)
}

func (d *directory) Lookup(ip netip.Addr) (policy.Principal, bool) {
	m := d.m.Load()
	if m == nil {
		return policy.Principal{}, false
	}
	p, ok := (*m)[ip]
	if !ok {
		// An address of a prefix routed to a peer is the peer's: WireGuard
		// takes it only from that peer.
		if rs := d.routes.Load(); rs != nil {
			for _, r := range *rs {
				if r.p.Contains(ip) {
					p, ok = (*m)[r.who]
					break
				}
			}
		}
	}
	return p, ok
}

// defaultPolicy is the document in force before the user writes one.
const defaultPolicy = `# glow policy. Your own nodes always reach each other on every port;
# other users (friends) reach only what a rule here allows, e.g.
#   allow bob -> nas:8080/tcp
# Edit with 'glow share', 'glow unshare' or 'glow policy apply FILE'.
`

// userNameLocked is how this node names the user of a certificate: its
// own user by name, a friend by the name in the friend list.
func (n *Node) userNameLocked(c *member.Cert) string {
	if n.mem.store.Own(c.User) {
		return n.mem.cert.UserName
	}
	if name, ok := n.mem.store.FriendName(c.User); ok {
		return name
	}
	return c.UserName
}

// fqdnLocked names c's node NODE.USER as this node shows it: USER as
// userNameLocked gives it, not the user name c claims (a friend's key
// signs any name, "alice" too). A node of a user that is neither ours nor
// a friend shows the name it claims, said to be a claim, with its user
// key, which is all its certificate proves.
func (n *Node) fqdnLocked(c *member.Cert) string {
	if !n.mem.store.Own(c.User) {
		if _, ok := n.mem.store.FriendName(c.User); !ok {
			return fmt.Sprintf("%s (claimed by an unknown user, key %x)", c.FQDN(), c.User[:6])
		}
	}
	return c.Name + "." + n.userNameLocked(c)
}

// policyTextLocked returns the policy document in force and its version.
func (n *Node) policyTextLocked() (string, uint64) {
	if d := n.mem.store.Doc(member.KindPolicy); d != nil {
		return string(d.Body), d.Version
	}
	return defaultPolicy, 0
}

// refreshPolicyLocked rebuilds the address directory, the relay trust and
// the filter's rules from the records held. Called whenever certificates,
// the friend list or the policy change.
func (n *Node) refreshPolicyLocked() {
	m := map[netip.Addr]policy.Principal{}
	for _, c := range n.mem.store.Certs() {
		p := policy.Principal{User: n.userNameLocked(c), Node: c.Name}
		for _, a := range n.routedLocked(c) { // a friend's shadowed address maps to nobody of theirs (shadow.go)
			m[a] = p
		}
	}
	for _, d := range n.devicesLocked() { // a device counts as a node of the user (devices.go)
		m[d.IPv4] = policy.Principal{User: n.mem.cert.UserName, Node: d.Name}
		m[d.IPv6] = m[d.IPv4]
	}
	n.dir.m.Store(&m)
	n.rt.dirty = true // peers may have come or gone: the subnet choice too
	n.fwd.SetMembers(n.id.Short(), n.relayMembersLocked())
	foreign := false
	for _, c := range n.mem.store.Certs() {
		foreign = foreign || !n.mem.store.Own(c.User)
	}
	if foreign {
		n.filterOnLocked()
	} else {
		n.filterOffLocked() // behind the removal of the last friend's peers (filterswitch.go)
	}
	n.routeFriendsLocked()

	text, version := n.policyTextLocked()
	doc, err := policy.Parse([]byte(text))
	if err != nil {
		n.logf("glow: policy version %d does not parse (%v); keeping the rules in force", version, err)
		return
	}
	rules, err := policy.Compile(doc, n.compileConfigLocked())
	if err != nil {
		n.logf("glow: policy version %d: %v; keeping the rules in force", version, err)
		return
	}
	n.mem.doc = doc
	if n.filter != nil {
		n.filter.SetRules(rules)
	}
	n.mem.rules = rules
}

// compileConfigLocked is what this node's policy compiles for: rules open
// services on this node's own overlay addresses only.
func (n *Node) compileConfigLocked() policy.CompileConfig {
	return policy.CompileConfig{Owner: n.mem.cert.UserName, Self: n.mem.cert.Name, Directory: &n.dir,
		Addrs: []netip.Addr{n.mem.cert.IPv4, n.mem.cert.IPv6}}
}

// sharedWithLocked reports whether this user's node name is shared, by
// any rule, with the friend whose user key is friend.
func (n *Node) sharedWithLocked(node string, friend [32]byte) bool {
	if n.mem.doc == nil {
		return false
	}
	name, ok := n.mem.store.FriendName(friend)
	if !ok {
		return false
	}
	for _, g := range n.mem.doc.Shares() {
		if g.Who != name && g.Who != "*" {
			continue
		}
		switch g.To.Kind {
		case policy.TargetAny:
			return true
		case policy.TargetNode, policy.TargetRoute, policy.TargetExit:
			if g.To.Name == node {
				return true
			}
		case policy.TargetTag:
			for _, t := range n.mem.doc.Tags {
				if t.Name == g.To.Name {
					for _, nn := range t.Nodes {
						if nn == node {
							return true
						}
					}
				}
			}
		}
	}
	return false
}

// relayMembersLocked is the relay.Forwarder's trust: which user each node
// with a certificate belongs to. The Forwarder forwards between this user's
// nodes, and between a friend's node and one of ours, never between two
// strangers or two nodes of another user; and it takes a frame only from
// its source or a neighbour trusted to relay for it (relay package doc).
func (n *Node) relayMembersLocked() relay.Members {
	m := relay.Members{}
	friends := map[[32]byte]relay.User{}
	for _, c := range n.mem.store.Certs() {
		id := c.Node.Short()
		switch {
		case c.Node == n.id:
		case n.mem.store.Own(c.User):
			m[id] = relay.Own
		default:
			u, ok := friends[c.User]
			if !ok {
				u = relay.Friend + relay.User(len(friends))
				friends[c.User] = u
			}
			m[id] = u
		}
	}
	return m
}

var errNotAdmin = api.Errorf(api.CodeNotAdmin, "this node does not hold the user key; run this on an admin node ('glow nodes list' shows them; 'glow nodes promote' makes one)")

// Policy returns the policy document in force.
func (n *Node) Policy() PolicyInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	text, v := n.policyTextLocked()
	return PolicyInfo{Version: v, Text: text}
}

// ApplyPolicy validates text and, if it is good, makes it the policy of the
// user (admin nodes only). A bad document changes nothing.
func (n *Node) ApplyPolicy(text string) (PolicyInfo, error) {
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	return n.applyPolicy(text)
}

// applyPolicy is ApplyPolicy with n.saveMu held.
func (n *Node) applyPolicy(text string) (PolicyInfo, error) {
	n.mu.Lock()
	err := n.checkPolicyLocked(text)
	n.mu.Unlock()
	if err != nil {
		return PolicyInfo{}, err
	}
	var hist string // written
	d, _, err := n.changeDoc(member.KindPolicy, func() ([]byte, error) { return []byte(text), nil }, func(d *member.UserDoc) error {
		// History first: a version the nodes enforce is always in it.
		if err := os.MkdirAll(n.state.Path("policy.d"), 0o700); err != nil {
			return err
		}
		name := filepath.Join("policy.d", fmt.Sprintf("%08d.policy", d.Version))
		if err := n.state.WriteFile(name, []byte(text), 0o600); err != nil {
			return fmt.Errorf("history: %w", err)
		}
		hist = name
		return nil
	})
	if err != nil {
		if hist != "" {
			os.Remove(n.state.Path(hist))
		}
		return PolicyInfo{}, fmt.Errorf("policy not applied, the one in force stays: %w", err)
	}
	n.logf("glow: policy version %d applied", d.Version)
	return PolicyInfo{Version: d.Version, Text: text}, nil
}

// checkPolicyLocked refuses a policy text that cannot be applied.
func (n *Node) checkPolicyLocked(text string) error {
	if n.mem.user == nil {
		return errNotAdmin
	}
	doc, err := policy.Parse([]byte(text))
	if err != nil {
		return api.Errorf(api.CodeInvalidArgument, "policy not applied, the one in force stays: %w", err)
	}
	if _, err := policy.Compile(doc, n.compileConfigLocked()); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "policy not applied, the one in force stays: %w", err)
	}
	if len(text) > member.MaxDocBody {
		return fmt.Errorf("policy not applied, the one in force stays: %w", &member.DocTooLargeError{Kind: member.KindPolicy, Size: len(text)})
	}
	return nil
}

// PolicyHistory lists the versions this node keeps (admin nodes keep all).
func (n *Node) PolicyHistory() ([]PolicyVersion, error) {
	n.mu.Lock()
	_, cur := n.policyTextLocked()
	n.mu.Unlock()
	ents, _ := os.ReadDir(n.state.Path("policy.d"))
	var out []PolicyVersion
	for _, e := range ents {
		v, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), ".policy"), 10, 64)
		if err != nil {
			continue
		}
		info, _ := e.Info()
		pv := PolicyVersion{Version: v, Current: v == cur}
		if info != nil {
			pv.Time = info.ModTime().UTC().Format(time.RFC3339)
		}
		if b, err := os.ReadFile(filepath.Join(n.state.Path("policy.d"), e.Name())); err == nil {
			if d, err := policy.Parse(b); err == nil {
				pv.Rules = len(d.Rules)
			}
		}
		out = append(out, pv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	if len(out) == 0 || out[len(out)-1].Version != cur {
		out = append(out, PolicyVersion{Version: cur, Current: true})
	}
	return out, nil
}

// RollbackPolicy applies the text of an earlier version as a new version.
func (n *Node) RollbackPolicy(version uint64) (PolicyInfo, error) {
	var text []byte
	if version == 0 {
		text = []byte(defaultPolicy)
	} else {
		b, err := os.ReadFile(filepath.Join(n.state.Path("policy.d"), fmt.Sprintf("%08d.policy", version)))
		if err != nil {
			return PolicyInfo{}, api.Errorf(api.CodeNotFound, "policy version %d is not in this node's history ('glow policy history')", version)
		}
		text = b
	}
	return n.ApplyPolicy(string(text))
}

// Share lets friend user reach target ("nas:8080/tcp"); Unshare takes it back.
func (n *Node) Share(target, user string, share bool) (PolicyInfo, bool, error) {
	t, err := policy.ParseShareTarget(target)
	if err != nil {
		return PolicyInfo{}, false, api.Errorf(api.CodeInvalidArgument, "%w", err)
	}
	if !member.ValidName(user) {
		return PolicyInfo{}, false, api.Errorf(api.CodeInvalidArgument, "--with %q: not a user name", user)
	}
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	n.mu.Lock()
	info, text, err := n.sharedLocked(t, user, share)
	n.mu.Unlock()
	if err != nil || text == "" {
		return info, false, err
	}
	if info, err = n.applyPolicy(text); err != nil {
		return PolicyInfo{}, false, err
	}
	return info, true, nil
}

// sharedLocked returns the policy text with target shared with user (or
// not), or "" and the policy in force when that changes nothing.
func (n *Node) sharedLocked(t policy.Target, user string, share bool) (PolicyInfo, string, error) {
	if n.mem.user == nil {
		return PolicyInfo{}, "", errNotAdmin
	}
	if t.Kind == policy.TargetNode || t.Kind == policy.TargetRoute || t.Kind == policy.TargetExit {
		found := false
		for _, c := range n.mem.store.Certs() {
			found = found || n.mem.store.Own(c.User) && c.Name == t.Name
		}
		if !found {
			return PolicyInfo{}, "", api.Errorf(api.CodeNotFound, "%s is not a node of user %s (see 'glow status')", t.Name, n.mem.cert.UserName)
		}
	}
	text, version := n.policyTextLocked()
	doc, err := policy.Parse([]byte(text))
	if err != nil {
		return PolicyInfo{}, "", err
	}
	var changed bool
	if share {
		if changed, err = doc.Share(user, t); err != nil {
			return PolicyInfo{}, "", api.Errorf(api.CodeInvalidArgument, "%w", err)
		}
	} else {
		changed = doc.Unshare(user, t)
	}
	if !changed {
		return PolicyInfo{Text: text, Version: version}, "", nil
	}
	return PolicyInfo{}, string(doc.Format()), nil
}

// FilterCounts returns the packet filter's decisions by reason.
func (n *Node) FilterCounts() map[string]uint64 {
	out := map[string]uint64{}
	if n.filter == nil {
		return out
	}
	for r, c := range n.filter.Counts() {
		out[r.String()] = c
	}
	return out
}

// certsChangedLocked brings everything derived from the certificates held
// up to date: DNS names, the filter's directory and rules, relay trust.
func (n *Node) certsChangedLocked() {
	n.refreshShadowLocked()
	n.applyDevicesLocked()
	n.updateNamesLocked()
	n.refreshPolicyLocked()
	n.permitTURNLocked()
}

// routeFriendsLocked routes the IPv6 prefixes of friends whose nodes this
// node knows through the TUN (the interface's own prefix covers only its
// user's /48; IPv4 is one /10 for everyone).
func (n *Node) routeFriendsLocked() {
	if _, ok := n.tunDev.(*tun.Kernel); !ok {
		return
	}
	var want []netip.Prefix
	seen := map[[32]byte]bool{}
	for _, c := range n.mem.store.Certs() {
		if !n.mem.store.Own(c.User) && !seen[c.User] {
			seen[c.User] = true
			want = append(want, member.UserPrefix6(c.User[:]))
		}
	}
	slices.SortFunc(want, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if slices.Equal(want, n.paths.friendRoutes) {
		return
	}
	n.paths.friendRoutes = want
	n.setRoutesLocked(want) // applied by routeSetter, off n.mu
}

// RemoveNode revokes a node of this user (admin nodes only): every node
// drops it and refuses its certificate from then on.
func (n *Node) RemoveNode(name string) error {
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	var target *member.Cert
	_, built, err := n.changeDoc(member.KindRevoked, func() ([]byte, error) {
		if n.mem.user == nil {
			return nil, errNotAdmin
		}
		for _, c := range n.mem.store.Certs() {
			if n.mem.store.Own(c.User) && c.Name == name {
				target = c
			}
		}
		if target == nil {
			return nil, api.Errorf(api.CodeNotFound, "%s is not a node of user %s (see 'glow status')", name, n.mem.cert.UserName)
		}
		if target.Node == n.id {
			return nil, api.Errorf(api.CodeConflict, "this is the node you are on; remove it from another admin node, or run 'glow down'")
		}
		var ids []wire.NodeID
		if d := n.mem.store.Doc(member.KindRevoked); d != nil {
			ids, _ = member.ParseRevoked(d.Body)
		}
		return member.FormatRevoked(append(ids, target.Node)), nil
	}, nil)
	if err != nil && built {
		return fmt.Errorf("%s not removed: %w", target.FQDN(), err)
	}
	if err != nil {
		return err
	}
	n.logf("glow: removed node %s", target.FQDN())
	return nil
}
