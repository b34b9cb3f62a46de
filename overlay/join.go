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
	"time"

	"glow/internal/wire"
	"glow/overlay/api"
)

const (
	joinTimeout = 30 * time.Second
	joinResend  = time.Second
)

// join runs the joiner's side of an invite: a sealed request carrying a
// proof of the code's secret, sent from a short-lived socket on the node's
// port to every endpoint in the code until the inviter answers.
func (n *Node) join(code string, port uint16) (*Cert, error) {
	inv, err := ParseInvite(code)
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
	resp, err := joinExchange(uc, inv, n.keys.Ctl, n.ctlPub, req, n.logf)
	if err != nil {
		return nil, err
	}
	if !resp.OK {
		return nil, fmt.Errorf("the inviting node refused to admit this node: %s", resp.Err)
	}
	c, err := ParseCert(resp.Cert)
	if err != nil {
		return nil, fmt.Errorf("the inviting node sent a bad certificate: %w", err)
	}
	if UserHash(c.User[:]) != inv.UserHash || c.Node != n.id || c.WG != req.WG || c.Ctl != n.ctlPub {
		return nil, errors.New("the inviting node sent a certificate that does not match this node or the code")
	}
	n.bootstrap = append(n.bootstrap, inv.Endpoints...)
	n.state.WriteFile("bootstrap", n.bootstrapFile(), 0o644)
	n.logf("glow: joined user %s as %s (%v, %v)", c.UserName, c.Name, c.IPv4, c.IPv6)
	return c, nil
}

// joinExchange sends req, sealed from the control key ctl (public half
// ctlPub) to the inviter, from pc to every endpoint of inv until the
// inviter answers or joinTimeout passes, and returns the answer.
func joinExchange(pc net.PacketConn, inv *Invite, ctl [32]byte, ctlPub wire.Key, req joinReq, logf func(string, ...any)) (joinResp, error) {
	shared := sharedKey(ctl, inv.Inviter)
	deadline := time.Now().Add(joinTimeout)
	buf := make([]byte, 2048)
	for time.Now().Before(deadline) {
		pkt := sealCtl(nil, ctlPub, shared, req.marshal()) // fresh each time: the inviter takes a packet once
		for _, ep := range inv.Endpoints {
			if _, err := pc.WriteTo(pkt, net.UDPAddrFromAddrPort(ep)); err != nil {
				logf("glow: join: sending to %v: %v", ep, err)
			}
		}
		pc.SetReadDeadline(time.Now().Add(joinResend))
		for {
			sz, _, err := pc.ReadFrom(buf)
			if err != nil {
				break // deadline: send again
			}
			sender, err := ctlSender(buf[:sz])
			if err != nil || sender != inv.Inviter {
				logf("glow: join: ignoring a datagram that is not from the inviting node")
				continue
			}
			m, err := openCtl(buf[:sz], shared)
			if err != nil {
				logf("glow: join: ignoring an answer that does not open: %v", err)
				continue
			}
			msg, err := parseCtl(m)
			resp, ok := msg.(joinResp)
			if err != nil || !ok {
				logf("glow: join: ignoring an unexpected answer: %v", err)
				continue
			}
			return resp, nil
		}
	}
	return joinResp{}, fmt.Errorf("no answer from the inviting node at %v within %v; is it up and reachable?", inv.Endpoints, joinTimeout)
}

