package overlay

// Batched rebuilds of the Bind's lookup maps. The packet path reads
// peers by short id, by overlay address and by control key from maps
// published whole (atomics), and each peer added or changed rebuilds the
// map it touches: O(N) for one peer. A cold start brings N certificates,
// so N peers added one by one cost O(N²) a node. Between Hold and Release
// (the control loop, while it takes a queue of certificates:
// handleRecordsLocked, flushCertsLocked) the rebuilds are noted and done
// once at Release. Meanwhile the packet path sees the peers as before the
// Hold: a datagram of a new peer is dropped or queued as a stranger's, as
// it was before its certificate came. A peer removed meanwhile is still
// found until Release; its WireGuard configuration went with it (sleepWG),
// so no packet path wakes its WireGuard peer again.

// publishHold is the Bind's state between Hold and Release. Guarded by
// Bind.mu.
type publishHold struct {
	on              bool
	short, ips, ctl bool // rebuilds noted
}

// Hold makes the lookup maps' rebuilds wait for Release.
func (b *Bind) Hold() {
	b.mu.Lock()
	b.held.on = true
	b.mu.Unlock()
}

// Release does the rebuilds noted since Hold, once each.
func (b *Bind) Release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.held
	b.held = publishHold{}
	if h.short {
		b.publishShortLocked()
	}
	if h.ips {
		b.publishIPsLocked()
	}
	if h.ctl {
		b.publishCtlKeysLocked()
	}
}
