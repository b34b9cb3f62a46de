package overlay

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"glow/internal/wire"
	"glow/link"
	"glow/overlay/api"
	"glow/overlay/member"
)

const (
	joinTimeout = 30 * time.Second
	joinResend  = time.Second
)

// join runs the joiner's side of an invite: a sealed request carrying a
// proof of the code's secret, sent from a short-lived socket on the node's
// port to every endpoint in the code until the inviter answers.
func (n *Node) join(code string, port uint16) (*member.Cert, error) {
	inv, err := member.ParseInvite(code)
	if err != nil {
		return nil, err
	}
	if inv.Friend {
		return nil, errors.New("this is a friend code: use it with 'glow friend add CODE' on your own admin node")
	}
	if len(inv.Endpoints) == 0 {
		return nil, errors.New("the invite code names no address of the inviting node")
	}
	if time.Now().After(inv.Expires) {
		return nil, fmt.Errorf("the invite code expired at %s; ask for a new one ('glow invite')", inv.Expires.Format(time.RFC3339))
	}
	listen := n.cfg.ListenPacket
	if listen == nil {
		listen = func(port uint16) (net.PacketConn, error) {
			return net.ListenUDP("udp", &net.UDPAddr{Port: int(port)})
		}
	}
	uc, err := listen(port)
	if err != nil {
		if uc, err = listen(0); err != nil {
			return nil, err
		}
	}
	defer uc.Close()

	req := joinReq{CodeID: inv.ID(), Node: n.id, WG: n.keys.WGPublic(), Name: n.cfg.NodeName}
	rand.Read(req.Nonce[:])
	req.Proof = joinProof(inv.Secret, inv.Inviter, n.ctlPub, n.id, req.WG, req.Name, req.Nonce)
	copy(req.Sig[:], ed25519.Sign(n.keys.Sign, joinSigned(inv.Inviter, n.ctlPub, req)))
	j := &joiner{pc: uc, inv: inv, ctl: n.keys.Ctl, ctlPub: n.ctlPub, req: req, logf: n.logf, hostAddrs: n.cfg.HostAddrs,
		lab: n.cfg.ListenPacket != nil, streams: true, id: link.Identity{Sign: n.keys.Sign}}
	if j.ln = listenReach(n.cfg.LinkListen, n.logf); j.ln != nil { // joinreach.go
		defer j.ln.Close()
	}
	if !n.cfg.NoDiscovery {
		if d, err := link.ListenDiscovery(n.cfg.DiscoveryGroup); err == nil {
			defer d.Close()
			j.disc = d
		}
	}
	resp, err := j.run()
	if err != nil {
		return nil, err
	}
	if !resp.OK {
		return nil, fmt.Errorf("the inviting node refused to admit this node: %s", resp.Err)
	}
	c, err := member.ParseCert(resp.Cert)
	if err != nil {
		return nil, fmt.Errorf("the inviting node sent a bad certificate: %w", err)
	}
	if member.UserHash(c.User[:]) != inv.UserHash || c.Node != n.id || c.WG != req.WG || c.Ctl != n.ctlPub {
		return nil, errors.New("the inviting node sent a certificate that does not match this node or the code")
	}
	for _, ap := range j.targets { // the code's addresses and the members found meanwhile
		if !slices.Contains(n.lnk.bootstrap, ap) {
			n.lnk.bootstrap = append(n.lnk.bootstrap, ap)
		}
	}
	n.state.WriteFile("bootstrap", n.lnk.bootstrapFile(), 0o644)
	n.logf("glow: joined user %s as %s (%v, %v) in %v", c.UserName, c.Name, c.IPv4, c.IPv6, time.Since(j.start).Round(time.Millisecond))
	return c, nil
}

// joinExchange sends req, sealed from the control key ctl (public half
// ctlPub) to the inviter, from pc to every endpoint of inv until the
// inviter answers or joinTimeout passes, and returns the answer.
func joinExchange(pc net.PacketConn, inv *member.Invite, ctl [32]byte, ctlPub wire.Key, req joinReq, logf func(string, ...any)) (joinResp, error) {
	j := &joiner{pc: pc, inv: inv, ctl: ctl, ctlPub: ctlPub, req: req, logf: logf}
	return j.run()
}

const (
	joinHintAfter  = 5 * time.Second // then the joiner says what it tried and what to run
	maxJoinTargets = 32
)

