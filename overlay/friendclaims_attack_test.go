package overlay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
	"glow/relay"
)

// Attacks through what a friend asserts (its certificates, records and
// documents) beyond its subnet routes (froutes_attack_test.go).

// TestAttackFriendTwinKeys: bob's user key signs a certificate for a node
// "evil" that carries the WireGuard and control keys of alice's desk (bob
// learnt them from desk's certificate: a friend holds the certificates of
// the nodes shared with it), and hands it to nas as gossip does. Nothing
// proves bob's node holds those keys. nas must refuse it: else nas's
// WireGuard peer for desk's key takes evil's endpoint and addresses, and
// desk's control messages are taken as evil's. nas must keep reaching desk.
func TestAttackFriendTwinKeys(t *testing.T) {
	nas, desk, laptop := aliceAndFriendBob(t)
	waitFor(t, 20*time.Second, "nas to know laptop", func() bool { _, ok := peerStatus(nas, "laptop"); return ok })
	if got := dialCount(nas, desk.Cert().IPv4, 8080, 3); got != 3 {
		t.Fatalf("before the attack, nas -> desk:8080: %d/3", got)
	}

	dc := desk.Cert()
	keys, _ := member.NewNodeKeys()
	now := time.Now()
	v4, _ := member.AllocIPv4(keys.ID(), nil)
	evil := &member.Cert{Node: keys.ID(), Name: "evil", WG: dc.WG, Ctl: dc.Ctl, IPv4: v4,
		IPv6: member.NodeAddr6(laptop.mem.user.Public(), keys.ID()), NotBefore: now, NotAfter: now.Add(time.Hour)}
	member.SignCert(laptop.mem.user, evil)

	nas.mu.Lock()
	from := nas.paths.peers[laptop.ID()]
	if from == nil {
		nas.mu.Unlock()
		t.Fatal("nas has no peer for laptop")
	}
	nas.handleRecordsLocked(from, []recordMsg{{member.KindCert, evil.Marshal()}}, now)
	nas.flushCertsLocked()
	held := nas.mem.store.Cert(evil.Node) != nil
	ctlPeer := nas.paths.byCtl[dc.Ctl]
	bindEp := (*nas.bind.byCtlKey.Load())[dc.Ctl]
	nas.mu.Unlock()

	// Traffic to evil wakes its WireGuard peer (lazywg.go), then nas
	// speaks to desk.
	evilOK := dialCount(nas, evil.IPv4, 22, 1)
	deskOK := dialCount(nas, dc.IPv4, 8080, 3)
	holder := wgOwner(nas, netip.PrefixFrom(dc.IPv4, 32).String())
	t.Logf("nas holds evil's certificate: %v; desk's control key maps to %s (peer) and %v (bind); evil reached %d/1; nas -> desk:8080 %d/3; desk's /32 held by desk's key: %v",
		held, nameOf(ctlPeer), bindEp != nil && bindEp.ID == desk.ID(), evilOK, deskOK, holder == dc.WG.String())

	if held {
		t.Error("nas took a friend's certificate carrying desk's keys")
	}
	if ctlPeer == nil || ctlPeer.cert.Node != desk.ID() || bindEp == nil || bindEp.ID != desk.ID() {
		t.Error("desk's control key no longer maps to desk")
	}
	if deskOK != 3 || holder != dc.WG.String() {
		t.Error("nas lost desk")
	}
}

func nameOf(p *peer) string {
	if p == nil {
		return "nobody"
	}
	return p.cert.FQDN()
}

