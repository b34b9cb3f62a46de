package overlay

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"glow/overlay/member"
)

// One port per node behind a NAT.
//
// Two glow nodes behind one NAT that send from the same UDP port compete
// for one public port: a Linux NAT gives it to the first flow to each
// destination and the other node a substitute, which can differ per
// destination (LAB-NOTES), so the other node looks like a hard NAT to
// hole punching. Without --port a node therefore takes DefaultPort (or
// the port it moved to before, saved in the state file "port") and, when
// a LAN beacon shows another glow node on our LAN with the same port (of
// our user, or of another user with a valid beacon signature), one of the
// two moves: the node whose certificate is newer (or, equal or another
// user's, the larger node id). A neighbour that should have moved but
// still announces the port after portClashGrace is pinned (--port), so we
// move then. The new port is one the OS picks; it is saved so the node
// keeps it across restarts, and published at once (beacons, NodeInfo).
// A pinned node (--port) never moves and `glow netcheck` says why. A move
// happens at most once per portMoveEvery, so forged beacons cannot make a
// node hop about.
//
// Same LAN and same port is taken as "same public address" once this
// node knows it is behind a NAT (a peer saw it at an address that is not
// one of its own): the two almost always share the gateway. Nodes on a
// LAN with no NAT between them and their peers (a lab, a data centre, a
// home LAN's nodes talking among themselves) keep their ports: moving
// there gains nothing and costs re-punching (a relay's direct paths
// went stale and a two-relay route took 27 s instead of 6 to carry a
// first ping, before this check).

const (
	portFile       = "port"
	portClashGrace = 30 * time.Second
	portMoveEvery  = 10 * time.Minute
)

var errPortFile = errors.New("not a UDP port (1-65535) on one line")

// parsePortFile parses the state file "port": one decimal port, 1-65535.
func parsePortFile(data []byte) (uint16, error) {
	if len(data) > 16 {
		return 0, errPortFile
	}
	p, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 16)
	if err != nil || p == 0 {
		return 0, errPortFile
	}
	return uint16(p), nil
}

// savedPort is the port the node takes without --port: the one it moved
// to last (state file "port"), else DefaultPort.
func (n *Node) savedPort() uint16 {
	data, err := n.state.ReadFile(portFile)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultPort
	}
	if err == nil {
		var p uint16
		if p, err = parsePortFile(data); err == nil {
			return p
		}
	}
	n.logf("glow: %s: %v; using UDP port %d", n.state.Path(portFile), err, DefaultPort)
	return DefaultPort
}

// savePort writes the state file "port".
func (n *Node) savePort(p uint16) {
	if err := member.WriteAtomic(n.state.Path(portFile), fmt.Appendf(nil, "%d\n", p), 0o600); err != nil {
		n.logf("glow: saving UDP port %d: %v", p, err)
	}
}

// portState is the part of a node that knows how its UDP port looks from
// outside and moves it: the gateway's mapping, the last LAN neighbour seen
// on the port, and the move in progress. The port itself is Node.port (an
// atomic: the packet path reads it).
//
// Owner: Node.mu guards it. The port mapper's callback (netcheck.go's
// startNAT) writes mapped; the control loop writes clash and lastPortMove
// on a beacon; movePort (its own goroutine, one at a time) sets and clears
// portMoving. It shares Node.mu because a mapping or a move changes our
// endpoints (membership.infoDirty) in the same step.
type portState struct {
	mapped       netip.AddrPort // port mapping from the gateway, if any
	clash        *portClash     // the last LAN neighbour seen on our port
	portMoving   bool           // movePort is running
	lastPortMove time.Time
}

// portClash is the last LAN neighbour seen on our port, for netcheck.
type portClash struct {
	neighbour string         // its name (or "a node of another user")
	addr      netip.AddrPort // its LAN endpoint
	port      uint16         // the port both used
	first     time.Time      // first beacon showing it
	action    string         // what this node did
}

// noteBeaconPortLocked looks at a LAN beacon's port (bc verified as far
// as its user allows: c is the certificate for our user, nil for another
// user's node, whose beacon signature the caller checked).
func (n *Node) noteBeaconPortLocked(bc beacon, c *member.Cert, from netip.AddrPort, now time.Time) {
	port := n.Port()
	if bc.port != port || n.ports.portMoving || !n.behindNATLocked(now) {
		return
	}
	name := "a node of another user"
	weMove := bytes.Compare(n.id[:], bc.node[:]) > 0
	if c != nil {
		name = n.fqdnLocked(c)
		if !c.NotBefore.Equal(n.mem.cert.NotBefore) {
			weMove = n.mem.cert.NotBefore.After(c.NotBefore) // the newer member moves
		}
	}
	pc := n.ports.clash
	if pc == nil || pc.addr != from || pc.port != port {
		pc = &portClash{neighbour: name, addr: from, port: port, first: now}
		n.ports.clash = pc
		n.logf("glow: %s at %v uses our UDP port %d too: behind one NAT, one of us would get another public port per destination", name, from, port)
		if !weMove && n.disc != nil {
			// Show it at once that it is the one to move (our
			// unicast answer to its beacon does not come in as a
			// LAN beacon).
			n.disc.Announce(n.beaconLocked())
		}
	}
	switch {
	case !n.autoPort:
		pc.action = fmt.Sprintf("kept UDP port %d: pinned by --port", port)
		return
	case !weMove && now.Sub(pc.first) < portClashGrace:
		pc.action = fmt.Sprintf("kept UDP port %d: %s moves", port, name)
		return
	case !n.ports.lastPortMove.IsZero() && now.Sub(n.ports.lastPortMove) < portMoveEvery:
		pc.action = fmt.Sprintf("kept UDP port %d: moved less than %v ago", port, portMoveEvery)
		return
	}
	n.ports.portMoving, n.ports.lastPortMove = true, now
	pc.action = fmt.Sprintf("moving off UDP port %d", port)
	n.wg.Add(1)
	go n.movePort(port, pc)
}

