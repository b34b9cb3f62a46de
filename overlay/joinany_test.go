package overlay

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"glow/nat/natlab"
	"glow/overlay/member"
)

// startJoin starts a node on h that joins with code, in the background:
// Start returns only once the join is done or failed. mods change its
// Config.
func startJoin(t *testing.T, h *natlab.Host, name, code string, logs *strings.Builder, mu *sync.Mutex, mods ...func(*Config)) chan any {
	done := make(chan any, 1)
	go func() {
		cfg := Config{
			StateDir: t.TempDir(), NodeName: name, Userspace: true, OpenUserspace: openUserspace, NoDiscovery: true, NoPortMap: true,
			Port: DefaultPort, JoinCode: code,
			ListenPacket: func(port uint16) (net.PacketConn, error) { return h.ListenPacket(port) },
			HostAddrs:    func() []netip.Addr { return []netip.Addr{h.Addr()} },
			Logf: func(f string, a ...any) {
				mu.Lock()
				logs.WriteString(name + ": " + strings.TrimSpace(fmt.Sprintf(f, a...)) + "\n")
				mu.Unlock()
			},
		}
		for _, mod := range mods {
			mod(&cfg)
		}
		n, err := Start(cfg)
		if err != nil {
			done <- err
			return
		}
		t.Cleanup(func() { n.Close() })
		done <- n
	}()
	return done
}