// A joiner sends a join request to every address where a member of the
// code's user may be: the code's endpoints, and members that show
// themselves with a beacon (on the LAN, or unicast after 'glow link add
// udp://THIS:PORT' on a member). Every request is sealed anew to the
// inviter and wrapped for any member to pass on (joinrelay.go); the answer
// counts from whatever address it comes, if it is sealed by the inviter.
type joiner struct {
	pc        net.PacketConn
	disc      *link.Discovery // LAN beacons, or nil
	inv       *member.Invite
	ctl       [32]byte
	ctlPub    wire.Key
	req       joinReq
	logf      func(string, ...any)
	hostAddrs func() []netip.Addr // for the hint; nil: none
	streams   bool                // also ask over TCP (joinstream.go)
	lab       bool                // the UDP socket is a lab's: dial only the code's stream addresses
	ln        net.Listener        // members' links reaching out (joinreach.go), or nil
	id        link.Identity       // the node key, no certificate: for those links

	start   time.Time
	targets []netip.AddrPort
	failed  map[netip.AddrPort]bool // send errors logged
	shared  *[32]byte
}

type joinDatagram struct {
	b    []byte
	from netip.AddrPort
	lan  bool
}

func (j *joiner) run() (joinResp, error) {
	j.start, j.failed = time.Now(), map[netip.AddrPort]bool{}
	j.shared = sharedKey(j.ctl, j.inv.Inviter)
	j.targets = slices.Clone(j.inv.Endpoints)
	in := make(chan joinDatagram, 16)
	done, pcDone := make(chan struct{}), make(chan struct{})
	read := func(rd func([]byte) (int, netip.AddrPort, error), lan bool) {
		for {
			buf := make([]byte, 2048)
			sz, from, err := rd(buf)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					continue
				}
				return
			}
			select {
			case in <- joinDatagram{buf[:sz], from, lan}:
			case <-done:
				return
			}
		}
	}
	// The readers end when run returns: the socket's before run returns
	// (its caller may read it next), the discovery socket's once the
	// caller closes it.
	var streams sync.WaitGroup // joinStream goroutines, which end with done
	defer func() {
		close(done)
		j.pc.SetReadDeadline(time.Unix(1, 0))
		<-pcDone
		streams.Wait()
	}()
	j.pc.SetReadDeadline(time.Time{})
	go func() {
		defer close(pcDone)
		read(func(b []byte) (int, netip.AddrPort, error) {
			sz, a, err := j.pc.ReadFrom(b)
			if err != nil {
				select {
				case <-done:
					return 0, netip.AddrPort{}, net.ErrClosed
				default:
					return 0, netip.AddrPort{}, err
				}
			}
			return sz, udpAddrPort(a), nil
		}, false)
	}()
	if j.disc != nil {
		go read(j.disc.Read, true)
	}
	if j.ln != nil {
		streams.Add(1)
		go func() {
			defer streams.Done()
			j.serveReach(j.ln, in, done)
		}()
	}
	if j.streams {
		for _, t := range j.streamTargets() {
			streams.Add(1)
			go func() {
				defer streams.Done()
				j.joinStream(t, in, done)
			}()
		}
	}
	for _, t := range j.targets {
		j.send(t)
	}
	resend := time.NewTicker(joinResend)
	defer resend.Stop()
	deadline := time.NewTimer(joinTimeout)
	defer deadline.Stop()
	hint := time.NewTimer(joinHintAfter)
	defer hint.Stop()
	for {
		select {
		case <-deadline.C:
			return joinResp{}, fmt.Errorf("no answer from the inviting node within %v (tried %v); is a node of the user up and reachable from here, or can one reach this machine ('glow link add udp://ADDR:PORT' or 'tcp://ADDR:PORT' on it)?", joinTimeout, j.targets)
		case <-hint.C:
			j.hint()
		case <-resend.C:
			for _, t := range j.targets {
				j.send(t)
			}
		case d := <-in:
			if resp, ok := j.handle(d); ok {
				return resp, nil
			}
		}
	}
}

// send sends a fresh request to t: the inviter takes each packet once.
func (j *joiner) send(t netip.AddrPort) {
	if _, err := j.pc.WriteTo(j.packet(), net.UDPAddrFromAddrPort(t)); err != nil && !j.failed[t] {
		j.failed[t] = true // once per address: it is sent to every second
		j.logf("glow: join: sending to %v: %v", t, err)
	}
}

