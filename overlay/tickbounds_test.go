package overlay

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// TestTickBoundsRandom: tickPeersLocked passes a peer by on lower bounds of
// its pings' and candidates' expiries (pingsFrom, replyFrom, candsExp)
// instead of walking them; after every tick of a random run (candidates
// named, pings sent and answered, API pings, path changes, clock steps
// from none to minutes) what the full walk guaranteed still holds: no
// candidate but the path older than candidateTTL, no ping pending longer
// than pingTimeout, and every API ping past its timeout answered.
func TestTickBoundsRandom(t *testing.T) {
	r := newClockRig(t, "b")
	r.direct("b", addrX)
	rng := rand.New(rand.NewPCG(18, 7))
	var pool []netip.AddrPort
	for i := range 6 {
		pool = append(pool, netip.MustParseAddrPort(fmt.Sprintf("198.51.100.%d:47470", 10+i)))
	}
	pool = append(pool, addrX)
	type apiPing struct {
		sent  time.Time
		reply chan PingResult
		done  bool
	}
	var api []*apiPing
	done := map[[12]byte]bool{}
	ticks := 0
	for step := 0; step < 4000; step++ {
		addr := pool[rng.IntN(len(pool))]
		switch rng.IntN(6) {
		case 0:
			r.addCandidate("b", addr)
		case 1:
			r.answerPending(done, addr)
		case 2:
			a := &apiPing{sent: r.now, reply: make(chan PingResult, 1)}
			r.locked(func() { r.n.pingLocked(r.peer("b"), addr, r.now, a.reply) })
			api = append(api, a)
		default:
			d := time.Duration(rng.Int64N(int64(10 * time.Second)))
			if rng.IntN(8) == 0 {
				d = time.Duration(rng.Int64N(int64(12 * time.Minute)))
			}
			r.tickAt(r.now.Add(d))
			ticks++
		}
		var bad []string
		r.locked(func() {
			p := r.peer("b")
			for a, c := range p.cands {
				if a != p.active && r.now.Sub(later(c.learned, c.lastPong)) > candidateTTL {
					bad = append(bad, fmt.Sprintf("candidate %v last heard %v ago", a, r.now.Sub(later(c.learned, c.lastPong))))
				}
			}
			for _, pp := range p.pings {
				if r.now.Sub(pp.sent) > pingTimeout {
					bad = append(bad, fmt.Sprintf("a ping to %v pending for %v", pp.to, r.now.Sub(pp.sent)))
				}
			}
		})
		for _, a := range api {
			if a.done {
				continue
			}
			select {
			case <-a.reply:
				a.done = true
			default:
				if r.now.Sub(a.sent) > pingTimeout {
					bad = append(bad, fmt.Sprintf("an API ping unanswered for %v", r.now.Sub(a.sent)))
					a.done = true
				}
			}
		}
		if len(bad) > 0 {
			t.Fatalf("step %d (tick %d): %v", step, ticks, bad)
		}
	}
	if ticks < 1000 || len(api) < 200 {
		t.Fatalf("%d ticks, %d API pings: the run did not exercise the timers", ticks, len(api))
	}
}