// TestAttackFriendNodeNames: bob's user key signs a certificate for a
// node named like alice's home: "home" under the user name "alice" (a
// certificate names its user as its signer likes; one whose id starts as
// home's is refused: TestAttackFriendShortID). A name typed on desk (glow ping, glow ip,
// --exit-node, the userspace proxy's names) must find home, never bob's
// nodes; a friend's node goes by the name alice gave bob.
func TestAttackFriendNodeNames(t *testing.T) {
	r := newFroutesRig(t)
	d := r.desk
	// bob's key, under the user name "alice".
	bobKey := r.bob
	fake := member.UserKey{Name: "alice", Priv: bobKey.Priv}
	now := time.Now()
	home := r.home.cert
	k1, _ := member.NewNodeKeys()
	v4, _ := member.AllocIPv4(k1.ID(), nil)
	twinName := &member.Cert{Node: k1.ID(), Name: "home", WG: k1.WGPublic(), Ctl: k1.CtlPublic(), IPv4: v4,
		IPv6: member.NodeAddr6(fake.Public(), k1.ID()), NotBefore: now, NotAfter: now.Add(time.Hour)}
	member.SignCert(&fake, twinName)

	d.mu.Lock()
	d.handleRecordsLocked(d.paths.peers[r.evil.cert.Node], []recordMsg{{member.KindCert, twinName.Marshal()}}, now)
	d.flushCertsLocked()
	if d.paths.peers[twinName.Node] == nil {
		d.mu.Unlock()
		t.Fatal("desk did not take bob's nodes")
	}
	targets := []string{"home", "home.alice", "home.alice.glow"}
	const rounds = 20
	wrong := map[string]int{}
	for _, tg := range targets {
		for range rounds {
			if p, err := d.findLocked(tg); err != nil || p.cert.Node != home.Node {
				wrong[tg]++
			}
		}
	}
	d.rt.prefs.ExitNode = "home.alice"
	exitWrong := 0
	for range rounds {
		if p := d.exitPeerLocked(); p == nil || p.cert.Node != home.Node {
			exitWrong++
		}
	}
	d.rt.prefs.ExitNode = ""
	bobsOK := 0
	if p, err := d.findLocked("home.bob"); err == nil && p.cert.Node == twinName.Node {
		bobsOK++
	}
	d.mu.Unlock()
	t.Logf("of %d lookups each, not home: %v; exit node home.alice not home %d/%d; home.bob finds bob's node: %d/1", rounds, wrong, exitWrong, rounds, bobsOK)
	for _, tg := range targets {
		if wrong[tg] != 0 {
			t.Errorf("%s: %d/%d lookups did not find home", tg, wrong[tg], rounds)
		}
	}
	if exitWrong != 0 {
		t.Errorf("exit node home.alice: %d/%d not home", exitWrong, rounds)
	}
	if bobsOK != 1 {
		t.Error("home.bob does not find bob's node named home")
	}
	// What desk shows of bob's node names it as alice's friend list does:
	// its replies, and its log (a path proven to it).
	d.mu.Lock()
	twinAt := netip.MustParseAddrPort("127.0.0.77:41641") // loopback: nothing leaves the machine
	d.setPathLocked(d.paths.peers[twinName.Node], twinAt, time.Millisecond, time.Now())
	d.mu.Unlock()
	lines := r.logged(twinAt.String())
	t.Logf("desk logged: %q", lines)
	if len(lines) == 0 {
		t.Error("desk logged nothing of the path to bob's node")
	}
	for _, l := range lines {
		if !strings.Contains(l, "home.bob") || strings.Contains(l, "home.alice") {
			t.Errorf("desk's log names bob's node as it claims, not as alice's friend list does: %q", l)
		}
	}
	// A node of a user who is no friend, named home under "alice" too (a
	// link from it is refused and logged): shown as a claim of an unknown
	// user, never as alice's home.
	_, strange := membertest.NewCert(t, membertest.NewUser(t, "alice"), "home", now)
	d.mu.Lock()
	strangeName := d.fqdnLocked(strange)
	d.mu.Unlock()
	if strangeName == "home.alice" || !strings.Contains(strangeName, "claimed by an unknown user") {
		t.Errorf("a stranger's node is shown as %q", strangeName)
	}
	_, err := d.Ping(context.Background(), "home.bob")
	t.Logf("ping home.bob: %v", err)
	if err == nil || !strings.Contains(err.Error(), "home.bob") || strings.Contains(err.Error(), "home.alice") {
		t.Errorf("ping home.bob: %v", err)
	}
}