// packet is a fresh request wrapped for any member.
func (j *joiner) packet() []byte {
	return joinVia(j.inv.Inviter, sealCtl(nil, j.ctlPub, j.shared, j.req.marshal()))
}

// handle takes one datagram: the inviter's answer ends the join; a beacon
// of a member of the code's user adds its address to the targets.
func (j *joiner) handle(d joinDatagram) (joinResp, bool) {
	switch wire.Classify(d.b) {
	case wire.KindControl:
		sender, err := ctlSender(d.b)
		if err != nil || sender != j.inv.Inviter {
			j.logf("glow: join: ignoring a control packet from %v that is not the inviting node's", d.from)
			return joinResp{}, false
		}
		m, err := openCtl(d.b, j.shared)
		if err != nil {
			j.logf("glow: join: ignoring an answer that does not open: %v", err)
			return joinResp{}, false
		}
		msg, err := parseCtl(m)
		resp, ok := msg.(joinResp)
		if err != nil || !ok {
			j.logf("glow: join: ignoring an unexpected answer: %v", err)
			return joinResp{}, false
		}
		return resp, true
	case wire.KindBeacon:
		c, port, err := joinBeacon(d.b, j.inv.UserHash, time.Now())
		if err != nil {
			return joinResp{}, false // another user's node, or a stale beacon: not a way in
		}
		addr := d.from
		if d.lan {
			addr = netip.AddrPortFrom(d.from.Addr(), port)
		}
		addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
		if !addr.IsValid() || slices.Contains(j.targets, addr) || len(j.targets) >= maxJoinTargets {
			return joinResp{}, false
		}
		j.logf("glow: join: %s.%s shows itself at %v; asking it", c.Name, c.UserName, addr)
		j.targets = append(j.targets, addr)
		j.send(addr)
	}
	return joinResp{}, false
}

// hint says, after joinHintAfter without an answer, what was tried and
// what to run on a member that can reach this machine (joinreach.go).
func (j *joiner) hint() {
	j.logf("glow: join: no answer yet after %v; tried %v. Still trying for %v.", joinHintAfter, j.targets, joinTimeout-joinHintAfter)
	var addrs []netip.Addr
	if j.hostAddrs != nil {
		addrs = j.hostAddrs()
	}
	lines := j.reachLines(addrs)
	if len(lines) == 0 {
		j.logf("glow: join: if a node of the user can reach this machine, run there: glow link add udp://ADDRESS:%d (this machine's address)", udpAddrPort(j.pc.LocalAddr()).Port())
		return
	}
	j.logf("glow: join: if a node of the user can reach this machine, run on it one of:")
	for _, l := range lines {
		j.logf("glow: join:     %s", l)
	}
}

// joinBeacon checks a beacon for a joiner, who holds no certificate: it is
// from a member of the user the code names (its certificate signed by that
// user, the beacon by the node), and fresh.
func joinBeacon(b []byte, user [16]byte, now time.Time) (*member.Cert, uint16, error) {
	bc, err := parseBeacon(b)
	if err != nil {
		return nil, 0, err
	}
	if member.UserHash(bc.user[:]) != user {
		return nil, 0, errors.New("beacon of another user")
	}
	if d := now.Sub(bc.time); d > member.ClockSkew || d < -member.ClockSkew {
		return nil, 0, errors.New("stale beacon")
	}
	c, err := joinMemberCert(bc.cert, bc.node, user, now)
	if err != nil {
		return nil, 0, err
	}
	if !ed25519.Verify(bc.node.PublicKey(), append(bytes.Clone(beaconContext), bc.signed...), bc.sig) {
		return nil, 0, errors.New("beacon signature")
	}
	return c, bc.port, nil
}

