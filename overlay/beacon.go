package overlay

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
)

// A beacon announces a node to others that do not know it yet:
//
//	"GLB" 1 | UDP port (2) | time (8, Unix ns) | certificate | signature (64)
//
// It goes to the LAN multicast group (link.Discovery), unicast to bootstrap
// addresses (--peer, invite codes), and back to a node whose beacon showed
// it does not know us. Beacons are not secret, but they are fresh: the
// sender signs the whole beacon with its node key, and a receiver takes a
// beacon only if its time is within clockSkew of its own clock and newer
// than the last beacon it took from that node, so a captured beacon cannot
// be replayed (from any address). The cheap checks come first (the user,
// the time, whether the certificate is held already); only then the
// signatures.
//
// The address a beacon came from is not authenticated: a candidate learned
// from it is unproven until a sealed ping is answered from it, and until
// then the node sends it no more bytes than it received from it (credit,
// below) and pings it at most maxUnprovenProbes times.

// beaconContext is signed with every beacon, so no other glow signature can
// be replayed as one.
var beaconContext = []byte("glow beacon v1\x00")

const (
	beaconFixed       = wire.HeaderLen + 2 + 8
	maxUnprovenProbes = 3                // pings to an unproven candidate that does not answer
	maxUnproven       = 1024             // unproven addresses tracked for credit
	unprovenTTL       = 2 * time.Minute  // an unproven address's credit lasts this long
	pingSize          = ctlOverhead + 21 // a sealed ping, as credit counts it
)

var errBeaconShort = errors.New("beacon too short")

func (n *Node) beaconLocked() []byte {
	h := wire.Header(wire.KindBeacon)
	w := wire.Writer{B: h[:]}
	w.U16(n.Port())
	w.I64(time.Now().UnixNano())
	w.Raw(n.mem.cert.Marshal())
	sig := ed25519.Sign(n.keys.Sign, append(bytes.Clone(beaconContext), w.B...))
	return append(w.B, sig...)
}

// beacon is a parsed, not yet verified, beacon.
type beacon struct {
	port   uint16
	time   time.Time
	cert   []byte // its encoding, not verified
	user   [32]byte
	node   wire.NodeID
	signed []byte // what the signature covers
	sig    []byte
}

// parseBeacon splits a beacon without verifying anything.
func parseBeacon(b []byte) (beacon, error) {
	if len(b) < beaconFixed+1+32+ed25519.SignatureSize || wire.Classify(b) != wire.KindBeacon {
		return beacon{}, errBeaconShort
	}
	bc := beacon{
		port:   binary.BigEndian.Uint16(b[wire.HeaderLen:]),
		time:   time.Unix(0, int64(binary.BigEndian.Uint64(b[wire.HeaderLen+2:]))),
		cert:   b[beaconFixed : len(b)-ed25519.SignatureSize],
		signed: b[:len(b)-ed25519.SignatureSize],
		sig:    b[len(b)-ed25519.SignatureSize:],
	}
	copy(bc.user[:], bc.cert[1:])
	bc.node = member.PeekCertNode(bc.cert)
	if bc.node == (wire.NodeID{}) {
		return beacon{}, errBeaconShort
	}
	return bc, nil
}

func (n *Node) sendBeaconsLocked() {
	b := n.beaconLocked()
	if n.disc != nil { // its multicast joins were refreshed before n.mu (loop.go)
		if err := n.disc.Announce(b); err != nil {
			n.dropCtl["beacon-send"]++
		}
	}
	// Bootstrap addresses: until some peer answers, and then now and then
	// (they may be the only way back in after a network change).
	for _, ap := range n.lnk.bootstrap {
		if n.inTunnelLocked(ap.Addr()) {
			continue // it would go inside our own tunnel (peers.go)
		}
		n.bind.SendTo(b, ap)
	}
}

