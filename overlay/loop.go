package overlay

import (
	"net/netip"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"glow/internal/wire"
	"glow/link"
	"glow/overlay/member"
)

// The control loop: one goroutine that handles every control datagram,
// beacon and timer, holding Node.mu while it changes state. It never blocks
// on the network: sends are UDP writes; file writes and routes go to the
// saver and the route setter (save.go). The API reads the same state under
// the same lock.
//
// Timers. The loop has no fixed tick: it sleeps until the earliest deadline
// its state has (a heartbeat, a dead path, a probe, a ping's timeout, the
// next beacon, digest, info refresh or save, fragment pacing, a candidate's
// expiry). Each tick function notes the deadlines it leaves with dueLocked;
// so does code outside the tick that makes new work (a new candidate to
// probe, fragments to pace, an API ping), which wakes the loop early when
// the deadline is before the one it sleeps for. Code that only sets
// routesDirty or infoDirty needs no call: the loop looks at those flags
// after each datagram, and other goroutines setting them call dueLocked.
// The data path wakes the loop (ctlQueues.wake) when a peer that was idle
// sends or receives relayed traffic, since traffic makes heartbeats and
// probing fast. Ticks are at least tickEvery apart (the old fixed tick, so
// nothing runs more often than it did) and at most maxSleep: an idle node
// whose peers are idle ticks a few times in ten seconds (TestBubbleIdleTicks),
// and slows its digests and beacons once nothing changes (quietAfter).
// Interfaces and addresses are not polled: a netlink watch (ifaces.go)
// wakes the loop when they change, which re-reads them then and only then
// (the info refresh and the beacons use the cached reading).

const (
	tickEvery = 250 * time.Millisecond // the least time between two ticks
	maxSleep  = 10 * time.Second       // the most
	// knownBurst is the most known peers' datagrams the loop takes in a
	// row before it looks at its timers and other queue (loop).
	knownBurst = 64
	// timerSlack: slow periodic work (digests, beacons, info) due this
	// soon is done by a tick that runs anyway, and a datagram that wakes
	// the loop this soon before a tick for such work (and nothing due
	// sooner) runs that tick at once; so a node's timers, and two idle
	// neighbours', fall in step and wake the node together. Heartbeats,
	// probes and expiries keep their exact times.
	timerSlack  = 2 * time.Second
	gossipEvery = 5 * time.Second
	beaconEvery = 5 * time.Second // LAN and bootstrap beacons
	// quietAfter: once nothing has changed for this long (no record, path,
	// route, endpoint or peer), digests and beacons slow to quietEvery: an
	// idle network has nothing to repair or discover, and a change (ours,
	// or one flooded to us) brings the fast pace back at once. A newcomer's
	// own beacons are fast and answered, so it is found as before.
	quietAfter     = time.Minute
	quietEvery     = 30 * time.Second
	beaconFast     = 1 * time.Second // for the first beaconBurst seconds
	beaconBurst    = 5 * time.Second
	infoEvery      = 10 * time.Second // re-check our endpoints this often
	saveEvery      = 5 * time.Second
	maxBeaconReply = time.Second // at most one unicast beacon reply per address per second
	memCheckEvery  = time.Second
	// flushCertsEvery: certificates taken from a datagram are followed up
	// (flushCertsLocked) once the queues are empty (certsGap after the
	// last follow-up, else at the next tick), or after this many more
	// datagrams if they never are, or a quarter of the peers' count if
	// more: a follow-up is O(N), so it costs O(1) a datagram (at 1,000
	// simulated nodes, one every 64 was half the late cold start's CPU).
	flushCertsEvery = 64
	// certsGap: within this of the last follow-up, certificates wait for
	// the next tick (at most tickEvery): a cold start brings hundreds in a
	// few hundred milliseconds, each datagram's worth at its own time.
	certsGap = 100 * time.Millisecond
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
			if n.ifw != nil {
				d.SetWatched() // the loop refreshes it on every change
			}
			n.atClose(func() { d.Close() })
			n.wg.Add(1)
			go n.readBeacons()
		}
	}
	// Peers known from the records cache: probe them at once.
	now := time.Now()
	n.mu.Lock()
	for _, c := range n.mem.store.Certs() {
		n.addPeerLocked(c, now)
	}
	n.refreshInfoLocked(now)
	n.mu.Unlock()
	n.wg.Add(3)
	go n.loop()
	go n.saver()
	go n.roleWriter() // admins.go
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