// movePort moves the node's socket from port to one the OS picks, saves
// it and tells peers. It runs on its own goroutine: the rebind waits for
// the socket's readers to end, and saving writes a file.
func (n *Node) movePort(from uint16, pc *portClash) {
	defer n.wg.Done()
	err := n.bind.rebind(0)
	to := n.listenPort()
	if err != nil || to == 0 {
		n.logf("glow: moving off UDP port %d: %v; staying", from, err)
		n.bind.rebind(from)
		to = from
	} else {
		n.savePort(to)
		if n.portmap != nil {
			n.portmap.SetLocalPort(to)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ports.portMoving = false
	if to == from {
		pc.action = fmt.Sprintf("kept UDP port %d: could not move: %v", from, err)
		return
	}
	n.port.Store(uint32(to))
	pc.action = fmt.Sprintf("moved from UDP port %d to %d (saved in %s)", from, to, n.state.Path(portFile))
	n.logf("glow: %s", pc.action)
	// Where peers saw us was the old port; say where we are now, and
	// speak from the new port to every peer with a direct path, so each
	// sees us roam (loop.go, pingMsg) while our NodeInfo spreads.
	now := time.Now()
	for _, p := range n.paths.peers {
		p.seenUs = netip.AddrPort{}
		if p.active.IsValid() {
			n.pingLocked(p, p.active, now, nil)
		}
	}
	n.mem.infoDirty = true
	n.sendBeaconsLocked()
}

// portClashLocked is what netcheck reports about a LAN neighbour on our
// port ("" if none was seen).
func (n *Node) portClashLocked() string {
	pc := n.ports.clash
	if pc == nil {
		return ""
	}
	return fmt.Sprintf("%s at %v used UDP port %d too; %s", pc.neighbour, pc.addr, pc.port, pc.action)
}

// otherUserBeaconPortLocked checks, for another user's LAN beacon that
// names our port, the beacon's own signature (by the node key it names;
// its user's signature on the certificate is not ours to check) before
// noteBeaconPortLocked. Beacons on other ports cost nothing.
func (n *Node) otherUserBeaconPortLocked(bc beacon, from netip.AddrPort, now time.Time) {
	if bc.port != n.Port() || !n.autoPort || n.ports.portMoving {
		return
	}
	if d := now.Sub(bc.time); d > member.ClockSkew || d < -member.ClockSkew {
		return
	}
	if !ed25519.Verify(bc.node.PublicKey(), append(bytes.Clone(beaconContext), bc.signed...), bc.sig) {
		n.dropCtl["beacon-bad-signature"]++
		return
	}
	n.noteBeaconPortLocked(bc, nil, netip.AddrPortFrom(from.Addr(), bc.port), now)
}

// rebind moves wireguard-go's socket to port (0: the OS picks).
// wireguard-go's rebind holds its IPC lock while it waits for the socket's
// readers to end, and a reader may be configuring a WireGuard peer
// (wakeOnInitiation, which takes that lock), so configuring is paused
// meanwhile: a handshake arriving then is retried by its sender.
func (b *Bind) rebind(port uint16) error {
	if !b.pauseWG() {
		return errors.New("closing")
	}
	defer b.resumeWG()
	dev := b.dev.Load()
	if dev == nil {
		return errors.New("no device")
	}
	return dev.IpcSet(fmt.Sprintf("listen_port=%d\n", port))
}

// pauseWG pauses configuring WireGuard peers (rebind); false if the Bind
// is closing.
func (b *Bind) pauseWG() bool {
	b.wgMu.Lock()
	defer b.wgMu.Unlock()
	if b.wgClosed {
		return false
	}
	b.wgPaused = true
	return true
}

// resumeWG ends pauseWG, and has the applier do the changes queued
// meanwhile (applyWG).
func (b *Bind) resumeWG() {
	b.wgMu.Lock()
	b.wgPaused = false
	b.wgMu.Unlock()
	b.wgCfgMu.Lock()
	b.queueWGLocked(func() {})
	b.wgCfgMu.Unlock()
}

// behindNATLocked reports whether a peer saw us, in the last ten minutes,
// at an address that is not one of this host's: our packets leave through
// a NAT.
func (n *Node) behindNATLocked(now time.Time) bool {
	own := n.cfg.HostAddrs()
	for _, p := range n.paths.peers {
		if p.seenUs.IsValid() && now.Sub(p.seenAt) <= 10*time.Minute && !slices.Contains(own, p.seenUs.Addr().Unmap()) {
			return true
		}
	}
	return false
}
