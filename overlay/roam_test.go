package overlay

import (
	"net/netip"
	"testing"
	"time"

	"glow/overlay/member"
)

// roamRig plays an idle peer b whose direct path is at addrX and whose
// port then moves to moved at t0+1s: from then on its heartbeats (every
// heartbeatIdle, as an idle peer's) come from moved, the node's pings to
// moved are answered and those to addrX are not (unless oldAlive), and its
// boot id is newBoot from the move on (the same as before if not
// restarted). It returns when the node's path to b left addrX (or after
// 60 s) and how many times the path changed.
func roamRig(t *testing.T, moved netip.AddrPort, oldAlive, restarted bool, mods ...func(*clockRig)) (took time.Duration, path netip.AddrPort, switches int) {
	t.Helper()
	r := newClockRig(t, "b")
	for _, mod := range mods {
		mod(r)
	}
	boot := [8]byte{1}
	r.deliver("b", pingMsg{TxID: [12]byte{1}, Boot: boot}.marshal(), addrX)
	r.direct("b", addrX)
	t0 := r.now
	done := map[[12]byte]bool{}
	r.answerPending(done)
	move := t0.Add(time.Second)
	if restarted {
		boot = [8]byte{2}
	}
	last, tx := addrX, byte(1)
	var lastPing time.Time
	r.run(t0.Add(60*time.Second), 50*time.Millisecond, func(now time.Time) {
		if !now.Before(move) && now.Sub(lastPing) >= heartbeatIdle {
			tx++
			lastPing = now
			r.deliver("b", pingMsg{TxID: [12]byte{tx}, Boot: boot}.marshal(), moved)
		}
		if oldAlive || now.Before(move) {
			r.answerPending(done)
		} else {
			r.answerPending(done, moved)
		}
		var cur netip.AddrPort
		r.locked(func() { cur = r.peer("b").active })
		if cur != last {
			switches++
			last = cur
			if took == 0 && cur == moved {
				took = now.Sub(move)
			}
		}
	})
	return took, last, switches
}

// TestRoamPortMoved: an idle peer's port moves (its NAT remapped it, or a
// port clash moved it): its next heartbeat comes from the new address, the
// node confirms the new address with a ping of its own and checks the old
// one with a heartbeat; when the old one stays silent for heartbeatActive
// while the new one answers, the path moves at once. Before roam.go the
// path stayed on the dead address until deadIdle (25 s) and then went
// through no path and probing.
func TestRoamPortMoved(t *testing.T) {
	moved := netip.MustParseAddrPort("198.51.100.1:40001")
	took, path, switches := roamRig(t, moved, false, false)
	t.Logf("ROAM idle peer, port moved: path at %v %v after the move (%d changes)", path, took, switches)
	if path != moved || took == 0 {
		t.Fatalf("path %v after 60 s, want %v", path, moved)
	}
	if took > heartbeatActive+time.Second {
		t.Errorf("the path followed the move after %v, want within heartbeatActive of the first ping from there", took)
	}
	if switches != 1 {
		t.Errorf("the path changed %d times, want once (straight to the new address)", switches)
	}
}

// TestRoamRestarted: a peer that restarted (a new boot id) on another port
// is followed at the first pong from its new address, without waiting to
// see the old address silent.
func TestRoamRestarted(t *testing.T) {
	moved := netip.MustParseAddrPort("198.51.100.1:40002")
	took, path, switches := roamRig(t, moved, false, true)
	t.Logf("ROAM idle peer, restarted on another port: path at %v %v after the move (%d changes)", path, took, switches)
	if path != moved || switches != 1 {
		t.Fatalf("path %v after 60 s (%d changes), want %v once", path, switches, moved)
	}
	if took >= heartbeatActive {
		t.Errorf("followed the restarted peer after %v, want at its first pong", took)
	}
}

// TestRoamNoFlap: a peer speaks from a second address while the current
// one still answers (a probe, an address of another family): the path
// stays where it is.
func TestRoamNoFlap(t *testing.T) {
	other := netip.MustParseAddrPort("198.51.100.1:40003")
	_, path, switches := roamRig(t, other, true, false)
	if path != addrX || switches != 0 {
		t.Fatalf("path %v after %d changes, want it kept at %v", path, switches, addrX)
	}
}

// TestRoamInfoMoved: a peer whose signed info lists its new address and no
// longer the old one is followed at the first pong from the new address.
func TestRoamInfoMoved(t *testing.T) {
	moved := netip.MustParseAddrPort("198.51.100.1:40004")
	took, path, switches := roamRig(t, moved, false, false, func(r *clockRig) {
		p := r.peers["b"]
		info := &member.NodeInfo{Node: p.cert.Node, Seq: uint64(r.now.UnixNano()), Endpoints: []netip.AddrPort{moved}}
		member.SignInfo(p.keys.Sign, info)
		r.locked(func() {
			if _, err := r.n.mem.store.AddInfo(info); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Logf("ROAM idle peer whose info lists its new address: path at %v %v after the move (%d changes)", path, took, switches)
	if path != moved || switches != 1 {
		t.Fatalf("path %v after 60 s (%d changes), want %v once", path, switches, moved)
	}
	if took >= heartbeatActive {
		t.Errorf("followed after %v, want at its first pong", took)
	}
}

// TestRoamSlowPathKept: a path of 400 ms RTT that works is not left for an
// address the peer also speaks from, a little faster: a heartbeat counts as
// unanswered only after twice the path's RTT (stallAfter), not after
// heartbeatActive (with heartbeatActive the path moved at the first ping
// from the other address).
func TestRoamSlowPathKept(t *testing.T) {
	r := newClockRig(t, "b")
	r.direct("b", addrX)
	const rtt, otherRTT = 400 * time.Millisecond, 250 * time.Millisecond // not twice as fast: no reason to move
	r.locked(func() { r.peer("b").rtt = rtt })
	done := map[[12]byte]bool{}
	r.answerPending(done)
	other := netip.MustParseAddrPort("198.51.100.1:40005")
	t0 := r.now
	tx := byte(1)
	var lastPing time.Time
	switches := 0
	r.run(t0.Add(30*time.Second), 50*time.Millisecond, func(now time.Time) {
		if now.Sub(lastPing) >= heartbeatIdle {
			tx++
			lastPing = now
			r.deliver("b", pingMsg{TxID: [12]byte{tx}}.marshal(), other)
		}
		for _, m := range r.msgs { // the path answers after rtt, the other address a little sooner
			d := rtt
			if m.to == other {
				d = otherRTT
			}
			if pm, ok := m.msg.(pingMsg); ok && !done[pm.TxID] && now.Sub(m.at) >= d {
				done[pm.TxID] = true
				r.answer(m)
			}
		}
		r.locked(func() {
			if r.peer("b").active != addrX {
				switches++
			}
		})
	})
	if switches != 0 {
		t.Fatalf("the path left the working slow path for %d ticks", switches)
	}
}
