package overlay

import (
	"sync/atomic"
	"testing"
	"time"

	"glow/internal/wire"
)

// TestAttackKnownQueueStarvesLoop: a known peer (or whoever sends from
// its address) keeps the known peers' control queue full. The loop takes
// that queue ahead of everything else, so before knownBurst it never
// reached its timer again: no tick (heartbeats, gossip, saving, trimming)
// and no Close. The flood here is the strongest form: after every datagram
// the loop handles, the queue is filled up again (afterInbound), so it is
// never empty when the loop looks. The node must still tick.
func TestAttackKnownQueueStarvesLoop(t *testing.T) {
	var (
		node     atomic.Pointer[Node]
		flooding atomic.Bool
		refills  atomic.Int64
	)
	junk := inbound{kind: wire.KindControl, buf: []byte{0x01, 0x02}} // malformed: dropped at once
	fill := func() {
		n := node.Load()
		if n == nil || !flooding.Load() {
			return
		}
		refills.Add(1)
		for {
			select {
			case n.ctlq.known <- junk:
			default:
				return
			}
		}
	}
	n := testNode(t, "victim", func(c *Config) { c.UserName, c.afterInbound = "alice", fill })
	t.Cleanup(func() { flooding.Store(false) }) // before the node's Close (cleanups run last first)
	node.Store(n)
	flooding.Store(true)
	// The first datagram starts the flood; each one handled refills it.
	fill()
	waitFor(t, 5*time.Second, "the flood under way", func() bool { return refills.Load() >= 10*knownBurst })
	before := loopTicks(n)
	waitFor(t, 3*maxSleep, "two control ticks while the known queue stays full", func() bool { return loopTicks(n) >= before+2 })
	if !flooding.Load() || refills.Load() < 20*knownBurst {
		t.Fatalf("the flood stopped (%d refills): the test proves nothing", refills.Load())
	}
	n.mu.Lock()
	dropped := n.dropCtl["malformed"]
	n.mu.Unlock()
	t.Logf("%d ticks during the flood; %d flooded datagrams dropped as malformed", loopTicks(n)-before, dropped)
}
