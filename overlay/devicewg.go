package overlay

// Plain WireGuard devices on their via node's Bind (devices.go has the
// rest).
//
// A device is a WireGuard peer of its via node only, and it sends from
// wherever it is: no control packet ever tells the Bind its address, and a
// WireGuard packet from an address of no known peer is dropped. Its
// handshake initiation is the one packet that may name one: for an
// initiation from an unknown address, while this node is the via node of
// some device, the Bind checks the initiation's mac1 (one BLAKE2s), opens
// it as far as wireguard-go does next (two X25519s: the initiator's static
// key under the ephemeral-static key, its timestamp under the static-static
// key, which proves the sender holds the device's private key) and, if the
// key is one of this node's devices and the timestamp is newer than the
// last one taken from it, makes that address the device's path (Learn, as
// for any peer) and hands the packet to wireguard-go as the device's. A
// replayed initiation from elsewhere moves nothing. These checks are rate
// limited (maxDeviceChecks a second), and what they refuse is counted.
//
// Data from a device arrives from its learned address, as any peer's. Data
// from another address (the device roamed: its NAT gave it a new port, a
// phone went from Wi-Fi to mobile data) whose receiver index is one of ours
// for a session with a device (noted as our handshake messages to it go
// out) goes to wireguard-go with a deviceRoam endpoint: wireguard-go
// decrypts it with that session's key, and only if it is authentic makes
// the deviceRoam the peer's endpoint, so the next packet to the device
// comes to Send with it, and the Bind moves the device's path there. That is
// WireGuard's own roaming, confined to devices: a glow node's endpoint is
// never anything but its *Endpoint.

import (
	"bytes"
	"crypto/hmac"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"hash"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"

	"glow/internal/wire"
)

// Noise IK as WireGuard instantiates it (the WireGuard paper, 5.4).
var (
	noiseChainKey = blake2s.Sum256([]byte("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"))
	noiseHash     = blake2s.Sum256(append(noiseChainKey[:], "WireGuard v1 zx2c4 Jason@zx2c4.com"...))
)

const (
	wgInitiationLen = 148 // type(4) sender(4) ephemeral(32) static(32+16) timestamp(12+16) mac1(16) mac2(16)
	maxDeviceChecks = 64  // initiations from unknown addresses opened per second
)

// deviceWG is a device's WireGuard state on its via node's Bind.
type deviceWG struct {
	ep   *Endpoint
	ss   [32]byte                   // static-static key: our private key and the device's public key
	last [12]byte                   // TAI64N timestamp of the newest initiation taken; guarded by Bind.devMu
	idx  [3]uint32                  // our latest session indexes with it, newest first; guarded by Bind.devMu
	roam atomic.Pointer[deviceRoam] // the last deviceRoam made for it, reused for its address
}

// deviceRoam is a device's packet from an address it was not known at,
// handed to wireguard-go as its source: wireguard-go makes it the peer's
// endpoint once the packet proves authentic.
type deviceRoam struct {
	w    *deviceWG
	addr netip.AddrPort
	ep   conn.Endpoint // the inner bind's endpoint for addr
}

var _ conn.Endpoint = (*deviceRoam)(nil)

func (r *deviceRoam) ClearSrc()           {}
func (r *deviceRoam) SrcToString() string { return "" }
func (r *deviceRoam) DstToString() string { return r.addr.String() }
func (r *deviceRoam) DstToBytes() []byte  { return r.w.ep.DstToBytes() }
func (r *deviceRoam) DstIP() netip.Addr   { return r.addr.Addr() }
func (r *deviceRoam) SrcIP() netip.Addr   { return netip.Addr{} }

// deviceTable is what the Bind knows of the devices it is the via node
// for. Immutable once published (Bind.devs), but for deviceWG.last.
type deviceTable struct {
	priv  [32]byte
	hash0 [32]byte // the handshake hash after our public key is mixed in
	mac1  [32]byte // the key of an initiation's mac1 to us
	byKey map[wire.Key]*deviceWG
}

// deviceConfig is one device the Bind is to carry.
type deviceConfig struct {
	WG  wire.Key
	IPs []netip.Addr
}

// deviceID is the Bind identity of a device: its WireGuard public key.
func deviceID(k wire.Key) wire.NodeID { return wire.NodeID(k) }

