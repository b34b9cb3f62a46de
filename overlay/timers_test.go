package overlay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"glow/internal/wire"
	"glow/link"
	"glow/overlay/api"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// Tests of the control plane's timers on a clockRig (clockrig_test.go):
// every instant is chosen by the test, nothing waits on the wall clock.

var (
	addrX = netip.MustParseAddrPort("198.51.100.1:47470")
	addrY = netip.MustParseAddrPort("198.51.100.2:47470")
	addrZ = netip.MustParseAddrPort("203.0.113.9:47470")
)

// The timings the package doc promises, written out rather than taken from
// the constants, so that changing one fails here.
const (
	wantHeartbeatActive = 300 * time.Millisecond
	wantHeartbeatIdle   = 10 * time.Second
	wantDeadActive      = time.Second
	wantDeadIdle        = 25 * time.Second
	wantActiveWindow    = 5 * time.Second
	wantPingTimeout     = 5 * time.Second
	wantCandidateTTL    = 10 * time.Minute
	wantFragTimeout     = 10 * time.Second
	wantClockSkew       = 10 * time.Minute
	wantLazyIdle        = 5 * time.Minute
	wantFragStall       = 2 * time.Second
	wantCostRefresh     = 30 * time.Second
	wantBeaconReply     = time.Second
)

func secs(ds ...float64) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = time.Duration(d * float64(time.Second))
	}
	return out
}

// answerPending has every peer answer the pings of the node it has not
// answered yet (from the address each went to), or only those to addrs.
func (r *clockRig) answerPending(done map[[12]byte]bool, addrs ...netip.AddrPort) {
	for _, m := range r.msgs {
		if pm, ok := m.msg.(pingMsg); ok && !done[pm.TxID] && (len(addrs) == 0 || slices.Contains(addrs, m.to)) {
			done[pm.TxID] = true
			r.answer(m)
		}
	}
}

// TestTimerHeartbeatIdle: an idle peer's direct path is pinged every
// heartbeatIdle (10 s) and not sooner.
func TestTimerHeartbeatIdle(t *testing.T) {
	r := newClockRig(t, "b")
	r.direct("b", addrX)
	t0 := r.now
	done := map[[12]byte]bool{}
	r.answerPending(done)
	r.run(t0.Add(wantHeartbeatIdle-250*time.Millisecond), 250*time.Millisecond, nil)
	r.tickAt(t0.Add(wantHeartbeatIdle - time.Nanosecond))
	if hb := r.pings("b", addrX, t0.Add(time.Nanosecond)); len(hb) != 0 {
		t.Fatalf("heartbeat %v after the path was set, before heartbeatIdle", offsets(hb, t0))
	}
	r.tickAt(t0.Add(wantHeartbeatIdle))
	r.run(t0.Add(35*time.Second), 250*time.Millisecond, func(time.Time) { r.answerPending(done) })
	got := offsets(r.pings("b", addrX, t0.Add(time.Nanosecond)), t0)
	if want := secs(10, 20, 30); !slices.Equal(got, want) {
		t.Fatalf("idle heartbeats at %v, want %v", got, want)
	}
	r.locked(func() {
		if p := r.peer("b"); p.active != addrX || p.quality.Loss() != 0 {
			t.Fatalf("path %v, loss %v after answered heartbeats", p.active, p.quality.Loss())
		}
	})
}

// TestTimerHeartbeatActive: while the peer carries traffic its path is
// pinged every heartbeatActive (300 ms); once traffic stops, heartbeats
// stay fast for activeWindow and then slow to heartbeatIdle.
func TestTimerHeartbeatActive(t *testing.T) {
	r := newClockRig(t, "b")
	r.direct("b", addrX)
	t0 := r.now
	done := map[[12]byte]bool{}
	trafficUntil := t0.Add(2 * time.Second)
	r.run(t0.Add(20*time.Second), 50*time.Millisecond, func(now time.Time) {
		if !now.After(trafficUntil) {
			r.busy("b", now)
		}
		r.answerPending(done)
	})
	hb := r.pings("b", addrX, t0.Add(time.Nanosecond))
	var fast []time.Duration
	for d := 300 * time.Millisecond; d < 2*time.Second+wantActiveWindow; d += wantHeartbeatActive {
		fast = append(fast, d)
	}
	want := append(fast, fast[len(fast)-1]+wantHeartbeatIdle)
	if got := offsets(hb, t0); !slices.Equal(got, want) {
		t.Fatalf("heartbeats at %v,\nwant %v (every 300 ms while traffic is recent, then 10 s)", got, want)
	}
}