// bootstrapFile is the bootstrap file's content. n.mu is held once the
// node runs.
func (n *Node) bootstrapFile() []byte {
	var b strings.Builder
	for _, ap := range n.bootstrap {
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
		if !slices.Contains(n.bootstrap, ap) {
			n.bootstrap = append(n.bootstrap, ap)
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
	ch := n.pendingFriend[sender]
	if n.user == nil && ch == nil {
		n.dropCtl["unknown-sender"]++
		return
	}
	// Cheap checks before the X25519: a known peer's key is precomputed;
	// a stranger's request can only succeed while a code is live.
	var shared *[32]byte
	if p := n.byCtl[sender]; p != nil {
		shared = p.shared
	} else if ch == nil && !n.invites.live(now) {
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
	if err := n.handshakes.fresh(msg, pkt, now); err != nil {
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
		resp := friendResp{OK: err == nil, UserKey: n.cert.User, UserName: n.cert.UserName}
		if err != nil {
			n.logf("glow: friend request from %v refused: %v", from, err)
			resp.Err = err.Error()
		} else {
			resp.Cert = c.Marshal()
		}
		n.bind.SendTo(sealCtl(nil, n.ctlPub, shared, resp.marshal()), from)
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
	if err := n.bind.SendTo(sealCtl(nil, n.ctlPub, shared, resp.marshal()), from); err != nil {
		n.logf("glow: answering the join request from %v: %v", from, err)
	} else if n.noteJoinAnswerLocked(from) {
		n.logf("glow: answered the join request from %v", from)
	}
}

func (n *Node) admitLocked(req joinReq, ctl wire.Key, now time.Time) (*Cert, error) {
	inv := n.invites.byID[req.CodeID]
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
			if c, err := ParseCert(inv.Certs[i]); err == nil && c.Ctl == ctl && c.WG == req.WG {
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
	if !ValidName(req.Name) {
		return nil, fmt.Errorf("bad node name %q", req.Name)
	}
	// An id is certified once: never again, and never to other keys.
	if n.store.Revoked(req.Node) {
		return nil, errJoinRevoked
	}
	if n.store.Cert(req.Node) != nil {
		return nil, errJoinMember
	}
	used := map[netip.Addr]bool{}
	names := map[string]bool{}
	for _, c := range n.store.Certs() {
		used[c.IPv4] = true
		names[c.Name] = true
	}
	name := req.Name
	for i := 2; names[name]; i++ {
		suffix := fmt.Sprintf("-%d", i)
		name = strings.TrimRight(req.Name[:min(len(req.Name), 63-len(suffix))], "-") + suffix
	}
	v4, err := AllocIPv4(req.Node, used)
	if err != nil {
		return nil, err
	}
	c := &Cert{
		Node: req.Node, Name: name, WG: req.WG, Ctl: ctl,
		IPv4: v4, IPv6: NodeAddr6(n.user.Public(), req.Node),
		NotBefore: now, NotAfter: now.Add(certLifetime),
	}
	SignCert(n.user, c)
	// The use is on disk before the certificate exists anywhere: a code
	// whose use cannot be recorded admits nothing, so a restart cannot
	// make a used code good again.
	inv.Uses--
	inv.UsedBy = append(inv.UsedBy, req.Node)
	inv.Certs = append(inv.Certs, bytes.Clone(c.Marshal()))
	undo := func() {
		inv.Uses++
		inv.UsedBy = inv.UsedBy[:len(inv.UsedBy)-1]
		inv.Certs = inv.Certs[:len(inv.Certs)-1]
	}
	if err := n.invites.save(now); err != nil {
		undo()
		n.logf("glow: saving invites: %v", err)
		return nil, errInviteSave
	}
	if _, err := n.store.AddCert(c, now); err != nil {
		undo()
		if err := n.invites.save(now); err != nil {
			n.logf("glow: saving invites (the code stays used): %v", err)
		}
		return nil, err
	}
	n.dirty = true
	n.certsChangedLocked()
	n.logf("glow: admitted %s (%v, %v)", c.FQDN(), c.IPv4, c.IPv6)
	n.addPeerLocked(c, now)
	n.refreshPolicyLocked()
	n.floodLocked(nil, []recordMsg{{KindCert, c.Marshal()}}) // tell the neighbours about the new member
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
	if uses > maxInviteUses {
		return "", api.Errorf(api.CodeInvalidArgument, "a code admits at most %d nodes (--uses %d)", maxInviteUses, uses)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.user == nil {
		return "", api.Errorf(api.CodeNotAdmin, "this node is not an admin node (it does not hold the user key); run 'glow invite' on the node where the user was created")
	}
	now := time.Now()
	p, err := n.invites.issue(ttl, uses, false, now)
	if err != nil {
		return "", err
	}
	inv := &Invite{
		UserHash: UserHash(n.cert.User[:]), Inviter: n.ctlPub, Secret: p.Secret,
		Expires: p.Expires, Endpoints: n.localEndpointsLocked(now),
	}
	return inv.Code(), nil
}

// maxJoinAnswers bounds joinAnswers: every source address that sends a
// request gets an answer, so the table is forgotten when it is full.
const maxJoinAnswers = 256

// noteJoinAnswerLocked counts an answer to from and reports whether to log
// it (the first three per address).
func (n *Node) noteJoinAnswerLocked(from netip.AddrPort) bool {
	if len(n.joinAnswers) >= maxJoinAnswers && n.joinAnswers[from] == 0 {
		clear(n.joinAnswers)
	}
	n.joinAnswers[from]++
	return n.joinAnswers[from] <= 3
}