// TestAttackFriendClaimsDeviceAddress: alice's device tv (via her node
// home) has an IPv4 address that only the device list names, and bob signs
// a certificate for a node of his with it (he saw it as the source of tv's
// packets to a node of his). desk must keep routing it to home alone
// (WireGuard allowed IPs, the packet path's address map): else bob's node
// may send from it and pass desk's filter as alice's tv.
func TestAttackFriendClaimsDeviceAddress(t *testing.T) {
	r := newFroutesRig(t)
	d := r.desk
	added, err := d.AddDevice("tv", "home", netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	tvV4 := added.Device.IPv4
	now := time.Now()
	k, _ := member.NewNodeKeys()
	evil := &member.Cert{Node: k.ID(), Name: "evil2", WG: k.WGPublic(), Ctl: k.CtlPublic(), IPv4: tvV4,
		IPv6: member.NodeAddr6(r.bob.Public(), k.ID()), NotBefore: now, NotAfter: now.Add(time.Hour)}
	member.SignCert(r.bob, evil)

	d.mu.Lock()
	d.handleRecordsLocked(d.paths.peers[r.evil.cert.Node], []recordMsg{{member.KindCert, evil.Marshal()}}, now)
	d.flushCertsLocked()
	p := d.paths.peers[evil.Node]
	if p == nil {
		d.mu.Unlock()
		t.Fatal("desk did not take evil2")
	}
	routed := p.routesTo(tvV4)
	inCfg := strings.Contains(d.bind.Peer(evil.Node).wg.cfg, tvV4.String()+"/32")
	ep := (*d.bind.byIP.Load())[tvV4]
	homeHas := slices.Contains(d.paths.peers[r.home.cert.Node].devices, tvV4)
	d.mu.Unlock()
	conflicts := d.Status().Conflicts
	t.Logf("tv's %v: routed to evil2 %v, in evil2's allowed IPs %v, packet path maps it to evil2 %v, home still has it %v; conflicts in status: %+v",
		tvV4, routed, inCfg, ep != nil && ep.ID == evil.Node, homeHas, conflicts)
	if routed || inCfg || ep == nil || ep.ID != r.home.cert.Node || !homeHas {
		t.Error("tv's address is routed to bob's node")
	}
	if len(conflicts) != 1 || conflicts[0].Addr != tvV4.String() || conflicts[0].Node != "evil2.bob" {
		t.Errorf("status conflicts: %+v", conflicts)
	}
}

// TestAttackFriendShortID: relayed frames name their ends by the first 8
// bytes of their node ids (wire.ShortID), and a certificate's id is
// whatever its user key signs. bob signs one whose id starts as home's.
// desk must refuse it: else its relay directory and its forwarding map
// may take home's short id for bob's node, and frames relayed to home go
// to bob's node, frames from it count as home's.
func TestAttackFriendShortID(t *testing.T) {
	r := newFroutesRig(t)
	d := r.desk
	home := r.home.cert
	now := time.Now()
	k, _ := member.NewNodeKeys()
	id := k.ID()
	copy(id[:8], home.Node[:8])
	v4, _ := member.AllocIPv4(id, nil)
	evil := &member.Cert{Node: id, Name: "twin", WG: k.WGPublic(), Ctl: k.CtlPublic(), IPv4: v4,
		IPv6: member.NodeAddr6(r.bob.Public(), id), NotBefore: now, NotAfter: now.Add(time.Hour)}
	member.SignCert(r.bob, evil)

	d.mu.Lock()
	d.handleRecordsLocked(d.paths.peers[r.evil.cert.Node], []recordMsg{{member.KindCert, evil.Marshal()}}, now)
	d.flushCertsLocked()
	held := d.mem.store.Cert(evil.Node) != nil
	const rounds = 20
	wrongShort, wrongMember := 0, 0
	for range rounds {
		d.bind.mu.Lock()
		d.bind.publishShortLocked()
		d.bind.mu.Unlock()
		if e := (*d.bind.byShort.Load())[home.Node.Short()]; e == nil || e.ID != home.Node {
			wrongShort++
		}
		if d.relayMembersLocked()[home.Node.Short()] != relay.Own {
			wrongMember++
		}
	}
	d.mu.Unlock()
	t.Logf("desk holds bob's certificate with home's short id: %v; of %d publishes, home's short id maps to another endpoint %d, to a friend in the relay directory %d",
		held, rounds, wrongShort, wrongMember)
	if held || wrongShort != 0 || wrongMember != 0 {
		t.Error("bob's node took home's short id")
	}
}

// TestAttackFriendEndpointFlood: a friend's nodes name their endpoints in
// NodeInfos they sign, and nothing proves the addresses are theirs. bob
// signs 16 nodes whose NodeInfos each name 16 endpoints of a victim (UDP
// sockets on loopback that never answer) and refreshes them, as a friend
// could to point alice's nodes at anyone. desk's pings to them must stay
// within a budget per friend user (friendProbeBurst, then
// friendProbeRate a second), not grow with the friend's nodes and
// endpoints (16 x 16 a second).
func TestAttackFriendEndpointFlood(t *testing.T) {
	r := newFroutesRig(t)
	d := r.desk
	const nodes, eps = 16, 16
	var got atomic.Int64
	var victims []netip.AddrPort
	for range eps {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		victims = append(victims, netip.MustParseAddrPort(pc.LocalAddr().String()))
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := pc.ReadFrom(buf); err != nil {
					return
				}
				got.Add(1)
			}
		}()
	}
	now := time.Now()
	var recs []recordMsg
	var infos []recordMsg
	for i := range nodes {
		k, c := membertest.NewCert(t, r.bob, fmt.Sprintf("f%d", i), now)
		recs = append(recs, recordMsg{member.KindCert, c.Marshal()})
		info := &member.NodeInfo{Node: c.Node, Seq: 1, Endpoints: victims}
		member.SignInfo(k.Sign, info)
		infos = append(infos, recordMsg{member.KindInfo, info.Marshal()})
	}
	start := time.Now()
	d.mu.Lock()
	from := d.paths.peers[r.evil.cert.Node]
	d.handleRecordsLocked(from, recs, now)
	d.flushCertsLocked()
	d.handleRecordsLocked(from, infos, now)
	d.dueLocked(now)
	d.mu.Unlock()
	// Let desk probe for 3 s, then take what arrived within a second more.
	time.Sleep(3 * time.Second)
	d.mu.Lock()
	for _, id := range d.paths.peers {
		if id.cert.User == r.evil.cert.User {
			id.cands = map[netip.AddrPort]*candidate{}
		}
	}
	elapsed := time.Since(start)
	d.mu.Unlock()
	time.Sleep(time.Second)
	n := got.Load()
	budget := int64(friendProbeBurst + friendProbeRate*elapsed.Seconds() + 1)
	t.Logf("bob's %d nodes x %d endpoints: desk sent %d pings to them in %v (budget %d)", nodes, eps, n, elapsed.Round(time.Millisecond), budget)
	if n > budget {
		t.Errorf("desk sent %d pings to a friend's unanswering endpoints in %v, over the budget of %d", n, elapsed, budget)
	}
}