// TestTimerPathDeadActive: a busy peer's path whose heartbeats stay
// unanswered is dead after deadActive (1 s) from the first of them, not
// sooner; its traffic moves to a relay route at once (heartbeats follow it,
// relayed), and probing for a direct path starts again.
func TestTimerPathDeadActive(t *testing.T) {
	r := newClockRig(t, "b", "c")
	r.direct("b", addrX)
	r.direct("c", addrZ)
	// c links a and b: b's route without its direct path is a-c-b.
	r.publishInfo("c", "a", "b")
	r.publishInfo("b", "c")
	t0 := r.now
	r.run(t0.Add(300*time.Millisecond), 50*time.Millisecond, func(now time.Time) { r.busy("b", now) })
	first := r.lastPing("b")
	if first.at != t0.Add(wantHeartbeatActive) {
		t.Fatalf("first heartbeat at %v, want %v", first.at.Sub(t0), wantHeartbeatActive)
	}
	r.run(first.at.Add(wantDeadActive), 50*time.Millisecond, func(now time.Time) { r.busy("b", now) })
	r.locked(func() {
		if p := r.peer("b"); p.active != addrX {
			t.Fatalf("path %v at deadActive after the first unanswered heartbeat, want it kept", p.active)
		}
	})
	lost := first.at.Add(wantDeadActive + time.Nanosecond)
	r.busy("b", lost)
	r.tickAt(lost)
	r.locked(func() {
		p := r.peer("b")
		if p.active.IsValid() || !slices.Equal(p.route, []wire.NodeID{r.peers["c"].cert.Node, r.peers["b"].cert.Node}) {
			t.Fatalf("path %v, route %v just past deadActive; want none, via c", p.active, p.route)
		}
		if bp := p.ep.path.Load(); bp == nil || !bp.relay || bp.addr != addrZ {
			t.Fatalf("the Bind's path for b is %+v, want relayed to c at %v", bp, addrZ)
		}
	})
	if probes := r.pings("b", addrX, lost); len(probes) != 1 {
		t.Fatalf("%d probes of the lost address at the failover, want 1", len(probes))
	}
	r.run(lost.Add(time.Second), 50*time.Millisecond, func(now time.Time) { r.busy("b", now) })
	var relayed []rigMsg
	for _, m := range r.pings("b", addrZ, lost.Add(time.Nanosecond)) {
		if m.relayed {
			relayed = append(relayed, m)
		}
	}
	if got, want := intervals(relayed), []time.Duration{wantHeartbeatActive, wantHeartbeatActive}; len(relayed) != 3 || !slices.Equal(got, want) {
		t.Fatalf("relayed heartbeats at %v after the failover, want 3, 300 ms apart", offsets(relayed, lost))
	}
}

// TestTimerPathDeadIdle: an idle peer's path is dead deadIdle (25 s) after
// its first unanswered heartbeat; heartbeats it misses count as lost in its
// link quality meanwhile (after pingTimeout, at the next heartbeat).
func TestTimerPathDeadIdle(t *testing.T) {
	r := newClockRig(t, "b")
	r.direct("b", addrX)
	t0 := r.now
	done := map[[12]byte]bool{}
	// Three heartbeats answered, then none.
	r.run(t0.Add(30*time.Second+250*time.Millisecond), 250*time.Millisecond, func(time.Time) { r.answerPending(done) })
	first := t0.Add(40 * time.Second) // the first unanswered one
	r.run(first.Add(wantDeadIdle), 250*time.Millisecond, nil)
	var loss float64
	r.locked(func() {
		p := r.peer("b")
		if p.active != addrX {
			t.Fatalf("path %v at deadIdle after the first unanswered heartbeat, want it kept", p.active)
		}
		loss = p.quality.Loss()
	})
	// Heartbeats at 10, 20, 30 answered; 40, 50, 60 not, of which 40 and
	// 50 were counted lost by the heartbeat at 60.
	if got := offsets(r.pings("b", addrX, t0.Add(time.Nanosecond)), t0); !slices.Equal(got, secs(10, 20, 30, 40, 50, 60)) {
		t.Fatalf("heartbeats at %v", got)
	}
	if loss != 2.0/5 {
		t.Fatalf("loss %v after 3 answered and 2 expired heartbeats, want 0.4", loss)
	}
	r.tickAt(first.Add(wantDeadIdle + time.Nanosecond))
	r.locked(func() {
		if p := r.peer("b"); p.active.IsValid() {
			t.Fatalf("path %v kept past deadIdle", p.active)
		}
	})
}