// loopTimer is when the control loop wakes next. Guarded by Node.mu.
type loopTimer struct {
	next  time.Time // the earliest deadline noted since the last tick began (zero: none)
	slow  time.Time // the earliest of those with timerSlack (digests, beacons, info)
	armed time.Time // what the loop's timer is set for (zero while a tick runs)
	ticks uint64    // ticks run, for tests
}

// dueLocked notes that control work is due at t: the loop wakes then (or
// tickEvery after its last tick, if that is later), and at once when it was
// going to sleep beyond t.
func (n *Node) dueLocked(t time.Time) {
	w := &n.wakeAt
	if w.next.IsZero() || t.Before(w.next) {
		w.next = t
	}
	if t.Before(w.armed) {
		n.ctlq.wakeLoop()
	}
}

func (n *Node) loop() {
	defer n.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	start := time.Now()
	var lastGossip, lastBeacon, lastInfo, lastSave, lastMem, lastTick, lastIdle, lastPace time.Time
	var outLeft, inLeft uint64        // for the in-flight counts' idle check
	lastChange, peersSeen := start, 0 // for the quiet pace (quietAfter)
	lastTrim := time.Now()
	replied := map[netip.AddrPort]time.Time{}
	// Interface changes (ifaces.go): the beacon group is joined on new
	// interfaces and our endpoints re-read at the next tick. Without a
	// watch, both are done on their timers.
	var ifChanged <-chan struct{}
	ifDirty, netsRead := false, false
	if n.ifw != nil {
		ifChanged = n.ifw.changed
	}
	n.mu.Lock()
	n.wakeAt.next, n.wakeAt.armed = start, start // the first tick: at once
	n.mu.Unlock()
	// arm sets the timer for the earliest deadline noted, within
	// [lastTick+tickEvery, now+maxSleep]. Called with n.mu held.
	arm := func(now time.Time) {
		at := n.wakeAt.next
		if at.IsZero() || at.Sub(now) > maxSleep {
			at = now.Add(maxSleep)
		}
		if floor := lastTick.Add(tickEvery); at.Before(floor) {
			at = floor
		}
		if !n.wakeAt.armed.IsZero() && !at.Before(n.wakeAt.armed) {
			return // set for that already (or sooner)
		}
		n.wakeAt.armed = at
		t.Reset(at.Sub(now))
	}
	note := func(at time.Time) { // dueLocked without waking: the loop itself
		if n.wakeAt.next.IsZero() || at.Before(n.wakeAt.next) {
			n.wakeAt.next = at
		}
	}
	slow := func(at time.Time) { // work that a tick up to timerSlack early does
		note(at)
		if n.wakeAt.slow.IsZero() || at.Before(n.wakeAt.slow) {
			n.wakeAt.slow = at
		}
	}
	held, lastFlush := 0, time.Time{} // datagrams handled since certificates were taken, and the last follow-up (flushCertsLocked)
	handle := func(in inbound) {
		if h := n.cfg.afterInbound; h != nil {
			defer h()
		}
		now := time.Now()
		n.mu.Lock()
		n.handleInboundLocked(in, now, replied)
		if n.mem.certsPending {
			held++
			switch {
			case held >= max(flushCertsEvery, len(n.paths.peers)/4) || len(n.ctlq.known)+len(n.ctlq.other) == 0 && now.Sub(lastFlush) >= certsGap:
				held, lastFlush = 0, now
				n.flushCertsLocked()
			case len(n.ctlq.known)+len(n.ctlq.other) == 0:
				note(lastFlush.Add(certsGap)) // a burst of certificates: the rest at a tick
			}
		}
		// What the datagram changed and only a tick does, or a tick due
		// soon anyway for work it may do early: now, while the loop is awake.
		w := n.wakeAt
		if n.paths.routesDirty || n.mem.infoDirty || n.mem.dirty {
			lastChange = now
		}
		if n.paths.routesDirty || n.mem.infoDirty || !w.slow.IsZero() && w.slow.Sub(now) < timerSlack && !w.next.Before(w.slow) {
			note(now)
		}
		if n.mem.dirty {
			note(lastSave.Add(saveEvery))
		}
		arm(now)
		n.mu.Unlock()
	}
	knownRun := 0 // known peers' datagrams taken in a row ahead of everything else
	for {
		// Known peers' control packets first: a flood in the other queue
		// never delays a heartbeat by more than one datagram (ctlqueue.go).
		// But not more than knownBurst in a row: then one select in which
		// the timer, the other queue, a wake-up and Close stand level with
		// the known queue. A known peer (or whoever sends from its address)
		// that keeps that queue full thus slows the loop's timers by a few
		// bursts, and cannot stop them: heartbeats, gossip, saving, Close.
		if knownRun < knownBurst {
			select {
			case in := <-n.ctlq.known:
				knownRun++
				handle(in)
				continue
			default:
			}
		}
		knownRun = 0
		select {
		case <-n.ctx.Done():
			return
		case in := <-n.ctlq.known:
			handle(in)
			continue
		case in := <-n.ctlq.other:
			handle(in)
			continue
		case <-ifChanged:
			now := time.Now()
			n.mu.Lock()
			ifDirty, n.mem.infoDirty = true, true
			note(now)
			arm(now)
			n.mu.Unlock()
			continue
		case <-n.ctlq.wake:
			// A deadline came nearer, or a peer has traffic again.
			now := time.Now()
			n.mu.Lock()
			if n.ctlq.traffic.Swap(false) {
				note(now) // look at its heartbeats and probing now
			}
			arm(now)
			n.mu.Unlock()
			continue
		case <-t.C:
		}
		now := time.Now()
		lastTick = now
		if now.Sub(lastIdle) >= tickEvery {
			lastIdle = now
			n.bind.out.idle(&outLeft)
			n.bind.in.idle(&inLeft)
		}
		if now.Sub(lastTrim) >= lazyTrimEvery {
			lastTrim = now
			n.bind.trimWG(now)
		}
		n.mu.Lock()
		if n.paths.routesDirty || n.mem.infoDirty || n.mem.dirty || len(n.paths.peers) != peersSeen {
			lastChange, peersSeen = now, len(n.paths.peers)
		}
		n.mu.Unlock()
		gossip, every, slack := gossipEvery, beaconEvery, timerSlack
		if now.Sub(lastChange) >= quietAfter {
			gossip, every = quietEvery, quietEvery
		}
		if now.Sub(start) < beaconBurst {
			every, slack = beaconFast, 0
		}
		beaconDue := now.Sub(lastBeacon) >= every-slack
		if n.disc != nil && (ifDirty || beaconDue && n.ifw == nil) {
			n.disc.Refresh() // multicast joins on new interfaces: never under n.mu
		}
		// The networks the host is on (subnets.go), read off the lock: at
		// the first tick, then after a change (watched) or on the info
		// timer (not watched).
		var nets []netip.Prefix
		readNets := n.cfg.HostNets != nil && (!netsRead || ifDirty || n.ifw == nil && now.Sub(lastInfo) >= infoEvery-timerSlack)
		if readNets {
			nets, netsRead = n.cfg.HostNets(), true
		}
		ifDirty = false
		memDue := now.Sub(lastMem) >= memCheckEvery
		if memDue {
			lastMem = now
		}
		n.mu.Lock()
		if n.mem.certsPending {
			held, lastFlush = 0, now
			n.flushCertsLocked()
		}
		n.wakeAt.next, n.wakeAt.slow, n.wakeAt.armed = time.Time{}, time.Time{}, time.Time{} // the tick notes every deadline anew
		n.wakeAt.ticks++
		if readNets && !slices.Equal(nets, n.rt.connected) {
			n.rt.connected, n.rt.dirty = nets, true
		}
		if n.paths.routesDirty || n.mem.infoDirty || now.Sub(lastInfo) >= infoEvery-timerSlack {
			lastInfo, n.mem.infoDirty = now, false
			n.refreshInfoLocked(now) // links or endpoints may have changed
		}
		if n.paths.routesDirty {
			n.computeRoutesLocked(now)
		}
		if n.rt.dirty {
			n.refreshSubnetsLocked()
		}
		slow(lastInfo.Add(infoEvery))
		n.dueLocked(lastTrim.Add(lazyTrimEvery))
		if beaconDue {
			lastBeacon = now
			n.sendBeaconsLocked()
			for a, t := range replied {
				if now.Sub(t) > maxBeaconReply {
					delete(replied, a)
				}
			}
		}
		slow(lastBeacon.Add(every))
		n.tickPeersLocked(now)
		n.tickCertsLocked(now) // renew.go
		if n.paths.routesDirty || n.mem.infoDirty {
			// A path died in tickPeersLocked after our info was refreshed:
			// re-sign it at the next tick, not the next deadline.
			n.dueLocked(now)
		}
		if now.Sub(lastPace) >= tickEvery {
			// Fragments go at most fragBurst per peer per tickEvery.
			lastPace = now
			n.paceFragmentsLocked(now)
		}
		n.fragmentsDueLocked(lastPace)
		if now.Sub(lastGossip) >= gossip-timerSlack {
			lastGossip = now
			for _, p := range n.paths.nbrs {
				n.gossipLocked(p, p.active) // invalid active: over the stream
			}
		}
		slow(lastGossip.Add(gossip))
		if n.mem.dirty && now.Sub(lastSave) >= saveEvery {
			lastSave = now
			n.kickSaver()
		}
		if n.mem.dirty {
			n.dueLocked(lastSave.Add(saveEvery))
		}
		if last := n.bind.lastData.Load(); last != n.memReleasedAt {
			// Memory goes back once traffic has stopped for a second.
			n.dueLocked(later(lastMem.Add(memCheckEvery), time.Unix(0, last).Add(time.Second)))
		}
		arm(now)
		n.mu.Unlock()
		if memDue {
			n.releaseMemory(now) // a collection: never under n.mu
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
		n.handleJoinViaLocked(in.buf, in.from, in.stream, now)
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
	p := n.paths.byCtl[sender]
	if p == nil {
		// Only a join or renewal request may come from a key we do not
		// know, or an answer to our renewal request (renew.go).
		if n.renewAnswerLocked(pkt, sender, now) {
			return
		}
		n.handleJoinLocked(pkt, sender, from, now)
		return
	}
	if from.IsValid() && (!endpointOK(from, n.loopbackLab) || n.inTunnelLocked(from.Addr())) {
		// It reached our UDP socket through a tunnel (an overlay address,
		// or one this host routes into glow: peers.go inTunnelLocked), so
		// it says nothing of a path; answering it or learning its address
		// would be glow inside glow.
		n.dropCtl["from-tunnel"]++
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
		n.noteBootLocked(p, msg.Boot, now)
		if !from.IsValid() { // relayed: answer on the same way
			n.heardRelayedLocked(p, msg.TxID, now) // failover.go
			n.sendCtlLocked(p, from, pongMsg{TxID: msg.TxID}.marshal())
			return
		}
		n.bind.Learn(p.cert.Node, from)
		n.sendCtlLocked(p, from, pongMsg{TxID: msg.TxID, Seen: from}.marshal())
		if _, ok := p.cands[from]; !ok {
			n.addCandLocked(p, from, now)
		}
		switch {
		case !p.active.IsValid(): // no path yet: confirm this one from our side at once
			n.pingLocked(p, from, now, nil)
		case p.active != from: // it speaks from a new address (roam.go)
			n.peerSpokeFromLocked(p, from, now)
		}
	case pongMsg:
		n.handlePongLocked(p, msg, from, now)
	case []member.DigestEntry:
		n.handleDigestLocked(p, from, msg, now)
	case member.Summary:
		n.handleSummaryLocked(p, from, msg)
	case []member.RecordKey:
		n.sendRecordsLocked(p, from, msg)
	case []recordMsg:
		n.handleRecordsLocked(p, msg, now)
	case fragMsg:
		n.handleFragmentLocked(p, msg, now)
	case joinFwd:
		n.handleJoinFwdLocked(p, msg, now)
	case joinBack:
		n.handleJoinBackLocked(p, msg, now)
	case adminKeyMsg:
		n.handleAdminKeyLocked(p, msg, now)
	case adminAckMsg:
		n.handleAdminAckLocked(p, msg)
	case renewReq:
		n.handshakeLocked(pkt, sender, from, now, func(b []byte) error {
			if from.IsValid() {
				return n.bind.SendTo(b, from)
			}
			return n.bind.SendToPeer(b, p.cert.Node) // relayed: back the same way
		})
	case renewResp:
		if !n.mem.store.Own(p.cert.User) {
			// Only our admins answer our renewal requests; a friend's
			// node would slip in certificates its gossip may not carry
			// (TestAttackFriendRenewalAnswer).
			n.dropCtl["renewal-not-ours"]++
			return
		}
		n.takeRenewalLocked(p.cert.FQDN(), msg, now)
	case joinReq:
		// A joiner we admitted already is a peer now; when our answer was
		// lost it asks again and must get its certificate again.
		n.handleJoinLocked(pkt, sender, from, now)
	default:
		n.dropCtl["unexpected-message"]++
	}
}
