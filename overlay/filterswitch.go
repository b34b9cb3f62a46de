package overlay

import "sync"

// filterSwitch orders the policy filter's switch (filteredTUN.on) with
// the WireGuard applier's queue. On takes effect at once: a friend's node
// may send as soon as WireGuard has its peer (wgConfigLocked). Off waits
// behind the WireGuard changes queued before it: when the last friend
// goes, its peer's removal (sleepWG) is in that queue, and until it is
// applied the friend's packets still come out of wireguard-go
// (TestAttackUnfriendFilterOff). gen, counted by every switch on, lets a
// queued off that an on overtook do nothing.
type filterSwitch struct {
	mu  sync.Mutex
	gen uint64
}

// filterOnLocked turns the policy filter on now. n.mu is held.
func (n *Node) filterOnLocked() {
	if n.tunf == nil {
		return
	}
	s := &n.tunfSwitch
	s.mu.Lock()
	s.gen++
	n.tunf.on.Store(true)
	s.mu.Unlock()
}

// filterOffLocked turns the policy filter off once the WireGuard changes
// queued so far are applied, unless it was turned on again meanwhile.
// n.mu is held.
func (n *Node) filterOffLocked() {
	if n.tunf == nil || !n.tunf.on.Load() {
		return
	}
	s := &n.tunfSwitch
	s.mu.Lock()
	gen := s.gen
	s.mu.Unlock()
	tf := n.tunf
	n.bind.wgCfgMu.Lock()
	n.bind.queueWGLocked(func() {
		s.mu.Lock()
		if s.gen == gen {
			tf.on.Store(false)
		}
		s.mu.Unlock()
	})
	n.bind.wgCfgMu.Unlock()
}