// TestTimerProbing: a peer without a direct path is probed every
// probeEvery (1 s) for 10 s, every probeIdle (5 s) until a minute, then not
// at all; traffic makes probing fast again while it lasts, and a new
// candidate starts a new round.
func TestTimerProbing(t *testing.T) {
	r := newClockRig(t, "b")
	r.addCandidate("b", addrX)
	t0 := r.now
	r.tickAt(t0)
	r.run(t0.Add(2*time.Minute), 250*time.Millisecond, func(now time.Time) {
		if d := now.Sub(t0); d >= 90*time.Second && d <= 95*time.Second {
			r.busy("b", now)
		}
	})
	var want []time.Duration
	for s := 0; s <= 10; s++ {
		want = append(want, time.Duration(s)*time.Second)
	}
	for s := 15; s <= 60; s += 5 {
		want = append(want, time.Duration(s)*time.Second)
	}
	for s := 90; s <= 99; s++ { // traffic 90-95 s, recent until 100 s
		want = append(want, time.Duration(s)*time.Second)
	}
	if got := offsets(r.pings("b", addrX, t0), t0); !slices.Equal(got, want) {
		t.Fatalf("probes at %v,\nwant %v", got, want)
	}
	// A new candidate: both are probed at once, and fast again.
	t1 := r.now
	r.addCandidate("b", addrY)
	r.run(t1.Add(3*time.Second), 250*time.Millisecond, nil)
	for _, a := range []netip.AddrPort{addrX, addrY} {
		if got := offsets(r.pings("b", a, t1), t1); !slices.Equal(got, secs(0.25, 1.25, 2.25)) {
			t.Errorf("probes of %v after a new candidate at %v, want 0.25 s, 1.25 s, 2.25 s", a, got)
		}
	}
}

// TestTimerCandidateExpiry: a candidate neither named again nor answering
// for candidateTTL (10 min) is forgotten; the current path is kept however
// old, and naming a candidate again renews it.
func TestTimerCandidateExpiry(t *testing.T) {
	r := newClockRig(t, "b")
	r.addCandidate("b", addrX)
	r.direct("b", addrY) // the path, answered at t0; X never answers
	t0 := r.now
	done := map[[12]byte]bool{}
	r.tickAt(t0.Add(5 * time.Minute))
	r.answerPending(done, addrY) // heartbeats on the path answered
	r.addCandidate("b", addrZ)
	has := func(at time.Time, want ...netip.AddrPort) {
		t.Helper()
		r.tickAt(at)
		r.answerPending(done, addrY)
		var got []netip.AddrPort
		r.locked(func() {
			for a := range r.peer("b").cands {
				got = append(got, a)
			}
		})
		slices.SortFunc(got, netip.AddrPort.Compare)
		if !slices.Equal(got, want) {
			t.Fatalf("at %v: candidates %v, want %v", at.Sub(t0), got, want)
		}
	}
	has(t0.Add(wantCandidateTTL), addrX, addrY, addrZ)
	has(t0.Add(wantCandidateTTL+time.Nanosecond), addrY, addrZ)
	has(t0.Add(5*time.Minute+wantCandidateTTL), addrY, addrZ)
	has(t0.Add(5*time.Minute+wantCandidateTTL+time.Nanosecond), addrY)
	has(t0.Add(time.Hour), addrY)
}

// TestTimerPingTimeout: a ping (glow ping) unanswered for pingTimeout gets
// a timeout result, not sooner.
func TestTimerPingTimeout(t *testing.T) {
	r := newClockRig(t, "b")
	r.direct("b", addrX)
	t0 := r.now
	reply := make(chan PingResult, 1)
	r.locked(func() { r.n.pingLocked(r.peer("b"), netip.AddrPort{}, t0, reply) })
	r.tickAt(t0.Add(wantPingTimeout))
	select {
	case res := <-reply:
		t.Fatalf("result %+v at pingTimeout", res)
	default:
	}
	r.tickAt(t0.Add(wantPingTimeout + time.Nanosecond))
	select {
	case res := <-reply:
		if res.Err != "timeout" {
			t.Fatalf("result %+v past pingTimeout, want a timeout", res)
		}
	default:
		t.Fatal("no result past pingTimeout")
	}
}

// TestTimerFragmentTimeout: a record's fragments are held fragTimeout after
// the last one arrived, then dropped and counted.
func TestTimerFragmentTimeout(t *testing.T) {
	r := newClockRig(t, "b")
	r.direct("b", addrX)
	t0 := r.now
	parts := splitRecord(member.RecordKey{Kind: member.KindPolicy}, 1, bytes.Repeat([]byte("p"), 3*maxCtlBody))
	if len(parts) < 3 {
		t.Fatalf("%d fragments", len(parts))
	}
	pace := func(at time.Time) (held int, dropped uint64) {
		r.now = at
		r.locked(func() {
			r.n.paceFragmentsLocked(at)
			held, dropped = len(r.n.mem.frags.in), r.n.dropCtl["frag-timeout"]
		})
		return held, dropped
	}
	r.deliver("b", parts[0].marshal(), addrX)
	r.now = t0.Add(3 * time.Second)
	r.deliver("b", parts[1].marshal(), addrX) // the assembly's last fragment: 3 s
	last := r.now
	if h, d := pace(last.Add(wantFragTimeout)); h != 1 || d != 0 {
		t.Fatalf("at fragTimeout after the last fragment: %d assemblies held, %d timed out", h, d)
	}
	if h, d := pace(last.Add(wantFragTimeout + time.Nanosecond)); h != 0 || d != 1 {
		t.Fatalf("past fragTimeout: %d assemblies held, %d timed out", h, d)
	}
}