// TestJoinHomeFirst: the user starts at home. The NAS, behind a NAT that
// filters by address and port, creates the user; a public VPS joins from
// the NAS's code after 'glow link add udp://VPS:47470' on the NAS (the VPS
// cannot reach the NAS, the NAS can reach the VPS); then a laptop behind a
// hard NAT (a port per destination), which can reach only the VPS, joins
// from a fresh NAS code and reaches the NAS. Before joinrelay.go the VPS
// ignored the NAS's beacons and failed after 30 s.
func TestJoinHomeFirst(t *testing.T) {
	in := natlab.NewInternet()
	vpsHost := in.NewHost(netip.MustParseAddr("198.51.100.10"))
	nas := labNode(t, sitePortRestr.host(in, 1), nil, "nas", func(c *Config) { c.UserName = "alice" })
	var mu sync.Mutex
	var logs strings.Builder
	defer func() {
		if t.Failed() {
			mu.Lock()
			t.Log("joiners' logs:\n" + logs.String())
			mu.Unlock()
		}
	}()

	code, err := nas.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := startJoin(t, vpsHost, "vps", code, &logs, &mu)
	waitForHint(t, &logs, &mu) // the user reads the joiner's hint, then:
	if err := nas.AddLink("udp://198.51.100.10:47470"); err != nil {
		t.Fatal(err)
	}
	var vps *Node
	switch r := (<-res).(type) {
	case error:
		t.Fatalf("vps: %v", r)
	case *Node:
		vps = r
	}
	t.Logf("JOIN vps (public) from the NAS's code, with link add on the NAS: %v", time.Since(start).Round(time.Millisecond))
	waitFor(t, 20*time.Second, "nas to reach the vps directly", func() bool {
		p, ok := peerStatus(nas, "vps")
		return ok && p.Online && p.Path == "direct"
	})

	code, err = nas.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := member.ParseInvite(code)
	if !containsAddr(inv.Endpoints, netip.MustParseAddr("198.51.100.10")) {
		t.Fatalf("the NAS's code names no address of the public vps: %v", inv.Endpoints)
	}
	start = time.Now()
	res = startJoin(t, siteSymmetric.host(in, 2), "laptop", code, &logs, &mu)
	var laptop *Node
	switch r := (<-res).(type) {
	case error:
		t.Fatalf("laptop: %v", r)
	case *Node:
		laptop = r
	}
	t.Logf("JOIN laptop (hard NAT) from a NAS code, through the vps: %v", time.Since(start).Round(time.Millisecond))
	if d := vps.Status().Drops; d["control/join-via-rate-limited"] != 0 {
		t.Logf("vps drops: %v", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		r, err := laptop.Ping(ctx, "nas")
		if err == nil && r.Err == "" {
			t.Logf("laptop -> nas: %+v after %v", r, time.Since(start).Round(time.Millisecond))
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("laptop cannot reach the nas: %+v %v", r, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	tcpEcho(t, laptop, nas, 7001)
}

// waitForHint returns once a joiner started by startJoin has logged that
// it got no answer yet and what to run on a member (join.go's hint): the
// join is under way and failing, not merely started.
func waitForHint(t *testing.T, logs *strings.Builder, mu *sync.Mutex) {
	t.Helper()
	waitFor(t, joinTimeout, "the joiner's hint", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), "no answer yet")
	})
}

func containsAddr(eps []netip.AddrPort, a netip.Addr) bool {
	for _, ep := range eps {
		if ep.Addr() == a {
			return true
		}
	}
	return false
}

// recordConn keeps a copy of every datagram written to it.
type recordConn struct {
	net.PacketConn
	mu   sync.Mutex
	sent [][]byte
}

func (c *recordConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	c.sent = append(c.sent, append([]byte(nil), b...))
	c.mu.Unlock()
	return c.PacketConn.WriteTo(b, addr)
}

// TestAttackJoinVia: a joiner whose code names only a member that is not
// the inviter joins through it. What the member passes on is of no use to
// it or to anyone who sees it: it does not open with the member's key, and
// the joiner's requests replayed (to the member and to the inviter) get no
// answer. A stranger flooding the member with requests for the inviter gets
// only a few passed on.
func TestAttackJoinVia(t *testing.T) {
	admin, mid := memberPair(t, nil, nil)
	code, err := admin.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := member.ParseInvite(code)
	memberAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), mid.Port())
	adminAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), admin.Port())
	inv.Endpoints = []netip.AddrPort{memberAddr} // the joiner reaches only the member

	keys, _ := member.NewNodeKeys()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rec := &recordConn{PacketConn: pc}
	req := joinReq{CodeID: inv.ID(), Node: keys.ID(), WG: keys.WGPublic(), Name: "joiner"}
	req.Proof = joinProof(inv.Secret, inv.Inviter, keys.CtlPublic(), req.Node, req.WG, req.Name, req.Nonce)
	copy(req.Sig[:], ed25519.Sign(keys.Sign, joinSigned(inv.Inviter, keys.CtlPublic(), req)))
	start := time.Now()
	resp, err := joinExchange(rec, inv, keys.Ctl, keys.CtlPublic(), req, t.Logf)
	if err != nil || !resp.OK {
		t.Fatalf("join through the member: %v %+v", err, resp)
	}
	t.Logf("joined through the member (not the inviter) in %v", time.Since(start).Round(time.Millisecond))

	// What the member saw.
	rec.mu.Lock()
	sent := rec.sent
	rec.mu.Unlock()
	opened := 0
	for _, b := range sent {
		if _, err := openCtl(b[joinViaOverhead:], sharedKey(mid.keys.Ctl, keys.CtlPublic())); err == nil {
			opened++
		}
	}
	admin.mu.Lock()
	replays0, answered0 := admin.dropCtl["handshake-replay"], len(admin.adm.joinAnswers)
	admin.mu.Unlock()
	for range 5 {
		for _, b := range sent {
			pc.WriteTo(b, net.UDPAddrFromAddrPort(memberAddr))
			pc.WriteTo(b, net.UDPAddrFromAddrPort(adminAddr))
		}
	}
	// Answers would come to pc: count what came once every replay and
	// anything it caused has been handled (joinViaBarrier).
	answers := joinViaBarrier(t, pc, admin, mid)
	admin.mu.Lock()
	replays := admin.dropCtl["handshake-replay"] - replays0
	_ = answered0
	admin.mu.Unlock()
	t.Logf("member opened %d of %d requests it passed on; %d replays (to member and inviter) got %d answers, %d counted as handshake-replay at the inviter",
		opened, len(sent), 10*len(sent), answers, replays)
	if opened != 0 || answers != 0 || replays == 0 {
		t.Errorf("opened %d, answers to replays %d, replays counted %d", opened, answers, replays)
	}

	// A stranger floods the member with requests naming the inviter.
	stranger, _ := member.NewNodeKeys()
	shared := sharedKey(stranger.Ctl, admin.ctlPub)
	fwd0 := mid.Status().Drops["control/join-via-rate-limited"]
	admin.mu.Lock()
	unknown0 := admin.dropCtl["unknown-sender"] + admin.dropCtl["join-refused"] + admin.dropCtl["handshake-replay"]
	admin.mu.Unlock()
	const flood = 200
	fstart := time.Now()
	for i := 0; i < flood; i++ {
		junk := joinReq{Name: "x"}
		pc.WriteTo(joinVia(admin.ctlPub, sealCtl(nil, stranger.CtlPublic(), shared, junk.marshal())), net.UDPAddrFromAddrPort(memberAddr))
		time.Sleep(12 * time.Millisecond) // within the per-source limit of all unauthenticated datagrams (ctlqueue.go)
	}
	secs := time.Since(fstart).Seconds()
	joinViaBarrier(t, pc, admin, mid)
	limited := mid.Status().Drops["control/join-via-rate-limited"] - fwd0
	admin.mu.Lock()
	reached := admin.dropCtl["unknown-sender"] + admin.dropCtl["join-refused"] + admin.dropCtl["handshake-replay"] - unknown0
	admin.mu.Unlock()
	t.Logf("stranger's flood: %d join-via packets to the member, %d refused by its rate limit, %d reached the inviter (%.1f s)", flood, limited, reached, secs)
	if limited < flood-joinFwdBurst-uint64(joinFwdRate*secs)-1 {
		t.Errorf("the member's rate limit refused %d of %d", limited, flood)
	}
	if float64(reached) > joinFwdBurst+joinFwdRate*secs+1 {
		t.Errorf("%d of %d passed on", reached, flood)
	}
}

