package overlay

// Lazy WireGuard peers.
//
// Every node of the user (and every shared node of a friend) is a peer of
// the control loop, but only the peers that carry traffic are peers of
// wireguard-go: each costs ~30 KiB of queues and two goroutines there, and a
// node may know hundreds of peers it never talks to. Like Tailscale's
// trimmed peers, a WireGuard peer is configured on demand:
//
//   - outbound: the TUN reader sees a packet for the overlay address of an
//     unconfigured peer and configures it before wireguard-go routes the
//     packet (Bind.wakeForDst);
//   - inbound: a handshake initiation arrives from a known node whose peer
//     is not configured, and the receive path configures it before
//     wireguard-go looks for the initiator's key (Bind.handle);
//
// and removed again once it has had no handshake for lazyIdle. That is
// longer than wireguard-go's RejectAfterTime (180 s), so both ends' session
// keys have expired by then and the next packet either way starts with a
// handshake, which configures the peer again: trimming never costs a packet
// more than a reconfiguration (~10 µs).

import (
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

const (
	lazyIdle      = 5 * time.Minute  // no handshake for this long: the WireGuard peer goes
	lazyTrimEvery = 30 * time.Second // how often the loop looks
)

// wgPeer is an Endpoint's WireGuard configuration: key and cfg, what the
// control state wants, are guarded by Bind.wgCfgMu; the rest, what
// wireguard-go holds, by Bind.wgMu (on is also read without it).
type wgPeer struct {
	key   string // public key, hex
	cfg   string // IpcSet lines that add the peer
	inKey string // the key configured in wireguard-go, while on
	on    atomic.Bool
	since time.Time // when it was last configured
}

// setWG stores e's WireGuard configuration (key and allowed IPs); if the
// peer is configured in wireguard-go, applyWG applies the new one. The
// control loop calls it under Node.mu, so it queues rather than call
// IpcSet, which waits for the device's IPC lock.
func (b *Bind) setWG(e *Endpoint, key, cfg string, ips []netip.Addr) {
	b.wgCfgMu.Lock()
	e.wg.key, e.wg.cfg = key, cfg
	b.queueWGLocked(func() {
		if e.wg.on.Load() { // else the next wake takes the new one
			if e.wg.inKey != key {
				b.removeWGLocked(e)
			}
			b.addWGLocked(e)
		}
	})
	b.wgCfgMu.Unlock()
	b.mu.Lock()
	e.ips = ips
	b.publishIPsLocked()
	b.mu.Unlock()
}

// sleepWG removes e's WireGuard peer if it is configured: queued for
// applyWG, as setWG. e is being removed (RemovePeer follows), so its
// configuration goes too, in the queue's order: the packet path may still
// find e (its lookup maps wait while the Bind is held, bind_hold.go) and
// wake it, and addWGLocked configures no peer without one.
func (b *Bind) sleepWG(e *Endpoint) {
	b.wgCfgMu.Lock()
	defer b.wgCfgMu.Unlock()
	b.queueWGLocked(func() {
		if e.wg.on.Load() {
			b.removeWGLocked(e)
		}
		b.wgCfgMu.Lock()
		e.wg.key, e.wg.cfg = "", ""
		b.wgCfgMu.Unlock()
	})
}

// queueWGLocked queues a change for applyWG. b.wgCfgMu is held.
func (b *Bind) queueWGLocked(f func()) {
	b.wgQueue = append(b.wgQueue, f)
	select {
	case b.wgKick <- struct{}{}:
	default:
	}
}

// applyWG applies the queued changes, in the order they were made, under
// b.wgMu (the Node's WireGuard applier goroutine). While a rebind pauses
// configuring (portclash.go) they wait for resumeWG: applied then, a
// change found every peer unconfigurable and marked it off, though
// wireguard-go kept it, and its removal (sleepWG) was then skipped.
func (b *Bind) applyWG() {
	b.wgMu.Lock()
	defer b.wgMu.Unlock()
	if b.wgPaused {
		return
	}
	b.wgCfgMu.Lock()
	q := b.wgQueue
	b.wgQueue = nil
	b.wgCfgMu.Unlock()
	for _, f := range q {
		f()
	}
}

// addWGLocked configures e's peer in wireguard-go. b.wgMu is held.
func (b *Bind) addWGLocked(e *Endpoint) bool {
	b.wgCfgMu.Lock()
	key, cfg := e.wg.key, e.wg.cfg
	b.wgCfgMu.Unlock()
	dev := b.dev.Load()
	if cfg == "" || dev == nil || b.wgClosed || b.wgPaused || b.ipcSet(dev, cfg) != nil {
		e.wg.on.Store(false)
		return false
	}
	e.wg.inKey = key
	b.wgOwner[key] = e
	e.wg.on.Store(true)
	return true
}

// removeWGLocked removes e's peer from wireguard-go, unless another
// endpoint (the same node added again) has configured its key since.
// b.wgMu is held.
func (b *Bind) removeWGLocked(e *Endpoint) {
	key := e.wg.inKey
	if o := b.wgOwner[key]; o == nil || o == e {
		delete(b.wgOwner, key)
		b.removeKeyLocked(key)
	}
	e.wg.on.Store(false)
}

// removeKeyLocked removes the peer of key from wireguard-go. While a
// rebind pauses configuring (portclash.go: trimWG may remove meanwhile),
// the removal waits in the queue for resumeWG. b.wgMu is held.
func (b *Bind) removeKeyLocked(key string) {
	dev := b.dev.Load()
	switch {
	case dev == nil || b.wgClosed || b.wgOwner[key] != nil: // gone with the device, or configured again since
	case b.wgPaused:
		b.wgCfgMu.Lock()
		b.wgQueue = append(b.wgQueue, func() { b.removeKeyLocked(key) })
		b.wgCfgMu.Unlock()
	default:
		b.ipcSet(dev, "public_key="+key+"\nremove=true\n")
	}
}

func (b *Bind) ipcSet(dev *device.Device, cfg string) error {
	if b.wgHook != nil {
		b.wgHook()
	}
	return dev.IpcSet(cfg)
}

// wakeWG configures e's WireGuard peer if it is not.
func (b *Bind) wakeWG(e *Endpoint) {
	b.wgMu.Lock()
	defer b.wgMu.Unlock()
	if !e.wg.on.Load() && b.addWGLocked(e) {
		e.wg.since = time.Now()
		b.wgWakes.Add(1)
	}
}

// wakeOnInitiation configures e's WireGuard peer when a packet of WireGuard
// message type typ from e is a handshake initiation and the peer is not
// configured: wireguard-go looks for the initiator's key next.
func (b *Bind) wakeOnInitiation(e *Endpoint, typ byte) {
	if typ == 1 && !e.wg.on.Load() {
		b.wakeWG(e)
	}
}

// closeWG stops all configuring: the device is about to close, and a
// receive or TUN goroutine must not be inside IpcSet then (wireguard-go's
// Close holds the IPC lock while it waits for those goroutines to end).
func (b *Bind) closeWG() {
	b.wgMu.Lock()
	b.wgClosed = true
	b.wgMu.Unlock()
}

// wakeForDst configures the WireGuard peer that owns overlay address dst,
// if there is one and it is not configured. The TUN reader calls it for
// each new destination of a batch.
func (b *Bind) wakeForDst(dst netip.Addr) {
	e := (*b.byIP.Load())[dst]
	if e == nil {
		e = b.routeFor(dst)
	}
	if e != nil && !e.wg.on.Load() {
		b.wakeWG(e)
	}
}

// trimWG removes the WireGuard peers that had no handshake for lazyIdle
// (or none at all since they were configured that long ago), and returns
// how many are left.
func (b *Bind) trimWG(now time.Time) (left int) {
	dev := b.dev.Load()
	if dev == nil {
		return 0
	}
	b.mu.Lock()
	var on []*Endpoint
	for _, e := range b.peers {
		if e.wg.on.Load() {
			on = append(on, e)
		}
	}
	b.mu.Unlock()
	if len(on) == 0 {
		return 0
	}
	last := lastHandshakes(dev)
	b.wgMu.Lock()
	defer b.wgMu.Unlock()
	for _, e := range on {
		if !e.wg.on.Load() {
			continue
		}
		recent := later(e.wg.since, last[e.wg.inKey])
		if now.Sub(recent) < lazyIdle || now.Sub(time.Unix(0, e.lastSend.Load())) < lazyIdle {
			left++
			continue
		}
		b.removeWGLocked(e)
	}
	return left
}

// lastHandshakes reads each configured peer's last handshake time.
func lastHandshakes(dev *device.Device) map[string]time.Time {
	s, err := dev.IpcGet()
	if err != nil {
		return nil
	}
	out := map[string]time.Time{}
	var key string
	var sec int64
	for line := range strings.SplitSeq(s, "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "public_key":
			key = v
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ := strconv.ParseInt(v, 10, 64)
			if key != "" && (sec != 0 || nsec != 0) {
				out[key] = time.Unix(sec, nsec)
			}
		}
	}
	return out
}

// dstAddr returns the destination of IP packet pkt.
func dstAddr(pkt []byte) (netip.Addr, bool) {
	if len(pkt) >= 20 && pkt[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(pkt[16:20])), true
	}
	if len(pkt) >= 40 && pkt[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return netip.Addr{}, false
}
