package overlay

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"glow/overlay/api"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// recordKernel stands in for a kernel TUN's routes: it keeps the subnet
// routes it was last given.
type recordKernel struct {
	mu      sync.Mutex
	subnets []netip.Prefix
}

func (k *recordKernel) SetSubnetRoutes(ps []netip.Prefix, _ ...netip.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.subnets = slices.Clone(ps)
	return nil
}
func (*recordKernel) SetForwarding(bool) error                { return nil }
func (*recordKernel) SetExit(bool, bool, ...netip.Addr) error { return nil }

func (k *recordKernel) holds(p netip.Prefix) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Contains(k.subnets, p)
}

// froutesRig is alice's node desk, a running test node on the LAN
// 192.168.77.0/24, with alice's other node home and bob's node evil (bob
// is alice's friend) known from gossip: their certificates and the
// NodeInfos that carry their offers reach desk as records do. A
// recordKernel takes desk's kernel routes.
type froutesRig struct {
	t          *testing.T
	desk       *Node
	kernel     *recordKernel
	home, evil rigNode
	bob        *member.UserKey // evil's user

	logMu sync.Mutex
	logs  []string // desk's log lines
}

// logged returns desk's log lines that contain sub.
func (r *froutesRig) logged(sub string) []string {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	var out []string
	for _, l := range r.logs {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

type rigNode struct {
	keys *member.NodeKeys
	cert *member.Cert
	seq  uint64
}

var deskLAN = netip.MustParsePrefix("192.168.77.0/24")

func newFroutesRig(t *testing.T) *froutesRig {
	t.Helper()
	r := &froutesRig{t: t, kernel: &recordKernel{}}
	r.desk = testNode(t, "desk", func(c *Config) {
		logf := c.Logf
		c.Logf = func(f string, a ...any) {
			r.logMu.Lock()
			r.logs = append(r.logs, fmt.Sprintf(f, a...))
			r.logMu.Unlock()
			logf(f, a...)
		}
		c.UserName = "alice"
		c.HostNets = func() []netip.Prefix { return []netip.Prefix{deskLAN} }
	})
	d := r.desk
	waitFor(t, 10*time.Second, "desk to read the networks it is on", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return slices.Equal(d.rt.connected, []netip.Prefix{deskLAN})
	})
	bob := membertest.NewUser(t, "bob")
	r.bob = bob
	now := time.Now()
	r.home.keys, r.home.cert = membertest.NewCert(t, d.mem.user, "home", now)
	r.evil.keys, r.evil.cert = membertest.NewCert(t, bob, "evil", now)

	d.mu.Lock()
	defer d.mu.Unlock()
	befriendLocked(t, d, bob)
	own := &peer{cert: d.mem.cert}
	d.handleRecordsLocked(own, []recordMsg{{member.KindCert, r.home.cert.Marshal()}, {member.KindCert, r.evil.cert.Marshal()}}, now)
	d.flushCertsLocked()
	if d.paths.peers[r.home.cert.Node] == nil || d.paths.peers[r.evil.cert.Node] == nil {
		t.Fatal("home and evil are not desk's peers")
	}
	// The kernel's routes: what a kernel TUN's node hands its applier.
	d.rt.kernel = r.kernel
	d.wg.Add(1)
	go d.routeApplier(r.kernel, d.mem.cert.IPv4, d.mem.cert.IPv6)
	return r
}

// offer has n's node offer routes in a new NodeInfo that reaches desk
// (evil's from evil itself, home's from home), and waits until desk has
// routed what it takes.
func (r *froutesRig) offer(n *rigNode, routes ...string) {
	r.t.Helper()
	r.gossip(n, routes...)
	r.desk.mu.Lock()
	r.refreshLocked()
}

// gossip hands desk n's new NodeInfo offering routes; desk's control loop
// routes what it takes at its next tick.
func (r *froutesRig) gossip(n *rigNode, routes ...string) {
	r.t.Helper()
	n.seq++
	info := &member.NodeInfo{Node: n.cert.Node, Seq: n.seq}
	for _, s := range routes {
		info.Routes = append(info.Routes, netip.MustParsePrefix(s))
	}
	member.SignInfo(n.keys.Sign, info)
	d := r.desk
	d.mu.Lock()
	d.handleRecordsLocked(d.paths.peers[n.cert.Node], []recordMsg{{member.KindInfo, info.Marshal()}}, time.Now())
	if i := d.mem.store.Info(n.cert.Node); i == nil || i.Seq != n.seq {
		d.mu.Unlock()
		r.t.Fatalf("desk did not take %s's NodeInfo %d", n.cert.Name, n.seq)
	}
	d.mu.Unlock()
}

// refresh recomputes desk's routes, as its control loop does, and waits
// until the kernel holds them (desk.mu held; released on return).
func (r *froutesRig) refreshLocked() {
	r.t.Helper()
	applied := r.desk.refreshSubnetsLocked()
	r.desk.mu.Unlock()
	select {
	case <-applied:
	case <-time.After(10 * time.Second):
		r.t.Fatal("desk's routes not applied after 10 s")
	}
}

func (r *froutesRig) set(ch api.PrefsChange) {
	r.t.Helper()
	if _, err := r.desk.SetPrefs(ch); err != nil {
		r.t.Fatalf("desk: SetPrefs(%+v): %v", ch, err)
	}
}

// routedTo lists where desk routes prefix p to node n: its WireGuard
// allowed IPs, the Bind's route table, the kernel's routes, the policy
// directory (n as the owner of p's addresses).
func (r *froutesRig) routedTo(n *rigNode, p netip.Prefix) []string {
	d := r.desk
	d.mu.Lock()
	pr := d.paths.peers[n.cert.Node]
	d.mu.Unlock()
	if pr == nil {
		r.t.Fatalf("%s is no longer desk's peer", n.cert.Name)
	}
	var where []string
	d.bind.wgCfgMu.Lock()
	cfg := pr.ep.wg.cfg
	d.bind.wgCfgMu.Unlock()
	if strings.Contains(cfg, "allowed_ip="+p.String()+"\n") {
		where = append(where, "wireguard")
	}
	var rs []routeEntry
	if l := d.bind.byRoute.Load(); l != nil {
		rs = *l
	}
	if slices.ContainsFunc(rs, func(e routeEntry) bool { return e.p == p && e.e == pr.ep }) {
		where = append(where, "bind")
	}
	// The kernel routes a prefix into the TUN whoever takes it: it counts
	// for n unless the prefix is another peer's.
	if r.kernel.holds(p) && !slices.ContainsFunc(rs, func(e routeEntry) bool { return e.p == p && e.e != pr.ep }) {
		where = append(where, "kernel")
	}
	if os := d.dir.routes.Load(); os != nil && slices.ContainsFunc(*os, func(o routeOwner) bool { return o.p == p && o.who == n.cert.IPv4 }) {
		where = append(where, "directory")
	}
	return where
}

// expect checks, for each prefix, whether desk routes it to n everywhere
// (taken) or nowhere, and logs what it found; it returns how many of
// prefixes are routed to n anywhere.
func (r *froutesRig) expect(stage string, n *rigNode, taken bool, prefixes ...string) int {
	r.t.Helper()
	hit := 0
	for _, s := range prefixes {
		p := netip.MustParsePrefix(s)
		where := r.routedTo(n, p)
		if len(where) > 0 {
			hit++
		}
		r.t.Logf("%s: %v routed to %s in %v", stage, p, n.cert.Name, where)
		want := []string{"wireguard", "bind", "kernel", "directory"}
		if p.Bits() == 0 {
			want = slices.Delete(want, 2, 3) // an exit node's default routes: tun.Kernel.SetExit, not subnet routes
		}
		switch {
		case taken && !slices.Equal(where, want):
			r.t.Errorf("%s: %v routed to %s only in %v, want %v", stage, p, n.cert.Name, where, want)
		case !taken && len(where) > 0:
			r.t.Errorf("%s: %v routed to %s (%v): a friend's claim is not proof", stage, p, n.cert.Name, where)
		}
	}
	return hit
}

// TestAttackFriendRoutes: bob, alice's friend, is hostile. His node evil
// offers prefixes that are not his to route: a public /24, a corporate
// range, parts of (and ranges around) the LAN alice's own node home
// offers and the LAN desk is on, and an exit node desk did not choose.
// Desk must route none of them to evil (WireGuard, the Bind, the kernel,
// the directory) unless alice opted in to bob's routes, and even then
// none that overlaps a prefix of her own nodes or a network desk is on;
// default routes only while evil is desk's chosen exit node. A prefix
// that stops being acceptable is removed at the next recompute.
func TestAttackFriendRoutes(t *testing.T) {
	r := newFroutesRig(t)
	home, evil := &r.home, &r.evil
	unrelated := []string{"198.51.100.0/24", "10.200.0.0/16"}
	overlapping := []string{
		"10.71.1.0/24",                      // equal to home's
		"10.71.1.128/25",                    // more specific: wins by longest match
		"10.71.0.0/16",                      // wider
		"192.168.77.0/25", "192.168.0.0/16", // inside, around desk's LAN
	}
	attempted, hits := 0, 0
	count := func(k int, n int) { attempted += k; hits += n }

	// (a) Not opted in: nothing of bob's is taken.
	r.offer(home, "10.71.1.0/24")
	r.offer(evil, append(slices.Clone(unrelated), overlapping...)...)
	r.expect("own node home", home, true, "10.71.1.0/24")
	count(len(unrelated), r.expect("not opted in", evil, false, unrelated...))
	count(len(overlapping), r.expect("not opted in", evil, false, overlapping...))

	// (b) Opted in to bob's routes: the unrelated ones are taken, none
	// that overlaps home's offer or desk's LAN. A name that is no friend's
	// is refused (a typo would take nothing, silently).
	if _, err := r.desk.SetPrefs(api.PrefsChange{AcceptRoutesFrom: &[]string{"bob", "carol"}}); err == nil {
		t.Error("desk: --accept-routes-from carol, who is no friend, was taken")
	}
	r.set(api.PrefsChange{AcceptRoutesFrom: &[]string{"bob"}})
	r.expect("opted in", evil, true, unrelated...)
	count(len(overlapping), r.expect("opted in", evil, false, overlapping...))
	r.expect("opted in", home, true, "10.71.1.0/24")
	if e := r.desk.bind.routeFor(netip.MustParseAddr("10.71.1.200")); e == nil || e.ID != home.cert.Node {
		t.Errorf("opted in: desk's packet path sends 10.71.1.200 (home's LAN) to %v, want home", epName(r, e))
	}

	// Removed again at the next recompute: home starts offering a part
	// of 198.51.100.0/24 (desk's control loop recomputes), then the opt-in
	// is withdrawn.
	r.gossip(home, "10.71.1.0/24", "198.51.100.0/25")
	waitFor(t, 10*time.Second, "desk's control loop to take 198.51.100.0/24 from evil", func() bool {
		return len(r.routedTo(evil, netip.MustParsePrefix("198.51.100.0/24"))) == 0
	})
	r.desk.mu.Lock()
	r.refreshLocked() // the kernel's routes applied too
	count(1, r.expect("home offers 198.51.100.0/25", evil, false, "198.51.100.0/24"))
	r.expect("home offers 198.51.100.0/25", evil, true, "10.200.0.0/16")
	r.offer(home, "10.71.1.0/24")
	r.expect("home no longer offers 198.51.100.0/25", evil, true, "198.51.100.0/24")
	r.set(api.PrefsChange{AcceptRoutesFrom: &[]string{}})
	count(len(unrelated), r.expect("opt-in withdrawn", evil, false, unrelated...))

	// (c) Evil as an exit node: its default routes only once chosen, with
	// or without the opt-in.
	r.offer(evil, "0.0.0.0/0", "::/0", "198.51.100.0/24")
	count(2, r.expect("exit node not chosen", evil, false, "0.0.0.0/0", "::/0"))
	r.set(api.PrefsChange{AcceptRoutesFrom: &[]string{"bob"}})
	count(2, r.expect("exit node not chosen, opted in", evil, false, "0.0.0.0/0", "::/0"))
	r.set(api.PrefsChange{AcceptRoutesFrom: &[]string{}, ExitNode: ptr("evil.bob")})
	r.expect("exit node chosen", evil, true, "0.0.0.0/0", "::/0")
	count(1, r.expect("exit node chosen, not opted in", evil, false, "198.51.100.0/24"))
	if e := r.desk.bind.routeFor(netip.MustParseAddr("10.71.1.9")); e == nil || e.ID != home.cert.Node {
		t.Errorf("exit node chosen: desk's packet path sends 10.71.1.9 to %v, want home", epName(r, e))
	}
	t.Logf("a hostile friend's prefixes routed to its node: %d of %d", hits, attempted)
}

func epName(r *froutesRig, e *Endpoint) string {
	switch {
	case e == nil:
		return "nobody"
	case e.ID == r.home.cert.Node:
		return "home"
	case e.ID == r.evil.cert.Node:
		return "evil"
	}
	return e.ID.String()
}

// TestAttackFriendRoutesOverlapFriend: alice opted in to the routes of two
// friends, bob and carol. Carol is hostile: her node crook offers bob's
// LAN and a part of it. By longest match the part would take alice's
// traffic for that part of bob's LAN to crook, and an equal prefix would
// go to whichever node id sorts lower. Neither claim proves anything, so a
// prefix two friends' offers overlap is routed to neither; their other
// prefixes are taken, and two of one friend's nodes offering the same
// prefix (two routers for one network) are no conflict.
func TestAttackFriendRoutesOverlapFriend(t *testing.T) {
	r := newFroutesRig(t)
	d := r.desk
	carol := membertest.NewUser(t, "carol")
	now := time.Now()
	var crook, evil2 rigNode
	crook.keys, crook.cert = membertest.NewCert(t, carol, "crook", now)
	evil2.keys, evil2.cert = membertest.NewCert(t, r.bob, "evil2", now)
	d.mu.Lock()
	friends := membertest.SignedDoc(d.mem.user, member.KindFriends, 2, member.FormatFriends([]member.Friend{
		{Name: r.bob.Name, Key: [32]byte(r.bob.Public())}, {Name: carol.Name, Key: [32]byte(carol.Public())}}))
	if _, err := d.mem.store.AddDoc(friends); err != nil {
		d.mu.Unlock()
		t.Fatal(err)
	}
	d.handleRecordsLocked(&peer{cert: d.mem.cert}, []recordMsg{{member.KindCert, crook.cert.Marshal()}, {member.KindCert, evil2.cert.Marshal()}}, now)
	d.flushCertsLocked()
	ok := d.paths.peers[crook.cert.Node] != nil && d.paths.peers[evil2.cert.Node] != nil
	d.mu.Unlock()
	if !ok {
		t.Fatal("crook and evil2 are not desk's peers")
	}
	r.set(api.PrefsChange{AcceptRoutesFrom: &[]string{"bob", "carol"}})

	r.offer(&r.evil, "10.50.0.0/16", "10.60.0.0/16", "172.20.0.0/16")
	r.offer(&evil2, "10.60.0.0/16")
	r.expect("bob alone", &r.evil, true, "10.50.0.0/16", "172.20.0.0/16")
	contested := []string{"10.50.0.0/16", "10.50.7.0/24"}
	r.offer(&crook, append(slices.Clone(contested), "172.31.0.0/16")...)
	hits := r.expect("carol offers bob's LAN and a part of it", &crook, false, contested...)
	r.expect("carol offers bob's LAN and a part of it", &r.evil, false, "10.50.0.0/16")
	r.expect("uncontested", &r.evil, true, "172.20.0.0/16")
	r.expect("uncontested", &crook, true, "172.31.0.0/16")
	if e := d.bind.routeFor(netip.MustParseAddr("10.50.7.9")); e != nil {
		t.Errorf("desk's packet path sends 10.50.7.9 (bob's LAN, claimed by carol too) to %v", e.ID)
	}
	// Bob's two routers for one network.
	ten60 := netip.MustParsePrefix("10.60.0.0/16")
	if n := len(r.routedTo(&r.evil, ten60)) + len(r.routedTo(&evil2, ten60)); n != 4 {
		t.Errorf("10.60.0.0/16, offered by two of bob's nodes: routed in %d places, want 4 (to one of them)", n)
	}
	// Carol withdraws: bob's LAN is routed to evil again.
	r.offer(&crook, "172.31.0.0/16")
	r.expect("carol withdrew", &r.evil, true, "10.50.0.0/16")
	t.Logf("prefixes overlapping another friend's routed to carol's node: %d of %d", hits, len(contested))
}

// TestMarkContested checks the sweep against every pair, over random
// prefixes (nested, equal, disjoint, both families) of three friends and
// one own node.
func TestMarkContested(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	users := make([]*peer, 4)
	for i := range users {
		users[i] = &peer{cert: &member.Cert{}}
		users[i].cert.User[0] = byte(i)
	}
	for round := range 2000 {
		var cands []routeOffer
		for range 1 + rnd.IntN(12) {
			var p netip.Prefix
			if rnd.IntN(4) == 0 {
				a := [16]byte{0xfd, 0, byte(rnd.IntN(2))}
				a[3] = byte(rnd.IntN(256))
				p = netip.PrefixFrom(netip.AddrFrom16(a), 16+rnd.IntN(17))
			} else {
				a := [4]byte{10, byte(rnd.IntN(2)), byte(rnd.IntN(4)), byte(rnd.IntN(256))}
				p = netip.PrefixFrom(netip.AddrFrom4(a), 8+rnd.IntN(25))
			}
			if rnd.IntN(2) == 0 {
				p = p.Masked()
			}
			u := rnd.IntN(len(users))
			cands = append(cands, routeOffer{p: users[u], r: p, friend: u > 0})
		}
		markContested(cands)
		for i, c := range cands {
			want := false
			for j, o := range cands {
				if i != j && c.friend && o.friend && c.p.cert.User != o.p.cert.User && c.r.Overlaps(o.r) {
					want = true
				}
			}
			if c.contested != want {
				var all []string
				for _, o := range cands {
					all = append(all, fmt.Sprintf("%v by %d", o.r, o.p.cert.User[0]))
				}
				t.Fatalf("round %d: %v (user %d, friend %v) contested %v, want %v; offers %v", round, c.r, c.p.cert.User[0], c.friend, c.contested, want, all)
			}
		}
	}
}
