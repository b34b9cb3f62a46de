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

// wgPeer is an Endpoint's WireGuard configuration, guarded by Bind.wgMu
// (on is also read without it).
type wgPeer struct {
	key   string // public key, hex
	cfg   string // IpcSet lines that add the peer
	on    atomic.Bool
	since time.Time // when it was last configured
}

// setWG stores e's WireGuard configuration (key and allowed IPs) and
// applies it at once if the peer is configured in wireguard-go.
func (b *Bind) setWG(e *Endpoint, key, cfg string, ips []netip.Addr) {
	b.wgMu.Lock()
	old := e.wg.key
	e.wg.key, e.wg.cfg = key, cfg
	if e.wg.on.Load() {
		if old != key {
			b.removeWGLocked(e, old)
		}
		b.addWGLocked(e)
	}
	b.wgMu.Unlock()
	b.mu.Lock()
	e.ips = ips
	b.publishIPsLocked()
	b.mu.Unlock()
}

// addWGLocked configures e's peer in wireguard-go. b.wgMu is held.
func (b *Bind) addWGLocked(e *Endpoint) bool {
	dev := b.dev.Load()
	if e.wg.cfg == "" || dev == nil || b.wgClosed || dev.IpcSet(e.wg.cfg) != nil {
		e.wg.on.Store(false)
		return false
	}
	e.wg.on.Store(true)
	return true
}

// removeWGLocked removes the peer with key from wireguard-go. b.wgMu is held.
func (b *Bind) removeWGLocked(e *Endpoint, key string) {
	if dev := b.dev.Load(); dev != nil && !b.wgClosed {
		dev.IpcSet("public_key=" + key + "\nremove=true\n")
	}
	e.wg.on.Store(false)
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

// sleepWG removes e's WireGuard peer if it is configured.
func (b *Bind) sleepWG(e *Endpoint) {
	b.wgMu.Lock()
	defer b.wgMu.Unlock()
	if e.wg.on.Load() {
		b.removeWGLocked(e, e.wg.key)
	}
}

// wakeForDst configures the WireGuard peer that owns overlay address dst,
// if there is one and it is not configured. The TUN reader calls it for
// each new destination of a batch.
func (b *Bind) wakeForDst(dst netip.Addr) {
	if e := (*b.byIP.Load())[dst]; e != nil && !e.wg.on.Load() {
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
		recent := later(e.wg.since, last[e.wg.key])
		if now.Sub(recent) < lazyIdle || now.Sub(time.Unix(0, e.lastSend.Load())) < lazyIdle {
			left++
			continue
		}
		b.removeWGLocked(e, e.wg.key)
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