// joinViaBarrier returns once everything pc sent to the member and the
// inviter, and everything that caused, has been handled, and how many
// datagrams pc got meanwhile. It waits on barriers, not for a while: each
// is a message counted as a drop where it arrives, sent behind the earlier
// traffic over the same path and queue (each queue is FIFO):
//
//	pc -> member, pc -> inviter: a malformed join-via each (join-via-malformed)
//	member -> inviter: a joinFwd naming no address (join-fwd-bad), behind what it passed on
//	inviter -> member: a joinBack for no asked address (join-back-unasked), behind its answers
//	member -> pc: a marker, behind anything the member sent pc
func joinViaBarrier(t *testing.T, pc net.PacketConn, admin, mid *Node) (got int) {
	t.Helper()
	for _, n := range []*Node{mid, admin} {
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.Port()))
		c0 := dropped(n, "join-via-malformed")
		waitFor(t, 10*time.Second, n.Cert().Name+" to take what pc sent it", func() bool {
			if dropped(n, "join-via-malformed") > c0 {
				return true
			}
			pc.WriteTo(joinVia(admin.ctlPub, []byte("x")), to) // again: the rate limit before the queue may refuse one
			return false
		})
	}
	for _, hop := range []struct {
		from, to *Node
		m        []byte
		counted  string
	}{
		{mid, admin, joinFwd{Pkt: []byte("x")}.marshal(), "join-fwd-bad"},
		{admin, mid, joinBack{Pkt: []byte("x")}.marshal(), "join-back-unasked"},
	} {
		c0 := dropped(hop.to, hop.counted)
		hop.from.mu.Lock()
		hop.from.sendCtlLocked(hop.from.paths.peers[hop.to.ID()], netip.AddrPort{}, hop.m)
		hop.from.mu.Unlock()
		waitFor(t, 10*time.Second, hop.to.Cert().Name+" to take what "+hop.from.Cert().Name+" sent it", func() bool {
			return dropped(hop.to, hop.counted) > c0
		})
	}
	marker := []byte("glow test marker")
	mid.bind.SendTo(marker, pc.LocalAddr().(*net.UDPAddr).AddrPort())
	buf := make([]byte, 2048)
	pc.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound on a failing test
	defer pc.SetReadDeadline(time.Time{})
	for {
		k, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no marker from the member: %v", err)
		}
		if string(buf[:k]) == string(marker) {
			return got
		}
		got++
	}
}

