package overlay

import "time"

// LoopStall is how long the control loop may go without a tick before a
// supervisor should take it as stuck: it ticks at least every maxSleep.
const LoopStall = 3 * maxSleep

// LoopTicks returns how many times the control loop has ticked, for a
// supervisor's health check (the systemd watchdog of `glow up
// --foreground`). It reports false when the node has stopped, or when its
// lock could not be had within wait: the loop, or whoever holds the lock,
// is stuck. It never blocks for longer than wait.
func (n *Node) LoopTicks(wait time.Duration) (uint64, bool) {
	deadline := time.Now().Add(wait)
	for !n.mu.TryLock() {
		if time.Now().After(deadline) {
			return 0, false
		}
		time.Sleep(5 * time.Millisecond)
	}
	defer n.mu.Unlock()
	select {
	case <-n.done:
		return 0, false
	default:
	}
	return n.wakeAt.ticks, true
}