// TestAttackFriendRenewalAnswer: a renewal answer carries certificates,
// and only an admin of our user answers our renewal requests. bob's node
// evil sends desk an unasked one carrying the certificate of a node of
// carol (another friend of alice's) that carol did not share with alice:
// as gossip, a friend's records of another user are refused
// (record-not-theirs); as a renewal answer desk must refuse it too.
func TestAttackFriendRenewalAnswer(t *testing.T) {
	r := newFroutesRig(t)
	d := r.desk
	carol := membertest.NewUser(t, "carol")
	now := time.Now()
	_, hidden := membertest.NewCert(t, carol, "hidden", now)
	d.mu.Lock()
	friends := membertest.SignedDoc(d.mem.user, member.KindFriends, 2, member.FormatFriends([]member.Friend{
		{Name: "bob", Key: [32]byte(r.bob.Public())}, {Name: "carol", Key: [32]byte(carol.Public())}}))
	if _, err := d.mem.store.AddDoc(friends); err != nil {
		d.mu.Unlock()
		t.Fatal(err)
	}
	from := netip.MustParseAddrPort("127.0.0.1:9")
	d.handleRecordsLocked(d.paths.peers[r.evil.cert.Node], []recordMsg{{member.KindCert, hidden.Marshal()}}, now)
	asGossip := d.mem.store.Cert(hidden.Node) != nil
	shared := sharedKey(r.evil.keys.Ctl, d.mem.cert.Ctl)
	pkt := sealCtl(nil, r.evil.cert.Ctl, shared, renewResp{Certs: [][]byte{hidden.Marshal()}}.marshal())
	d.handleControlLocked(pkt, from, now)
	d.flushCertsLocked()
	asRenewal := d.mem.store.Cert(hidden.Node) != nil
	d.mu.Unlock()
	t.Logf("carol's hidden node's certificate from bob's node: taken as gossip %v, as a renewal answer %v", asGossip, asRenewal)
	if asGossip || asRenewal {
		t.Error("desk took carol's certificate from bob's node")
	}
}