// FuzzParseJoinRelay: the join-relay messages and a joiner's beacon check
// take any bytes without panicking, and the messages round-trip.
func FuzzParseJoinRelay(f *testing.F) {
	f.Add(joinFwd{Addr: netip.MustParseAddrPort("1.2.3.4:5"), Pkt: []byte("GLC\x01")}.marshal())
	f.Add(joinBack{Addr: netip.MustParseAddrPort("[::1]:5"), Pkt: []byte("x")}.marshal())
	f.Add([]byte("GLB\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		joinBeacon(b, [16]byte{}, time.Now())
		m, err := parseCtl(b)
		if err != nil {
			return
		}
		var again any
		switch m := m.(type) {
		case joinFwd:
			again, err = parseCtl(m.marshal())
		case joinBack:
			again, err = parseCtl(m.marshal())
		default:
			return
		}
		if err != nil || fmt.Sprint(again) != fmt.Sprint(m) {
			t.Fatalf("does not round-trip: %v %v", m, err)
		}
	})
}

// TestJoinLinkAddOnMember: the inviter and another member share a home
// LAN behind a NAT; a public VPS joins from the inviter's code, which names
// only home addresses. 'glow link add udp://VPS:47470' on the member that
// is not the inviter lets the join complete: the VPS asks the member, which
// passes the request on to the inviter.
func TestJoinLinkAddOnMember(t *testing.T) {
	in := natlab.NewInternet()
	gw := in.NewNAT(natlab.NATConfig{Public: netip.MustParseAddr("203.0.113.1"), Mapping: natlab.EndpointIndependent,
		Filtering: natlab.AddressAndPortDependentFiltering, Timeout: time.Minute})
	nas := labNode(t, gw.NewHost(netip.MustParseAddr("192.168.1.2")), nil, "nas", func(c *Config) { c.UserName = "alice" })
	code, err := nas.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	desk := labNode(t, gw.NewHost(netip.MustParseAddr("192.168.1.3")), nil, "desk", func(c *Config) { c.JoinCode = code })
	waitFor(t, 20*time.Second, "desk to reach the nas", func() bool { return directPeers(desk) == 1 })

	var mu sync.Mutex
	var logs strings.Builder
	defer func() {
		if t.Failed() {
			mu.Lock()
			t.Log("joiner's log:\n" + logs.String())
			mu.Unlock()
		}
	}()
	if code, err = nas.Invite(time.Minute, 1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := startJoin(t, in.NewHost(netip.MustParseAddr("198.51.100.10")), "vps", code, &logs, &mu)
	waitForHint(t, &logs, &mu)
	if err := desk.AddLink("udp://198.51.100.10:47470"); err != nil {
		t.Fatal(err)
	}
	switch r := (<-res).(type) {
	case error:
		t.Fatalf("vps: %v", r)
	case *Node:
		t.Logf("JOIN vps from the nas's code after link add on desk: %v", time.Since(start).Round(time.Millisecond))
		if c := r.Cert(); c.UserName != "alice" {
			t.Fatalf("vps joined %q", c.UserName)
		}
	}
	mu.Lock()
	via := strings.Contains(logs.String(), "desk.alice shows itself")
	mu.Unlock()
	if !via {
		t.Errorf("the vps did not ask desk")
	}
}