// TestTimerHandshakeClockSkew: a join or friend request is taken only if it
// was sealed within clockSkew of the receiver's clock, either way.
func TestTimerHandshakeClockSkew(t *testing.T) {
	var h handshakeNonces
	shared := sharedKey([32]byte{1}, wire.Key{2})
	sealed := time.Unix(1_800_000_000, 0)
	for _, c := range []struct {
		now time.Time
		ok  bool
	}{
		{sealed.Add(wantClockSkew), true},
		{sealed.Add(wantClockSkew + time.Nanosecond), false},
		{sealed.Add(-wantClockSkew), true},
		{sealed.Add(-wantClockSkew - time.Nanosecond), false},
	} {
		pkt := sealCtlSeq(nil, wire.Key{3}, shared, []byte{byte(msgJoinReq)}, uint64(sealed.UnixNano()), 0)
		if err := h.fresh(joinReq{}, pkt, c.now); (err == nil) != c.ok {
			t.Errorf("request sealed %v from now: %v, want ok %v", sealed.Sub(c.now), err, c.ok)
		}
	}
}

// rigBeacon is the named peer's beacon stamped at.
func (r *clockRig) rigBeacon(name string, at time.Time) []byte {
	p := r.peers[name]
	h := wire.Header(wire.KindBeacon)
	w := wire.Writer{B: h[:]}
	w.U16(47470)
	w.I64(at.UnixNano())
	w.Raw(p.cert.Marshal())
	return append(w.B, ed25519.Sign(p.keys.Sign, append(bytes.Clone(beaconContext), w.B...))...)
}

// TestTimerBeaconClockSkew: a beacon is taken only if stamped within
// clockSkew of the receiver's clock and after the last one taken from its
// sender.
func TestTimerBeaconClockSkew(t *testing.T) {
	r := newClockRig(t, "b")
	stamp := r.now
	from := netip.MustParseAddrPort("192.168.1.20:47470")
	take := func(b []byte, now time.Time) map[string]uint64 {
		r.now = now
		var drops map[string]uint64
		r.locked(func() {
			before := map[string]uint64{}
			for k, v := range r.n.dropCtl {
				before[k] = v
			}
			r.n.handleBeaconLocked(inbound{kind: wire.KindBeacon, buf: b, from: from, lan: true}, now, map[netip.AddrPort]time.Time{})
			drops = map[string]uint64{}
			for k, v := range r.n.dropCtl {
				if v != before[k] {
					drops[k] = v - before[k]
				}
			}
		})
		return drops
	}
	if d := take(r.rigBeacon("b", stamp), stamp.Add(wantClockSkew+time.Nanosecond)); d["beacon-stale"] != 1 {
		t.Fatalf("beacon stamped clockSkew+1ns ago: drops %v, want beacon-stale", d)
	}
	if d := take(r.rigBeacon("b", stamp.Add(wantClockSkew+time.Nanosecond)), stamp); d["beacon-stale"] != 1 {
		t.Fatalf("beacon stamped clockSkew+1ns ahead: drops %v, want beacon-stale", d)
	}
	b := r.rigBeacon("b", stamp)
	if d := take(b, stamp.Add(wantClockSkew)); len(d) != 0 {
		t.Fatalf("beacon stamped clockSkew ago: drops %v, want it taken", d)
	}
	if d := take(b, stamp.Add(wantClockSkew)); d["beacon-replay"] != 1 {
		t.Fatalf("the same beacon again: drops %v, want beacon-replay", d)
	}
}

// withDevice gives the rig's node a wireguard-go device over its Bind (on
// an in-memory TUN, never brought up: nothing is sent or read), for the
// lazy WireGuard peers.
func (r *clockRig) withDevice() {
	r.t.Helper()
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), r.n.bind, device.NewLogger(device.LogLevelSilent, ""))
	r.t.Cleanup(dev.Close)
	if err := dev.IpcSet(fmt.Sprintf("private_key=%x\n", r.n.keys.WG[:])); err != nil {
		r.t.Fatal(err)
	}
	r.n.dev = dev
	r.n.bind.dev.Store(dev)
}

