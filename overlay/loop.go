package overlay

import (
	"net/netip"
	"runtime"
	"runtime/debug"
	"time"

	"glow/internal/wire"
	"glow/link"
)

// The control loop: one goroutine that handles every control datagram,
// beacon and timer, holding Node.mu while it changes state. It never blocks
// on the network: sends are UDP writes; file writes and routes go to the
// saver and the route setter (save.go). The API reads the same state under
// the same lock.

const (
	tickEvery      = 250 * time.Millisecond
	gossipEvery    = 5 * time.Second
	beaconEvery    = 5 * time.Second // LAN and bootstrap beacons
	beaconFast     = 1 * time.Second // for the first beaconBurst seconds
	beaconBurst    = 5 * time.Second
	infoEvery      = 10 * time.Second // re-check our endpoints this often
	saveEvery      = 5 * time.Second
	maxBeaconReply = time.Second // at most one unicast beacon reply per address per second
	memCheckEvery  = time.Second
)

// releaseMemory gives the operating system back the memory a burst of
// traffic left behind. wireguard-go takes a 64 KiB buffer per packet in
// flight from pools without a bound, so a fast transfer can hold hundreds
// of MiB; once traffic has stopped for a while, that memory is garbage, and
// this returns it (a collection and a scavenge, so only when idle).
func (n *Node) releaseMemory(now time.Time) {
	last := n.bind.lastData.Load()
	if last == n.memReleasedAt || now.Sub(time.Unix(0, last)) < time.Second {
		return // released since the last traffic, or traffic still flowing
	}
	n.memReleasedAt = last
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapSys-ms.HeapReleased < 48<<20 {
		return
	}
	// Pooled buffers survive one collection (sync.Pool's victim cache):
	// collect once to move them there, then FreeOSMemory collects again
	// and returns the pages.
	runtime.GC()
	debug.FreeOSMemory()
}

func (n *Node) startControl() {
	if !n.cfg.NoDiscovery {
		d, err := link.ListenDiscovery(n.cfg.DiscoveryGroup)
		if err != nil {
			n.logf("glow: LAN discovery off: %v", err)
		} else {
			n.disc = d
			n.atClose(func() { d.Close() })
			n.wg.Add(1)
			go n.readBeacons()
		}
	}
	// Peers known from the records cache: probe them at once.
	now := time.Now()
	n.mu.Lock()
	for _, c := range n.store.Certs() {
		n.addPeerLocked(c, now)
	}
	n.refreshInfoLocked(now)
	n.mu.Unlock()
	n.wg.Add(2)
	go n.loop()
	go n.saver()
	n.mu.Lock()
	n.loadLinksLocked()
	n.mu.Unlock()
}

// readBeacons feeds LAN beacons into the control loop.
func (n *Node) readBeacons() {
	defer n.wg.Done()
	buf := make([]byte, 2048)
	for {
		sz, from, err := n.disc.Read(buf)
		if err != nil {
			return
		}
		if !n.ctlq.lim.allow(sourceKey(from.Addr()), time.Now()) {
			continue
		}
		select {
		case n.ctlq.other <- inbound{kind: wire.KindBeacon, buf: append([]byte(nil), buf[:sz]...), from: from, lan: true}:
		default:
		}
	}
}