// TestAttackFriendRelaysOurTraffic: bob's node evil has direct paths to
// alice's desk and home (which have none to each other), and its NodeInfo
// gives both links the lowest cost, which is its to name. desk's route to
// home must not cross evil: a friend's node relays for its own user only,
// so home drops what evil passes on from desk (relay.Forwarder), and the
// route would be a black hole. A route to bob's node may cross evil.
func TestAttackFriendRelaysOurTraffic(t *testing.T) {
	r := newFroutesRig(t)
	d := r.desk
	_, other := membertest.NewCert(t, r.bob, "other", time.Now())
	link := func(n *rigNode, links ...member.LinkInfo) recordMsg {
		n.seq++
		info := &member.NodeInfo{Node: n.cert.Node, Seq: n.seq, Links: links}
		member.SignInfo(n.keys.Sign, info)
		return recordMsg{member.KindInfo, info.Marshal()}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	d.handleRecordsLocked(d.paths.peers[r.evil.cert.Node], []recordMsg{{member.KindCert, other.Marshal()}}, now)
	d.flushCertsLocked()
	d.handleRecordsLocked(d.paths.peers[r.evil.cert.Node], []recordMsg{link(&r.evil,
		member.LinkInfo{Node: d.id, Cost: 1}, member.LinkInfo{Node: r.home.cert.Node, Cost: 1}, member.LinkInfo{Node: other.Node, Cost: 1})}, now)
	own := &peer{cert: d.mem.cert}
	d.handleRecordsLocked(own, []recordMsg{link(&r.home, member.LinkInfo{Node: r.evil.cert.Node, Cost: 10})}, now)
	g := d.routeGraphLocked()
	g[d.id] = map[wire.NodeID]uint16{r.evil.cert.Node: 10} // desk's direct path to evil
	g[other.Node] = map[wire.NodeID]uint16{r.evil.cert.Node: 10}
	toHome := routeTo(d.routeGraphForLocked(g, r.home.cert.User).shortest(d.id, wire.NodeID{}), d.id, r.home.cert.Node)
	toOther := routeTo(d.routeGraphForLocked(g, other.User).shortest(d.id, wire.NodeID{}), d.id, other.Node)
	t.Logf("desk's route to home: %v; to bob's other: %v", d.relayNamesLocked(toHome), d.relayNamesLocked(toOther))
	if len(toHome) != 0 {
		t.Errorf("desk routes home's traffic through bob's node: %v", d.relayNamesLocked(toHome))
	}
	if len(toOther) != 2 || toOther[0] != r.evil.cert.Node {
		t.Errorf("desk's route to bob's other node: %v", d.relayNamesLocked(toOther))
	}
}

// TestAttackFriendSeenVotes: a pong says where the peer saw us, and the
// addresses most peers name are published as our endpoints (hints,
// maxSeenHints of them). bob's 12 nodes each say they saw desk at one of
// four addresses of his choosing; alice's home saw desk at its real
// public address. desk must keep publishing the real one, and bob's
// nodes must weigh as one observer, not twelve.
func TestAttackFriendSeenVotes(t *testing.T) {
	r := newFroutesRig(t)
	d := r.desk
	real := netip.MustParseAddrPort("203.0.113.7:41641")
	now := time.Now()
	var recs []recordMsg
	for i := range 12 {
		_, c := membertest.NewCert(t, r.bob, fmt.Sprintf("v%d", i), now)
		recs = append(recs, recordMsg{member.KindCert, c.Marshal()})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handleRecordsLocked(d.paths.peers[r.evil.cert.Node], recs, now)
	d.flushCertsLocked()
	i := 0
	for _, p := range d.paths.peers {
		switch {
		case p.cert.Node == r.home.cert.Node:
			p.seenUs, p.seenAt = real, now
		case p.cert.User == r.evil.cert.User && p.cert.Node != r.evil.cert.Node:
			p.seenUs, p.seenAt = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i%4)}), 9), now
			i++
		}
	}
	eps := d.localEndpointsLocked(now)
	bobs := 0
	for _, ep := range eps {
		if netip.MustParsePrefix("198.51.100.0/24").Contains(ep.Addr()) {
			bobs++
		}
	}
	t.Logf("desk publishes %v: the real address %v, %d of bob's", eps, slices.Contains(eps, real), bobs)
	if !slices.Contains(eps, real) {
		t.Error("bob's nodes outvoted the address home saw desk at")
	}
	if bobs > 1 {
		t.Errorf("desk publishes %d addresses bob's nodes named", bobs)
	}
}