// setDevices makes the Bind carry exactly devs, with WireGuard private key
// priv: a WireGuard peer for each (configured on demand, lazywg.go) with
// AllowedIPs its addresses, and the handshake check above. Devices no longer
// listed are removed. Called by the control loop under Node.mu.
func (b *Bind) setDevices(priv [32]byte, devs []deviceConfig) {
	b.devMu.Lock()
	defer b.devMu.Unlock()
	old := b.devs.Load()
	t := &deviceTable{priv: priv, byKey: make(map[wire.Key]*deviceWG, len(devs))}
	pub := wgPublic(&priv)
	t.hash0 = blake2s.Sum256(append(noiseHash[:], pub[:]...))
	t.mac1 = blake2s.Sum256(append([]byte("mac1----"), pub[:]...))
	for _, d := range devs {
		ss, err := curve25519.X25519(priv[:], d.WG[:])
		if err != nil {
			continue // a low-order key: no handshake can be opened with it
		}
		w := &deviceWG{ep: b.Peer(deviceID(d.WG))}
		copy(w.ss[:], ss)
		if old != nil && old.byKey[d.WG] != nil {
			w.last, w.idx = old.byKey[d.WG].last, old.byKey[d.WG].idx
		}
		t.byKey[d.WG] = w
		var cfg strings.Builder
		fmt.Fprintf(&cfg, "public_key=%s\nendpoint=%s\nreplace_allowed_ips=true\n", d.WG, deviceID(d.WG).Hex())
		for _, a := range d.IPs {
			fmt.Fprintf(&cfg, "allowed_ip=%v\n", netip.PrefixFrom(a, a.BitLen()))
		}
		b.setWG(w.ep, d.WG.String(), cfg.String(), d.IPs)
	}
	if old != nil {
		for k, w := range old.byKey {
			if t.byKey[k] == nil {
				b.sleepWG(w.ep)
				b.RemovePeer(w.ep.ID)
			}
		}
	}
	b.devs.Store(t)
	idx := map[uint32]*deviceWG{}
	for _, w := range t.byKey {
		for _, i := range w.idx {
			if i != 0 {
				idx[i] = w
			}
		}
	}
	b.devIdx = idx
	b.devIdxPub.Store(&idx)
}

// deviceInitiation returns the device endpoint a WireGuard handshake
// initiation from an unknown address belongs to, after making from its
// path, or nil (and counts why).
func (b *Bind) deviceInitiation(pkt []byte, from netip.AddrPort) *Endpoint {
	t := b.devs.Load()
	if t == nil || len(t.byKey) == 0 || len(pkt) != wgInitiationLen || pkt[0] != 1 || !from.IsValid() {
		return nil
	}
	if !b.deviceCheckAllowed(time.Now()) {
		b.dropDevLimited.Add(1)
		return nil
	}
	w, ts, ok := t.open(pkt)
	if !ok {
		b.dropDevInit.Add(1)
		return nil
	}
	b.devMu.Lock()
	fresh := bytes.Compare(ts[:], w.last[:]) > 0
	if fresh {
		w.last = ts
	}
	b.devMu.Unlock()
	if !fresh {
		b.dropDevInit.Add(1)
		return nil
	}
	if err := b.SetDirect(w.ep.ID, from); err != nil {
		b.dropDevInit.Add(1)
		return nil
	}
	b.devHandshakes.Add(1)
	return w.ep
}

// noteDeviceIndex notes our session index of a handshake message (pkt,
// an initiation or a response) that goes to e, if e is a device.
func (b *Bind) noteDeviceIndex(e *Endpoint, pkt []byte) {
	t := b.devs.Load()
	if t == nil || len(t.byKey) == 0 || len(pkt) < 8 {
		return
	}
	w := t.byKey[wire.Key(e.ID)]
	if w == nil || w.ep != e {
		return
	}
	idx := binary.LittleEndian.Uint32(pkt[4:8])
	b.devMu.Lock()
	defer b.devMu.Unlock()
	m := make(map[uint32]*deviceWG, len(b.devIdx)+1)
	for k, v := range b.devIdx {
		m[k] = v
	}
	delete(m, w.idx[len(w.idx)-1])
	copy(w.idx[1:], w.idx[:])
	w.idx[0] = idx
	m[idx] = w
	b.devIdx = m
	b.devIdxPub.Store(&m)
}

// deviceData returns a deviceRoam for a WireGuard data packet from an
// unknown address whose receiver index is one of our sessions with a
// device, or nil.
func (b *Bind) deviceData(pkt []byte, from netip.AddrPort) *deviceRoam {
	m := b.devIdxPub.Load()
	if m == nil || len(pkt) < 32 || !from.IsValid() {
		return nil
	}
	w := (*m)[binary.LittleEndian.Uint32(pkt[4:8])]
	if w == nil {
		return nil
	}
	if r := w.roam.Load(); r != nil && r.addr == from {
		return r
	}
	ep, err := b.inner.ParseEndpoint(from.String())
	if err != nil {
		return nil
	}
	r := &deviceRoam{w: w, addr: from, ep: ep}
	w.roam.Store(r)
	return r
}