// TestTimerLazyWireGuardTrim: a WireGuard peer configured on demand is
// removed lazyIdle (5 min) after it was configured or last sent to (it has
// had no handshake), not sooner.
func TestTimerLazyWireGuardTrim(t *testing.T) {
	r := newClockRig(t, "b")
	r.withDevice()
	e := r.n.bind.Peer(r.peers["b"].cert.Node)
	key := device.NoisePublicKey(r.peers["b"].cert.WG)
	configured := func() bool {
		on := e.wg.on.Load()
		if inDev := r.n.dev.LookupPeer(key) != nil; inDev != on {
			t.Fatalf("the Endpoint says configured %v, wireguard-go %v", on, inDev)
		}
		return on
	}
	r.n.bind.wakeWG(e) // a packet for b from the TUN
	r.n.bind.wgMu.Lock()
	since := e.wg.since // wakeWG reads the wall clock; the trims are relative to it
	r.n.bind.wgMu.Unlock()
	if !configured() {
		t.Fatal("not configured on demand")
	}
	if left := r.n.bind.trimWG(since.Add(wantLazyIdle - time.Nanosecond)); left != 1 || !configured() {
		t.Fatalf("trimmed before lazyIdle (%d left)", left)
	}
	if left := r.n.bind.trimWG(since.Add(wantLazyIdle)); left != 0 || configured() {
		t.Fatalf("kept at lazyIdle after it was configured (%d left)", left)
	}
	// Configured again, and sent to 4 minutes later: lazyIdle counts from
	// the last send.
	r.n.bind.wakeWG(e)
	r.n.bind.wgMu.Lock()
	since = e.wg.since
	r.n.bind.wgMu.Unlock()
	sent := since.Add(4 * time.Minute)
	e.lastSend.Store(sent.UnixNano())
	if left := r.n.bind.trimWG(sent.Add(wantLazyIdle - time.Nanosecond)); left != 1 || !configured() {
		t.Fatalf("trimmed before lazyIdle after the last send (%d left)", left)
	}
	if left := r.n.bind.trimWG(sent.Add(wantLazyIdle)); left != 0 || configured() {
		t.Fatalf("kept at lazyIdle after the last send (%d left)", left)
	}
}

// TestTimerWantOnce: a user document a neighbour announces newer is asked
// of one neighbour at a time: another that announces it within fragStall
// (2 s) is not asked too, one that announces it after is.
func TestTimerWantOnce(t *testing.T) {
	r := newClockRig(t, "b", "c")
	r.direct("b", addrX)
	r.direct("c", addrZ)
	t0 := r.now
	key := member.RecordKey{Kind: member.KindPolicy, Node: r.peers["b"].cert.Node}
	announce := func(name string, from netip.AddrPort, at time.Time) (wants int) {
		t.Helper()
		r.now = at
		seen := len(r.msgs)
		for _, m := range marshalDigests([]member.DigestEntry{{RecordKey: key, Version: 7}}) {
			r.deliver(name, m, from)
		}
		for _, m := range r.msgs[seen:] {
			if w, ok := m.msg.([]member.RecordKey); ok && m.peer == name && slices.Contains(w, key) {
				wants++
			}
		}
		return wants
	}
	if w := announce("b", addrX, t0); w != 1 {
		t.Fatalf("first announcement: %d wants, want 1", w)
	}
	if w := announce("c", addrZ, t0.Add(wantFragStall-time.Nanosecond)); w != 0 {
		t.Fatalf("second announcement within fragStall: %d wants, want 0", w)
	}
	if w := announce("c", addrZ, t0.Add(wantFragStall)); w != 1 {
		t.Fatalf("announcement at fragStall: %d wants, want 1", w)
	}
}

// TestTimerFriendRequestResend: glow friend add sends its request every
// second, each sealed anew, and gives up after 15 s with "unavailable".
// FriendAdd waits on real timers, so it runs under testing/synctest: the
// rig's node has no goroutines, and the bubble's clock jumps whenever
// FriendAdd waits.
func TestTimerFriendRequestResend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newClockRig(t)
		bob := membertest.NewUser(t, "bob")
		bobKeys, err := member.NewNodeKeys()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		inv := &member.Invite{Friend: true, UserHash: member.UserHash(bob.Public()), Inviter: bobKeys.CtlPublic(),
			Expires: start.Add(time.Hour), Endpoints: []netip.AddrPort{addrX}}
		_, err = r.n.FriendAdd(context.Background(), inv.Code())
		if !errors.Is(err, api.ErrUnavailable) {
			t.Fatalf("FriendAdd without an answer: %v, want unavailable", err)
		}
		if d := time.Since(start); d != 15*time.Second {
			t.Fatalf("gave up after %v, want 15s", d)
		}
		shared := sharedKey(bobKeys.Ctl, r.n.ctlPub)
		nonces := map[[24]byte]bool{}
		var at []time.Duration
		sent := r.log.take()
		for _, s := range sent {
			m, err := openCtl(s.pkt, shared)
			if err != nil || s.to != addrX {
				t.Fatalf("sent %d bytes to %v that bob does not open", len(s.pkt), s.to)
			}
			if msg, _ := parseCtl(m); msg == nil {
				t.Fatalf("sent bob a message that does not parse")
			} else if _, ok := msg.(friendReq); !ok {
				t.Fatalf("sent bob a %T", msg)
			}
			nonces[[24]byte(s.pkt[ctlNonceAt:])] = true
			at = append(at, s.at.Sub(start))
		}
		// At 15 s the ticker and the deadline fire together: one more
		// request may go out before it gives up.
		want := secs(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)
		if len(at) == len(want)+1 && at[len(want)] == 15*time.Second {
			at = at[:len(want)]
		}
		if !slices.Equal(at, want) {
			t.Fatalf("requests at %v, want one a second from 0 to 14 s", at)
		}
		if len(nonces) != len(sent) {
			t.Fatalf("%d distinct nonces in %d requests, want each sealed anew", len(nonces), len(sent))
		}
	})
}

