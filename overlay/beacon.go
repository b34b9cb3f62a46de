package overlay

import (
	"net/netip"
	"time"

	"glow/internal/wire"
)

// A beacon announces a node to others that do not know it yet:
//
//	"GLB" 1 | UDP port (2) | certificate
//
// It goes to the LAN multicast group (link.Discovery), unicast to bootstrap
// addresses (--peer, invite codes), and back to a node whose beacon showed
// it does not know us. Beacons are not secret; the certificate in them is
// checked against the user key, and an address learned from one is only a
// candidate until a sealed ping is answered from it.

func (n *Node) beaconLocked() []byte {
	h := wire.Header(wire.KindBeacon)
	w := wire.Writer{B: h[:]}
	w.U16(n.port)
	w.Raw(n.cert.Marshal())
	return w.B
}

func parseBeacon(b []byte) (port uint16, cert *Cert, err error) {
	r := wire.Reader{B: b}
	r.Raw(wire.HeaderLen)
	port = r.U16()
	if r.Err != nil {
		return 0, nil, r.Err
	}
	cert, err = ParseCert(r.B)
	return port, cert, err
}

func (n *Node) sendBeaconsLocked() {
	b := n.beaconLocked()
	if n.disc != nil {
		n.disc.Refresh()
		if err := n.disc.Announce(b); err != nil {
			n.dropCtl["beacon-send"]++
		}
	}
	// Bootstrap addresses: until some peer answers, and then now and then
	// (they may be the only way back in after a network change).
	for _, ap := range n.bootstrap {
		n.bind.SendTo(b, ap)
	}
}

// beaconUser returns the user key in a beacon's certificate without
// parsing or verifying it, so that another user's beacon costs a
// comparison rather than an ed25519 verification.
func beaconUser(b []byte) (u [32]byte, ok bool) {
	const at = wire.HeaderLen + 2 + 1 // header, port, certificate version
	if len(b) < at+32 {
		return u, false
	}
	return [32]byte(b[at : at+32]), true
}

func (n *Node) handleBeaconLocked(in inbound, now time.Time, replied map[netip.AddrPort]time.Time) {
	if u, ok := beaconUser(in.buf); ok && u != n.cert.User {
		n.dropCtl["beacon-other-user"]++
		return
	}
	port, c, err := parseBeacon(in.buf)
	if err != nil {
		n.dropCtl["beacon-malformed"]++
		return
	}
	if c.Node == n.id {
		return // our own, looped back
	}
	if c.User != n.cert.User {
		n.dropCtl["beacon-other-user"]++
		return
	}
	if _, err := n.store.AddCert(c, now); err != nil {
		n.dropCtl["beacon-bad-cert"]++
		return
	}
	addr := in.from
	if in.lan {
		addr = netip.AddrPortFrom(in.from.Addr(), port)
	}
	known := n.peers[c.Node] != nil
	p := n.addPeerLocked(n.store.Cert(c.Node), now)
	if p == nil {
		return
	}
	if !known {
		n.dirty = true
		n.certsChangedLocked()
		n.logf("glow: found %s at %v", c.FQDN(), addr)
	}
	n.addCandidatesLocked(p, []netip.AddrPort{addr}, now)
	if p.active.IsValid() {
		return
	}
	// The sender may not know us: tell it who we are (rate limited), then
	// probe at once.
	if t, ok := replied[addr]; !ok || now.Sub(t) > maxBeaconReply {
		replied[addr] = now
		n.bind.SendTo(n.beaconLocked(), addr)
	}
	n.pingLocked(p, addr, now, nil)
}