// roamDevice moves a device's path to the address of r, which wireguard-go
// has made its endpoint after an authentic packet from there, and returns
// the device's endpoint.
func (b *Bind) roamDevice(r *deviceRoam) *Endpoint {
	if p := r.w.ep.path.Load(); p == nil || p.addr != r.addr {
		if err := b.SetDirect(r.w.ep.ID, r.addr); err == nil {
			b.devRoams.Add(1)
		}
	}
	return r.w.ep
}

// devicePath returns where the device with key k was last seen, if this
// node carries it.
func (b *Bind) devicePath(k wire.Key) netip.AddrPort {
	if t := b.devs.Load(); t != nil && t.byKey[k] != nil {
		if p := t.byKey[k].ep.path.Load(); p != nil {
			return p.addr
		}
	}
	return netip.AddrPort{}
}

// deviceCheckAllowed takes one of maxDeviceChecks tokens a second.
func (b *Bind) deviceCheckAllowed(now time.Time) bool {
	b.devMu.Lock()
	defer b.devMu.Unlock()
	if sec := now.Unix(); sec != b.devCheckSec {
		b.devCheckSec, b.devChecks = sec, 0
	}
	if b.devChecks >= maxDeviceChecks {
		return false
	}
	b.devChecks++
	return true
}

// open checks an initiation's mac1, decrypts its static key and, if that
// is a device of the table, its timestamp, as the responder of the
// WireGuard handshake does.
func (t *deviceTable) open(pkt []byte) (w *deviceWG, ts [12]byte, ok bool) {
	eph, static, stamp := pkt[8:40], pkt[40:88], pkt[88:116]
	mac, _ := blake2s.New128(t.mac1[:])
	mac.Write(pkt[:116])
	if subtle.ConstantTimeCompare(mac.Sum(nil), pkt[116:132]) != 1 {
		return nil, ts, false
	}
	h := blake2s.Sum256(append(t.hash0[:], eph...))
	var ck, key [32]byte
	kdf1(&ck, noiseChainKey[:], eph)
	es, err := curve25519.X25519(t.priv[:], eph)
	if err != nil {
		return nil, ts, false
	}
	kdf2(&ck, &key, ck[:], es)
	aead, _ := chacha20poly1305.New(key[:])
	var zero [chacha20poly1305.NonceSize]byte
	pk, err := aead.Open(nil, zero[:], static, h[:])
	if err != nil {
		return nil, ts, false
	}
	w = t.byKey[wire.Key(pk)]
	if w == nil {
		return nil, ts, false
	}
	h = blake2s.Sum256(append(h[:], static...))
	kdf2(&ck, &key, ck[:], w.ss[:])
	aead, _ = chacha20poly1305.New(key[:])
	plain, err := aead.Open(nil, zero[:], stamp, h[:])
	if err != nil || len(plain) != len(ts) {
		return nil, ts, false
	}
	copy(ts[:], plain)
	return w, ts, true
}

func hmacBlake2s(sum *[32]byte, key []byte, in ...[]byte) {
	m := hmac.New(func() hash.Hash { h, _ := blake2s.New256(nil); return h }, key)
	for _, b := range in {
		m.Write(b)
	}
	m.Sum(sum[:0])
}

// kdf1 and kdf2 are the handshake's HKDF with one and two outputs.
func kdf1(t0 *[32]byte, key, input []byte) {
	var prk [32]byte
	hmacBlake2s(&prk, key, input)
	hmacBlake2s(t0, prk[:], []byte{1})
}

func kdf2(t0, t1 *[32]byte, key, input []byte) {
	var prk [32]byte
	hmacBlake2s(&prk, key, input)
	hmacBlake2s(t0, prk[:], []byte{1})
	hmacBlake2s(t1, prk[:], t0[:], []byte{2})
}

// devBindState is the Bind's device state (embedded in Bind).
type devBindState struct {
	devs           atomic.Pointer[deviceTable]
	devMu          sync.Mutex // guards deviceWG.last and the check budget; serialises setDevices
	devCheckSec    int64
	devChecks      int
	dropDevInit    atomic.Uint64                        // initiations from unknown addresses that are no fresh handshake of a device
	dropDevLimited atomic.Uint64                        // initiations from unknown addresses over maxDeviceChecks a second
	devHandshakes  atomic.Uint64                        // device handshakes taken from a new address
	devForwarding  atomic.Bool                          // the node turned on forwarding for its devices (devices.go)
	devRoams       atomic.Uint64                        // device paths moved by an authentic data packet from a new address
	devIdx         map[uint32]*deviceWG                 // our session indexes with devices; guarded by devMu
	devIdxPub      atomic.Pointer[map[uint32]*deviceWG] // devIdx, copy on write, for the receive path
}