// TestTimerCostRefresh: a change of a link's cost alone is published
// costRefresh (30 s) after the node info was last signed, not sooner; a
// new link is published at once.
func TestTimerCostRefresh(t *testing.T) {
	r := newClockRig(t, "b", "c")
	r.direct("b", addrX)
	t0 := r.now
	links := func(at time.Time) (out []member.LinkInfo) {
		r.now = at
		r.locked(func() {
			r.n.refreshInfoLocked(at)
			out = slices.Clone(r.n.mem.info.Links)
		})
		return out
	}
	b, c := r.peers["b"].cert.Node, r.peers["c"].cert.Node
	if l := links(t0); !slices.Equal(l, []member.LinkInfo{{Node: b, Cost: 10}}) {
		t.Fatalf("links %v, want b at cost 10", l)
	}
	r.locked(func() { r.peer("b").rtt = 100 * time.Millisecond })
	if l := links(t0.Add(wantCostRefresh - time.Nanosecond)); !slices.Equal(l, []member.LinkInfo{{Node: b, Cost: 10}}) {
		t.Fatalf("links %v before costRefresh, want the old cost", l)
	}
	if l := links(t0.Add(wantCostRefresh)); !slices.Equal(l, []member.LinkInfo{{Node: b, Cost: 100}}) {
		t.Fatalf("links %v at costRefresh, want b at cost 100", l)
	}
	r.direct("c", addrZ)
	want := []member.LinkInfo{{Node: b, Cost: 100}, {Node: c, Cost: 10}}
	slices.SortFunc(want, func(x, y member.LinkInfo) int { return compareID(x.Node, y.Node) })
	if l := links(r.now.Add(time.Nanosecond)); !slices.Equal(l, want) {
		t.Fatalf("links %v just after a new link, want %v", l, want)
	}
}

// TestTimerUnprovenProbes: a candidate from an unauthenticated source (a
// beacon's sender) is probed at the probing pace within the bytes it sent,
// at most maxUnprovenProbes (3) times, and then given up.
func TestTimerUnprovenProbes(t *testing.T) {
	r := newClockRig(t, "b")
	t0 := r.now
	r.locked(func() {
		r.n.earnLocked(addrY, 100*pingSize, t0) // a beacon's worth of credit, and more
		r.n.addCandidateLocked(r.peer("b"), addrY, true, t0)
	})
	r.tickAt(t0)
	r.run(t0.Add(10*time.Second), 250*time.Millisecond, nil)
	if got := offsets(r.pings("b", addrY, t0), t0); !slices.Equal(got, secs(0, 1, 2)) {
		t.Fatalf("probes of an unproven candidate at %v, want 0, 1, 2 s", got)
	}
	r.locked(func() {
		if _, ok := r.peer("b").cands[addrY]; ok || r.n.dropCtl["candidate-unanswered"] != 1 {
			t.Fatalf("unproven candidate kept after %d unanswered probes (drops %v)", maxUnprovenProbes, r.n.dropCtl)
		}
	})
	// With credit for one ping only: one probe, then none.
	r.locked(func() {
		r.n.earnLocked(addrX, pingSize, r.now)
		r.n.addCandidateLocked(r.peer("b"), addrX, true, r.now)
	})
	t1 := r.now
	r.run(t1.Add(5*time.Second), 250*time.Millisecond, nil)
	if got := offsets(r.pings("b", addrX, t1), t1); !slices.Equal(got, secs(0.25)) {
		t.Fatalf("probes of a candidate that sent one ping's worth at %v, want one", got)
	}
}