func udpAddrPort(a net.Addr) netip.AddrPort {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// bootstrapFile is the bootstrap file's content. Node.mu is held once the
// node runs.
func (l *linkState) bootstrapFile() []byte {
	var b strings.Builder
	for _, ap := range l.bootstrap {
		fmt.Fprintln(&b, ap)
	}
	return []byte(b.String())
}

func (n *Node) loadBootstrap() {
	data, err := n.state.ReadFile("bootstrap")
	if err != nil {
		return
	}
	for _, ap := range parseBootstrap(data) {
		if !slices.Contains(n.lnk.bootstrap, ap) {
			n.lnk.bootstrap = append(n.lnk.bootstrap, ap)
		}
	}
}

// maxBootstrap bounds the addresses taken from the bootstrap file: it
// holds the endpoints of invite codes used, a handful.
const maxBootstrap = 64

// parseBootstrap parses the bootstrap file: one HOST:PORT a line. Lines
// that do not parse are skipped (the file is a cache of hints), and at
// most maxBootstrap distinct addresses are taken.
func parseBootstrap(data []byte) []netip.AddrPort {
	var aps []netip.AddrPort
	for _, line := range strings.Fields(string(data)) {
		ap, err := netip.ParseAddrPort(line)
		if err != nil || !ap.IsValid() || ap.Port() == 0 || slices.Contains(aps, ap) {
			continue
		}
		if aps = append(aps, ap); len(aps) == maxBootstrap {
			break
		}
	}
	return aps
}

// handleJoinLocked is the inviter's side: check the request's proof against
// a pending invite, admit the node, answer sealed to the joiner's key.
func (n *Node) handleJoinLocked(pkt []byte, sender wire.Key, from netip.AddrPort, now time.Time) {
	n.handshakeLocked(pkt, sender, from, now, func(b []byte) error { return n.bind.SendTo(b, from) })
}

// handshakeLocked handles a join or friend request (or a friend answer)
// from sender at from, and answers with reply: straight to from, or through
// the member that passed the request on (joinrelay.go).
func (n *Node) handshakeLocked(pkt []byte, sender wire.Key, from netip.AddrPort, now time.Time, reply func([]byte) error) {
	ch := n.adm.pendingFriend[sender]
	if n.mem.user == nil && ch == nil {
		n.dropCtl["unknown-sender"]++
		return
	}
	// Cheap checks before the X25519: a known peer's key is precomputed;
	// a stranger's request can only succeed while a code is live.
	var shared *[32]byte
	if p := n.paths.byCtl[sender]; p != nil {
		shared = p.shared
	} else if ch == nil && !n.adm.invites.Live(now, joinTimeout) && n.mem.store.LapsedByCtl(sender) == nil {
		n.dropCtl["unknown-sender"]++
		return
	} else {
		shared = sharedKey(n.keys.Ctl, sender)
	}
	m, err := openCtl(pkt, shared)
	if err != nil {
		n.dropCtl["unknown-sender"]++
		return
	}
	msg, err := parseCtl(m)
	if err != nil {
		n.dropCtl["unknown-sender"]++
		return
	}
	if err := n.adm.handshakes.fresh(msg, pkt, now); err != nil {
		n.dropCtl["handshake-replay"]++
		return
	}
	switch msg := msg.(type) {
	case friendResp:
		if ch != nil {
			select {
			case ch <- friendAnswer{msg, from}:
			default:
			}
		}
		return
	case friendReq:
		c, err := n.acceptFriendLocked(msg, sender, from, now)
		resp := friendResp{OK: err == nil, UserKey: n.mem.cert.User, UserName: n.mem.cert.UserName}
		if err != nil {
			n.logf("glow: friend request from %v refused: %v", from, err)
			resp.Err = err.Error()
		} else {
			resp.Cert = c.Marshal()
		}
		reply(sealCtl(nil, n.ctlPub, shared, resp.marshal()))
		return
	case renewReq:
		n.answerRenewalLocked(msg, sender, shared, now, reply) // renew.go
		return
	}
	req, ok := msg.(joinReq)
	if !ok {
		n.dropCtl["unknown-sender"]++
		return
	}
	cert, err := n.admitLocked(req, sender, now)
	resp := joinResp{OK: err == nil}
	if err != nil {
		n.dropCtl["join-refused"]++
		n.logf("glow: join request from %v refused: %v", from, err)
		resp.Err = err.Error()
	} else {
		resp.Cert = cert.Marshal()
	}
	if err := reply(sealCtl(nil, n.ctlPub, shared, resp.marshal())); err != nil {
		n.logf("glow: answering the join request from %v: %v", from, err)
	} else if n.noteJoinAnswerLocked(from) {
		n.logf("glow: answered the join request from %v", from)
	}
}

func (n *Node) admitLocked(req joinReq, ctl wire.Key, now time.Time) (*member.Cert, error) {
	inv := n.adm.invites.ByID[req.CodeID]
	if inv == nil || inv.Friend {
		return nil, errInviteUnknown
	}
	want := joinProof(inv.Secret, n.ctlPub, ctl, req.Node, req.WG, req.Name, req.Nonce)
	if !hmac.Equal(want[:], req.Proof[:]) {
		return nil, errInviteProof
	}
	if !ed25519.Verify(req.Node.PublicKey(), joinSigned(n.ctlPub, ctl, req), req.Sig[:]) {
		return nil, errJoinNodeProof
	}
	// A retry of a request already granted gets the same certificate.
	for i, id := range inv.UsedBy {
		if id == req.Node {
			if c, err := member.ParseCert(inv.Certs[i]); err == nil && c.Ctl == ctl && c.WG == req.WG {
				return c, nil
			}
		}
	}
	if now.After(inv.Expires) {
		return nil, errInviteExpired
	}
	if inv.Uses <= 0 {
		return nil, errInviteUsed
	}
	if !member.ValidName(req.Name) {
		return nil, fmt.Errorf("bad node name %q", req.Name)
	}
	// An id is certified once: never again, and never to other keys.
	if n.mem.store.Revoked(req.Node) {
		return nil, errJoinRevoked
	}
	if n.mem.store.Cert(req.Node) != nil {
		return nil, errJoinMember
	}
	used := map[netip.Addr]bool{}
	names := map[string]bool{}
	for _, c := range n.mem.store.Certs() {
		used[c.IPv4] = true
		names[c.Name] = true
	}
	for _, d := range n.devicesOfDocLocked() { // devices.go
		used[d.IPv4], names[d.Name] = true, true
	}
	name := req.Name
	for i := 2; names[name]; i++ {
		suffix := fmt.Sprintf("-%d", i)
		name = strings.TrimRight(req.Name[:min(len(req.Name), 63-len(suffix))], "-") + suffix
	}
	v4, err := member.AllocIPv4(req.Node, used)
	if err != nil {
		return nil, err
	}
	c := &member.Cert{
		Node: req.Node, Name: name, WG: req.WG, Ctl: ctl,
		IPv4: v4, IPv6: member.NodeAddr6(n.mem.user.Public(), req.Node),
		NotBefore: now, NotAfter: now.Add(n.mem.store.CertLifetime()),
	}
	member.SignCert(n.mem.user, c)
	// The use is on disk before the certificate exists anywhere.
	undo, err := n.useInviteLocked(inv, req.Node, c.Marshal(), now)
	if err != nil {
		return nil, err
	}
	if _, err := n.mem.store.AddCert(c, now); err != nil {
		undo()
		return nil, err
	}
	n.mem.dirty = true
	n.certsChangedLocked()
	n.logf("glow: admitted %s (%v, %v)", n.fqdnLocked(c), c.IPv4, c.IPv6)
	n.addPeerLocked(c, now)
	n.refreshPolicyLocked()
	n.floodLocked(nil, []recordMsg{{member.KindCert, c.Marshal()}}) // tell the neighbours about the new member
	return c, nil
}

// Invite issues a join code valid for ttl and uses admissions.
func (n *Node) Invite(ttl time.Duration, uses int) (string, error) {
	if ttl <= 0 {
		ttl = time.Hour
	}
	if uses <= 0 {
		uses = 1
	}
	if uses > member.MaxInviteUses {
		return "", api.Errorf(api.CodeInvalidArgument, "a code admits at most %d nodes (--uses %d)", member.MaxInviteUses, uses)
	}
	return n.issueInvite(ttl, uses, false, func(p *member.PendingInvite, now time.Time) string {
		eps := n.inviteEndpointsLocked(now)
		inv := &member.Invite{
			UserHash: member.UserHash(n.mem.cert.User[:]), Inviter: n.ctlPub, Secret: p.Secret,
			Expires: p.Expires, Endpoints: eps, Streams: n.inviteStreams(eps),
		}
		return inv.Code()
	})
}

// maxJoinAnswers bounds joinAnswers: every source address that sends a
// request gets an answer, so the table is forgotten when it is full.
const maxJoinAnswers = 256

// noteJoinAnswerLocked counts an answer to from and reports whether to log
// it (the first three per address).
func (n *Node) noteJoinAnswerLocked(from netip.AddrPort) bool {
	if len(n.adm.joinAnswers) >= maxJoinAnswers && n.adm.joinAnswers[from] == 0 {
		clear(n.adm.joinAnswers)
	}
	n.adm.joinAnswers[from]++
	return n.adm.joinAnswers[from] <= 3
}