func (n *Node) loop() {
	defer n.wg.Done()
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	start := time.Now()
	var lastGossip, lastBeacon, lastInfo, lastSave, lastMem time.Time
	var outLeft, inLeft uint64 // for the in-flight counts' idle check
	lastTrim := time.Now()
	replied := map[netip.AddrPort]time.Time{}
	handle := func(in inbound) {
		now := time.Now()
		n.mu.Lock()
		n.handleInboundLocked(in, now, replied)
		n.mu.Unlock()
	}
	for {
		// Known peers' control packets first: a flood in the other queue
		// never delays a heartbeat by more than one datagram (ctlqueue.go).
		select {
		case in := <-n.ctlq.known:
			handle(in)
			continue
		default:
		}
		select {
		case <-n.ctx.Done():
			return
		case in := <-n.ctlq.known:
			handle(in)
		case in := <-n.ctlq.other:
			handle(in)
		case now := <-t.C:
			n.bind.out.idle(&outLeft)
			n.bind.in.idle(&inLeft)
			if now.Sub(lastTrim) >= lazyTrimEvery {
				lastTrim = now
				n.bind.trimWG(now)
			}
			every := beaconEvery
			if now.Sub(start) < beaconBurst {
				every = beaconFast
			}
			beaconDue := now.Sub(lastBeacon) >= every
			if beaconDue && n.disc != nil {
				n.disc.Refresh() // multicast joins on new interfaces: never under n.mu
			}
			n.mu.Lock()
			if n.routesDirty || n.infoDirty || now.Sub(lastInfo) >= infoEvery {
				lastInfo, n.infoDirty = now, false
				n.refreshInfoLocked(now) // links or endpoints may have changed
			}
			if n.routesDirty {
				n.computeRoutesLocked(now)
			}
			if beaconDue {
				lastBeacon = now
				n.sendBeaconsLocked()
				for a, t := range replied {
					if now.Sub(t) > maxBeaconReply {
						delete(replied, a)
					}
				}
			}
			n.tickPeersLocked(now)
			n.paceFragmentsLocked(now)
			if now.Sub(lastGossip) >= gossipEvery {
				lastGossip = now
				for _, p := range n.peers {
					if p.active.IsValid() || p.stream != nil {
						n.sendDigestLocked(p, p.active) // invalid active: over the stream
					}
				}
			}
			if n.dirty && now.Sub(lastSave) >= saveEvery {
				lastSave = now
				n.kickSaver()
			}
			n.mu.Unlock()
			if now.Sub(lastMem) >= memCheckEvery {
				lastMem = now
				n.releaseMemory(now) // a collection: never under n.mu
			}
		}
	}
}

func (n *Node) handleInboundLocked(in inbound, now time.Time, replied map[netip.AddrPort]time.Time) {
	switch in.kind {
	case wire.KindBeacon:
		n.handleBeaconLocked(in, now, replied)
	case wire.KindControl:
		n.handleControlLocked(in.buf, in.from, now)
	case wire.KindSTUN:
		n.handleSTUNLocked(in.buf, in.from)
	case wire.KindJoin:
		n.handleJoinViaLocked(in.buf, in.from, now)
	default:
		n.dropCtl["unhandled-kind"]++
	}
}

// handleControlLocked opens and dispatches one control packet.
func (n *Node) handleControlLocked(pkt []byte, from netip.AddrPort, now time.Time) {
	sender, err := ctlSender(pkt)
	if err != nil {
		n.dropCtl["malformed"]++
		return
	}
	p := n.byCtl[sender]
	if p == nil {
		// Only a join request may come from a key we do not know.
		n.handleJoinLocked(pkt, sender, from, now)
		return
	}
	m, err := openCtl(pkt, p.shared)
	if err != nil {
		n.dropCtl["does-not-open"]++
		return
	}
	msg, err := parseCtl(m)
	if err != nil {
		n.dropCtl["malformed"]++
		return
	}
	// Fresh packets only: nothing is learned from a replay (replay.go).
	if !isHandshake(msg) {
		if err := p.rx.accept(ctlNonce(pkt)); err != nil {
			n.dropCtl["replay"]++
			return
		}
	}
	p.lastHeard = now
	switch msg := msg.(type) {
	case pingMsg:
		n.noteBootLocked(p, msg.Boot)
		if !from.IsValid() { // relayed: answer on the same way
			n.sendCtlLocked(p, from, pongMsg{TxID: msg.TxID}.marshal())
			return
		}
		n.bind.Learn(p.cert.Node, from)
		n.sendCtlLocked(p, from, pongMsg{TxID: msg.TxID, Seen: from}.marshal())
		if _, ok := p.cands[from]; !ok {
			n.addCandLocked(p, from, now)
		}
		if !p.active.IsValid() || p.active != from && !p.hbWait.IsZero() {
			// No path yet, or ours stalls while the peer speaks from a new
			// address: confirm this one from our side at once.
			n.pingLocked(p, from, now, nil)
		}
	case pongMsg:
		n.handlePongLocked(p, msg, from, now)
	case []DigestEntry:
		n.handleDigestLocked(p, from, msg, now)
	case []RecordKey:
		n.sendRecordsLocked(p, from, msg)
	case []recordMsg:
		n.handleRecordsLocked(p, msg, now)
	case fragMsg:
		n.handleFragmentLocked(p, msg, now)
	case joinFwd:
		n.handleJoinFwdLocked(p, msg, now)
	case joinBack:
		n.handleJoinBackLocked(p, msg, now)
	case joinReq:
		// A joiner we admitted already is a peer now; when our answer was
		// lost it asks again and must get its certificate again.
		n.handleJoinLocked(pkt, sender, from, now)
	default:
		n.dropCtl["unexpected-message"]++
	}
}