// TestTimerRelayedIdleQuiet: a peer reached only through a relay gets
// heartbeats (relayed, every 300 ms) while it carries traffic and none at
// all once idle: the links of its route are watched by their ends.
func TestTimerRelayedIdleQuiet(t *testing.T) {
	r := newClockRig(t, "b", "c")
	r.direct("c", addrZ)
	r.publishInfo("c", "a", "b")
	r.publishInfo("b", "c")
	r.locked(func() { r.n.computeRoutesLocked(r.now) })
	t0 := r.now
	done := map[[12]byte]bool{}
	r.run(t0.Add(time.Minute), 50*time.Millisecond, func(now time.Time) {
		if now.Sub(t0) <= time.Second {
			r.busy("b", now)
		}
		r.answerPending(done, addrZ) // c answers its heartbeats and relays b's answers
	})
	var got []time.Duration
	for _, m := range r.pings("b", netip.AddrPort{}, t0) {
		if !m.relayed || m.to != addrZ {
			t.Fatalf("a ping to b went to %v (relayed %v), want relayed through c", m.to, m.relayed)
		}
		got = append(got, m.at.Sub(t0))
	}
	// Traffic until 1 s, recent until 6 s: a heartbeat at the first tick
	// (50 ms; none went on this route before), then every 300 ms to 5.75 s.
	var want []time.Duration
	for d := 50 * time.Millisecond; d < time.Second+wantActiveWindow; d += wantHeartbeatActive {
		want = append(want, d)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("heartbeats to relayed b at %v,\nwant %v and none once idle", got, want)
	}
}

// TestTimerLinkRedial: a configured link (glow link add) that cannot be
// dialled is tried again after a backoff that doubles from 1 s, with
// jitter, up to 60 s. keepLink waits on real timers: it runs under
// testing/synctest, dialling a loopback port nobody listens on (refused at
// once), for ten minutes of the bubble's clock.
func TestTimerLinkRedial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	target, err := link.ParseURL("tcp://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		r := newClockRig(t)
		var mu sync.Mutex
		var tries []time.Time
		r.n.logf = func(format string, args ...any) {
			if strings.HasPrefix(format, "glow: link %s:") {
				mu.Lock()
				tries = append(tries, time.Now())
				mu.Unlock()
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		l := &configuredLink{target: target, cancel: cancel, status: "connecting"}
		start := time.Now()
		r.n.wg.Add(1)
		go r.n.keepLink(ctx, l)
		time.Sleep(10 * time.Minute)
		cancel()
		r.n.wg.Wait()
		r.locked(func() {
			if !strings.HasPrefix(l.status, "error: ") {
				t.Errorf("status %q, want the dial error", l.status)
			}
		})
		mu.Lock()
		defer mu.Unlock()
		if len(tries) < 10 || tries[0] != start {
			t.Fatalf("%d dials in 10 minutes, the first at %v", len(tries), tries[0].Sub(start))
		}
		d := time.Second
		for i := 1; i < len(tries); i++ {
			if gap := tries[i].Sub(tries[i-1]); gap < d/2 || gap >= d {
				t.Fatalf("dial %d came %v after the one before, want within [%v, %v)", i, gap, d/2, d)
			}
			d = min(2*d, time.Minute)
		}
	})
}

// streamTo gives the named peer a stream link as its path, as attachStream
// does but without its reader and writer goroutines: the node's control
// packets for the peer wait in the returned queue.
func (r *clockRig) streamTo(name string) (s *link.Stream, ctlq chan []byte) {
	r.t.Helper()
	rp := r.peers[name]
	ca, cb := net.Pipe()
	accept := func(wire.NodeID, []byte) error { return nil }
	other := make(chan *link.Stream, 1)
	go func() {
		s, err := link.Handshake(context.Background(), cb, link.Identity{Sign: rp.keys.Sign, Cert: rp.cert.Marshal()}, accept)
		if err != nil {
			r.t.Error(err)
		}
		other <- s
	}()
	s, err := link.Handshake(context.Background(), ca, link.Identity{Sign: r.n.keys.Sign, Cert: r.n.mem.cert.Marshal()}, accept)
	if err != nil {
		r.t.Fatal(err)
	}
	if b := <-other; b != nil {
		r.t.Cleanup(func() { b.Close() })
	}
	r.t.Cleanup(func() { s.Close() })
	ctlq = make(chan []byte, 64)
	r.locked(func() {
		p := r.peer(name)
		p.stream, p.streamName, p.streamQ = s, "tcp://test", ctlq
		p.route = nil
		r.n.applyPathLocked(p)
		p.hbWait = time.Time{}
	})
	return s, ctlq
}