func (n *Node) handleBeaconLocked(in inbound, now time.Time, replied map[netip.AddrPort]time.Time) {
	bc, err := parseBeacon(in.buf)
	if err != nil {
		n.dropCtl["beacon-malformed"]++
		return
	}
	if bc.node == n.id {
		return // our own, looped back
	}
	// Cheap checks first: the user, the time, the last beacon taken.
	if bc.user != n.mem.cert.User {
		n.dropCtl["beacon-other-user"]++
		if in.lan {
			n.otherUserBeaconPortLocked(bc, in.from, now) // portclash.go
		}
		return
	}
	if d := now.Sub(bc.time); d > member.ClockSkew || d < -member.ClockSkew {
		n.dropCtl["beacon-stale"]++
		return
	}
	p := n.paths.peers[bc.node]
	if p != nil && !bc.time.After(p.beaconAt) {
		n.dropCtl["beacon-replay"]++
		return
	}
	// Then the signatures: the certificate's only if it is new to us.
	c := n.mem.store.Cert(bc.node)
	if c == nil || !bytes.Equal(c.Marshal(), bc.cert) {
		nc, err := member.ParseCert(bc.cert)
		if err != nil {
			n.dropCtl["beacon-bad-cert"]++
			return
		}
		c = nc
	}
	if !ed25519.Verify(bc.node.PublicKey(), append(bytes.Clone(beaconContext), bc.signed...), bc.sig) {
		n.dropCtl["beacon-bad-signature"]++
		return
	}
	if _, err := n.mem.store.AddCert(c, now); err != nil {
		n.dropCtl["beacon-bad-cert"]++
		return
	}
	addr := in.from
	if in.lan {
		addr = netip.AddrPortFrom(in.from.Addr(), bc.port)
		n.noteBeaconPortLocked(bc, c, addr, now) // portclash.go
	}
	known := p != nil
	if p = n.addPeerLocked(n.mem.store.Cert(c.Node), now); p == nil {
		return
	}
	p.beaconAt = bc.time
	if !known {
		n.mem.dirty = true
		n.certsChangedLocked()
		n.logf("glow: found %s at %v", n.fqdnLocked(c), addr)
	}
	if !addr.IsValid() {
		return // came relayed: no address to learn
	}
	cand := n.addCandidateLocked(p, addr, true, now)
	if cand == nil {
		return
	}
	if cand.unproven {
		n.earnLocked(addr, len(in.buf), now)
	}
	if p.active.IsValid() {
		return
	}
	// The sender may not know us: tell it who we are (rate limited), and
	// probe at once. To an unproven address only as many bytes as it sent:
	// our beacon if they suffice (the sender, knowing us, then pings us
	// itself), else a ping.
	replied1 := false
	if t, ok := replied[addr]; !ok || now.Sub(t) > maxBeaconReply {
		b := n.beaconLocked()
		if n.spendLocked(cand, addr, len(b)) {
			replied[addr] = now
			n.bind.SendTo(b, addr)
			replied1 = true
		}
	}
	if cand.unproven && (replied1 || !n.spendLocked(cand, addr, pingSize)) {
		return
	}
	if cand.unproven {
		cand.probes++
	}
	n.pingLocked(p, addr, now, nil)
}

// addrCredit is what an unproven address sent this node and what it got back.
type addrCredit struct {
	in, out int
	since   time.Time
}

// earnLocked credits an unproven address with the bytes it sent. At most
// maxUnproven addresses are tracked; past that, a new one earns nothing
// (and so gets nothing).
func (n *Node) earnLocked(addr netip.AddrPort, size int, now time.Time) {
	if n.paths.unproven == nil {
		n.paths.unproven = map[netip.AddrPort]*addrCredit{}
	}
	c := n.paths.unproven[addr]
	if c == nil {
		if len(n.paths.unproven) >= maxUnproven {
			for a, c := range n.paths.unproven {
				if now.Sub(c.since) > unprovenTTL {
					delete(n.paths.unproven, a)
				}
			}
		}
		if len(n.paths.unproven) >= maxUnproven {
			n.dropCtl["unproven-full"]++
			return
		}
		c = &addrCredit{since: now}
		n.paths.unproven[addr] = c
	}
	c.in += size
}

// spendLocked says whether size bytes may go to addr, a candidate address,
// and counts them: always for a proven one, within its credit otherwise.
func (n *Node) spendLocked(cand *candidate, addr netip.AddrPort, size int) bool {
	if !cand.unproven {
		return true
	}
	c := n.paths.unproven[addr]
	if c == nil || c.out+size > c.in {
		n.dropCtl["unproven-no-credit"]++
		return false
	}
	c.out += size
	return true
}