// TestTimerStreamDeadIdle: a peer reached over a stream link (TCP,
// WebSocket, ssh) is pinged every 10 s over it; a link whose heartbeats go
// unanswered for deadIdle (25 s) after the first is closed, not sooner.
func TestTimerStreamDeadIdle(t *testing.T) {
	r := newClockRig(t, "b")
	s, ctlq := r.streamTo("b")
	shared := r.peers["b"].shared
	t0 := r.now
	var pings []time.Duration
	drain := func() {
		for {
			select {
			case pkt := <-ctlq:
				if m, err := openCtl(pkt, shared); err == nil && msgType(m[0]) == msgPing {
					pings = append(pings, r.now.Sub(t0))
				}
			default:
				return
			}
		}
	}
	closed := func() bool {
		select {
		case <-s.Done():
			return true
		default:
			return false
		}
	}
	first := t0 // the first heartbeat goes at once: none went on this link
	for at := t0; !at.After(first.Add(wantDeadIdle)); at = at.Add(250 * time.Millisecond) {
		r.tickAt(at)
		drain()
	}
	if !slices.Equal(pings, secs(0, 10, 20)) {
		t.Fatalf("heartbeats over the link at %v, want 0, 10, 20 s", pings)
	}
	if closed() {
		t.Fatal("link closed at deadIdle after the first unanswered heartbeat")
	}
	r.tickAt(first.Add(wantDeadIdle + time.Nanosecond))
	if !closed() {
		t.Fatal("link still open past deadIdle")
	}
}

// TestTimerBeaconReplyRate: a node that hears a peer's beacon while it has
// no path to it answers with its own beacon (the sender may not know it),
// at most once per maxBeaconReply (1 s) per address, however often the
// beacons come.
func TestTimerBeaconReplyRate(t *testing.T) {
	r := newClockRig(t, "b")
	from := netip.MustParseAddrPort("192.168.1.20:47470")
	replied := map[netip.AddrPort]time.Time{}
	t0 := r.now
	var replies []time.Duration
	hear := func(at time.Time) {
		r.now = at
		r.locked(func() {
			r.n.handleBeaconLocked(inbound{kind: wire.KindBeacon, buf: r.rigBeacon("b", at), from: from}, at, replied)
		})
		for _, s := range r.log.take() {
			if wire.Classify(s.pkt) == wire.KindBeacon && s.to == from {
				replies = append(replies, at.Sub(t0))
			}
		}
	}
	for d := time.Duration(0); d <= 3*time.Second; d += 100 * time.Millisecond {
		hear(t0.Add(d))
	}
	if want := secs(0, 1.1, 2.2); !slices.Equal(replies, want) {
		t.Fatalf("beacon replies at %v to a beacon every 100 ms, want %v", replies, want)
	}
	hear(t0.Add(2200*time.Millisecond + wantBeaconReply))
	if len(replies) != 3 {
		t.Fatalf("a reply %v after the last, want none at exactly maxBeaconReply", wantBeaconReply)
	}
	hear(t0.Add(2200*time.Millisecond + wantBeaconReply + time.Nanosecond))
	if len(replies) != 4 {
		t.Fatalf("no reply just past maxBeaconReply after the last (replies at %v)", replies)
	}
}

// TestTimerNewLinkCostSettles: a new direct path's first RTT is one sample,
// taken while both ends were busy setting it up, and may be far above the
// link's (here 15 ms on a 0.2 ms link: cost 50 where 10 is right). That
// cost must not hold the link out of the routes for costRefresh: the node
// confirms the RTT with a heartbeat at its next tick, and a cost that falls
// is published at once (one that rises still waits for costRefresh).
func TestTimerNewLinkCostSettles(t *testing.T) {
	r := newClockRig(t, "b")
	t0 := r.now
	r.addCandidate("b", addrX)
	r.tickAt(t0)
	probes := r.pings("b", addrX, t0)
	if len(probes) == 0 {
		t.Fatal("no probe of b")
	}
	r.now = t0.Add(15 * time.Millisecond) // a slow first answer
	r.answer(probes[len(probes)-1])
	b := r.peers["b"].cert.Node
	cost := func() (c uint16) {
		r.locked(func() {
			r.n.refreshInfoLocked(r.now)
			for _, l := range r.n.mem.info.Links {
				if l.Node == b {
					c = l.Cost
				}
			}
		})
		return c
	}
	if c := cost(); c != 50 {
		t.Fatalf("first cost %d, want 50 (rtt 15 ms)", c)
	}
	answered := map[[12]byte]bool{}
	var settled time.Duration
	for at := t0.Add(tickEvery); at.Before(t0.Add(40 * time.Second)); at = at.Add(tickEvery) {
		r.tickAt(at)
		r.now = at.Add(200 * time.Microsecond)
		r.answerPending(answered, addrX)
		if cost() == 10 {
			settled = at.Sub(t0)
			break
		}
	}
	t.Logf("cost 10 published %v after the path", settled)
	if settled == 0 || settled > time.Second {
		t.Fatalf("cost 10 published %v after the path, want within 1 s", settled)
	}
}
