package overlay

// Certificate renewal and expiry at runtime.
//
// A certificate lasts the user's lifetime (member.KindSettings, default a
// year). At half of it (Cert.RenewAt) its node asks the admins for a new
// one: a renewal request, sealed to each admin's control key as a join
// request is (a handshake, fresh by its time and nonce: replay.go) and
// signed by the node key, names the node and the certificate it holds.
// The node sends it over the admin's current path (direct, stream or
// relayed: Bind.SendToPeer) and, when that cannot work (its own
// certificate expired, so peers refuse its packets, or the admin has no
// path), wrapped for any member (joinrelay.go) straight to the addresses
// where an admin was last seen; every renewRetry until a new certificate
// comes. An admin answers with a certificate for the same id, keys, name
// and addresses and a later expiry, and with its own certificate (the
// asker may hold that one expired), and gossips the new one like any
// record; so does the asker. An admin renews its own certificate itself.
//
// Expiry is enforced by the control loop (tickCertsLocked): a peer whose
// certificate is past NotAfter and the grace for clock skew
// (member.ExpiryGrace: 10 minutes, a tenth of shorter lifetimes) is
// dropped within a tick: its control packets no longer open, its WireGuard
// peer goes (so its session and handshakes with it), its records leave the
// store and so gossip. Our user's expired certificates are kept aside
// (Store.Lapsed) so that an admin can still renew them: an expired node is
// not removed (that is 'glow nodes remove'), and comes back as soon as an
// admin answers it. A node whose own certificate expired keeps running and
// says so (status, log).
//
// Choices: an admin renews a certificate however long ago it expired (the
// node must still hold its keys; only a revocation ends a membership), and
// answers a request for a certificate issued less than a quarter of its
// lifetime ago with the one it holds rather than a new one, so a node that
// asks twice, or two admins at once, cost one signature. Clock skew between
// nodes up to the grace is harmless: renewal starts half a lifetime before
// expiry, and a certificate's start may be up to member.ClockSkew ahead.

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
)

const (
	msgRenewReq  msgType = 22 // node -> admin: renew my certificate
	msgRenewResp msgType = 23 // admin -> node: the new certificate and the admin's own

	renewRetry = 5 * time.Second // asking again while no admin has answered
	// maxRenewCerts bounds the certificates in an answer: the renewed one,
	// the admin's, and its neighbours' (fitting one packet).
	maxRenewCerts = 4
	// maxRenewTargets bounds the addresses a node with no working path
	// sends a request to each renewRetry.
	maxRenewTargets = 16
)

var renewContext = []byte("glow renew v1\x00")

// renewReq asks an admin to renew the sender's certificate.
type renewReq struct {
	Node      wire.NodeID
	NotBefore int64    // of the certificate held, Unix nanoseconds
	Sig       [64]byte // by the node key, over renewSigned
}

// renewResp is an admin's answer: the renewed certificate first, then the
// admin's own, then some of its neighbours'.
type renewResp struct {
	Err   string
	Certs [][]byte
}

// renewSigned is what the node key signs: the request bound to the admin
// it is sealed to and to the sender's control key.
func renewSigned(admin, sender wire.Key, m renewReq) []byte {
	w := wire.Writer{B: append([]byte{}, renewContext...)}
	w.Raw(admin[:])
	w.Raw(sender[:])
	w.Raw(m.Node[:])
	w.I64(m.NotBefore)
	return w.B
}

func (m renewReq) marshal() []byte {
	w := wire.Writer{B: []byte{byte(msgRenewReq)}}
	w.Raw(m.Node[:])
	w.I64(m.NotBefore)
	w.Raw(m.Sig[:])
	return w.B
}

func (m renewResp) marshal() []byte {
	w := wire.Writer{B: []byte{byte(msgRenewResp)}}
	w.Str(m.Err)
	w.U8(uint8(len(m.Certs)))
	for _, c := range m.Certs {
		w.Bytes16(c)
	}
	return w.B
}

// parseRenew reads the body of a msgRenewReq or msgRenewResp; the caller
// checks r.Done.
func parseRenew(t msgType, r *wire.Reader) any {
	if t == msgRenewReq {
		var m renewReq
		r.Fixed(m.Node[:])
		m.NotBefore = r.I64()
		r.Fixed(m.Sig[:])
		return m
	}
	var m renewResp
	m.Err = r.Str(255)
	cnt := int(r.U8())
	if cnt > maxRenewCerts {
		r.Err = fmt.Errorf("renewal answer with %d certificates: %w", cnt, wire.ErrShort)
		return m
	}
	for i := 0; i < cnt && r.Err == nil; i++ {
		m.Certs = append(m.Certs, r.Bytes16(1024))
	}
	return m
}

// renewal is a node's renewal state. Guarded by Node.mu.
type renewal struct {
	nextTry time.Time
	asked   map[wire.Key]*[32]byte // admins asked lately (control key -> box key), for answers from admins that are no peers
	askedAt time.Time
	warning string // what status says about our certificate ("" when fine)
}

// tickCertsLocked is the control loop's certificate work: expire peers,
// renew our certificate when due, and say when it is in danger.
func (n *Node) tickCertsLocked(now time.Time) {
	if gone := n.mem.store.Expire(now, n.id); len(gone) > 0 {
		for _, id := range gone {
			if p := n.paths.peers[id]; p != nil {
				n.logf("glow: certificate of %s expired at %s: refusing it until it is renewed", n.fqdnLocked(p.cert), p.cert.NotAfter.UTC().Format(time.RFC3339))
				n.removePeerLocked(id)
			}
		}
		n.mem.dirty, n.paths.routesDirty = true, true
		n.certsChangedLocked()
	}
	if t := n.mem.store.NextExpiry(n.id); !t.IsZero() {
		n.dueLocked(t.Add(time.Millisecond))
	}
	n.takeOwnCertLocked(now)
	c := n.mem.cert
	if now.Before(c.RenewAt()) {
		n.dueLocked(c.RenewAt())
	} else if now.Before(n.renew.nextTry) {
		n.dueLocked(n.renew.nextTry)
	} else {
		n.renew.nextTry = now.Add(renewRetry)
		n.dueLocked(n.renew.nextTry)
		if n.mem.user != nil {
			n.renewSelfLocked(now)
		} else {
			n.askRenewalLocked(now)
		}
	}
	n.warnCertLocked(now)
}

// takeOwnCertLocked takes a newer certificate of ours from the store (a
// renewal that came by gossip or as an answer): ownCertLocked (admins.go)
// makes it ours and rewrites the state directory's copy.
func (n *Node) takeOwnCertLocked(now time.Time) {
	c := n.mem.store.Cert(n.id)
	if c == nil || c == n.mem.cert || !c.NotBefore.After(n.mem.cert.NotBefore) {
		return
	}
	was := n.mem.cert
	n.ownCertLocked(c)
	n.mem.dirty = true
	n.renew.nextTry = time.Time{}
	if now.After(was.NotAfter) {
		n.logf("glow: certificate renewed after it expired; valid until %s", c.NotAfter.UTC().Format(time.RFC3339))
	} else {
		n.logf("glow: certificate renewed; valid until %s", c.NotAfter.UTC().Format(time.RFC3339))
	}
	n.warnCertLocked(now)
}

// issueRenewalLocked signs a new certificate for held's node: the same id,
// keys, name and addresses, valid from now for the user's lifetime (later
// than held's start, so it replaces it everywhere).
func (n *Node) issueRenewalLocked(held *member.Cert, now time.Time) (*member.Cert, error) {
	start := now
	if !start.After(held.NotBefore) {
		start = held.NotBefore.Add(time.Nanosecond)
	}
	c := &member.Cert{
		Node: held.Node, Name: held.Name, WG: held.WG, Ctl: held.Ctl,
		IPv4: held.IPv4, IPv6: held.IPv6, Admin: held.Admin,
		NotBefore: start, NotAfter: start.Add(n.mem.store.CertLifetime()),
	}
	member.SignCert(n.mem.user, c)
	if _, err := n.mem.store.AddCert(c, now); err != nil {
		return nil, err
	}
	n.mem.dirty = true
	raw := c.Marshal()
	n.recordChangedLocked(member.KindCert, raw, now)
	n.floodLocked(nil, []recordMsg{{member.KindCert, raw}})
	return c, nil
}

// renewSelfLocked renews an admin's own certificate.
func (n *Node) renewSelfLocked(now time.Time) {
	if _, err := n.issueRenewalLocked(n.mem.cert, now); err != nil {
		n.logf("glow: renewing this node's certificate: %v", err)
		return
	}
	n.takeOwnCertLocked(now)
}

// askRenewalLocked sends a renewal request to every admin of the user we
// know: over its path if it has one and we are not expired, else straight
// to where it was last seen and to our neighbours, wrapped for any member
// to pass on.
func (n *Node) askRenewalLocked(now time.Time) {
	expired := now.After(n.mem.cert.NotAfter)
	if now.Sub(n.renew.askedAt) > time.Minute {
		n.renew.asked = map[wire.Key]*[32]byte{}
	}
	n.renew.askedAt = now
	req := renewReq{Node: n.id, NotBefore: n.mem.cert.NotBefore.UnixNano()}
	targets := 0
	for _, a := range n.renewAdminsLocked() {
		shared := n.renew.asked[a.Ctl]
		if shared == nil {
			if p := n.paths.peers[a.Node]; p != nil {
				shared = p.shared
			} else {
				shared = sharedKey(n.keys.Ctl, a.Ctl)
			}
			n.renew.asked[a.Ctl] = shared
		}
		copy(req.Sig[:], ed25519.Sign(n.keys.Sign, renewSigned(a.Ctl, n.ctlPub, req)))
		pkt := sealHandshake(n.ctlPub, shared, req.marshal(), now)
		p := n.paths.peers[a.Node]
		if p != nil && !expired && p.path().kind != pathNone {
			if err := n.bind.SendToPeer(pkt, a.Node); err == nil {
				continue
			}
		}
		addrs := n.renewAddrsLocked(a)
		// Any member passes it on (joinrelay.go), relayed if need be: our
		// neighbours, and where members we refuse (expired here) were.
		for _, p := range n.paths.peers {
			if p.active.IsValid() && n.mem.store.Own(p.cert.User) && !slices.Contains(addrs, p.active) {
				addrs = append(addrs, p.active)
			}
		}
		for _, c := range n.mem.store.LapsedCerts() {
			if _, info := n.mem.store.Lapsed(c.Node); info != nil && c.Node != a.Node {
				for _, ap := range info.Endpoints {
					if !slices.Contains(addrs, ap) {
						addrs = append(addrs, ap)
					}
				}
			}
		}
		for _, ap := range addrs {
			if targets >= maxRenewTargets {
				break
			}
			targets++
			if err := n.bind.SendTo(joinVia(a.Ctl, pkt), ap); err != nil {
				n.dropCtl["send-error"]++
			}
		}
	}
}

// renewAdminsLocked lists the admins of our user but us: valid or expired (an
// admin that was away may be back), newest first.
func (n *Node) renewAdminsLocked() []*member.Cert {
	var out []*member.Cert
	for _, c := range append(n.mem.store.Certs(), n.mem.store.LapsedCerts()...) {
		if c.Admin && c.Node != n.id && n.mem.store.Own(c.User) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *member.Cert) int { return b.NotBefore.Compare(a.NotBefore) })
	return out
}

// renewAddrsLocked lists where admin a may be: its path, its candidates,
// its last published endpoints, and the bootstrap addresses (an invite
// code's, usually the first admin's).
func (n *Node) renewAddrsLocked(a *member.Cert) []netip.AddrPort {
	var out []netip.AddrPort
	add := func(ap netip.AddrPort) {
		if ap.IsValid() && !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	if p := n.paths.peers[a.Node]; p != nil {
		add(p.active)
		for ap := range p.cands {
			add(ap)
		}
	}
	info := n.mem.store.Info(a.Node)
	if info == nil {
		_, info = n.mem.store.Lapsed(a.Node)
	}
	if info != nil {
		for _, ap := range info.Endpoints {
			add(ap)
		}
	}
	for _, ap := range n.lnk.bootstrap {
		add(ap)
	}
	return out
}

// answerRenewalLocked is an admin's side of a renewal request from the
// node with control key sender: reply sends the sealed answer back the way
// the request came.
func (n *Node) answerRenewalLocked(req renewReq, sender wire.Key, shared *[32]byte, now time.Time, reply func([]byte) error) {
	c, err := n.renewLocked(req, sender, now)
	resp := renewResp{}
	if err != nil {
		n.dropCtl["renew-refused"]++
		resp.Err = err.Error()
		n.logf("glow: renewal request for %v refused: %v", req.Node, err)
	} else {
		resp.Certs = [][]byte{c.Marshal(), n.mem.cert.Marshal()}
		// Our neighbours' certificates too: the asker may hold them expired
		// (the member that passed its request on, among them), and refuse
		// the very node it would reach us through.
		size := len(c.Marshal()) + len(n.mem.cert.Marshal())
		for _, p := range n.paths.peers {
			raw := p.cert.Marshal()
			if len(resp.Certs) == maxRenewCerts || size+len(raw)+3 > maxCtlBody-300 {
				break
			}
			if p.cert.Node != req.Node && n.mem.store.Own(p.cert.User) && p.path().neighbour() {
				resp.Certs = append(resp.Certs, raw)
				size += len(raw) + 3
			}
		}
	}
	if err := reply(sealHandshake(n.ctlPub, shared, resp.marshal(), now)); err != nil {
		n.dropCtl["send-error"]++
	}
}

// sealHandshake seals a renewal message as a handshake packet: its epoch
// is the time it is sealed, by the clock the control loop reads (the
// receiver takes a request only within ClockSkew of its own), sequence 0;
// the nonce's random half keeps two sealed in the same nanosecond apart.
func sealHandshake(pub wire.Key, shared *[32]byte, m []byte, now time.Time) []byte {
	return sealCtlSeq(nil, pub, shared, m, uint64(now.UnixNano()), 0)
}

var (
	errRenewNotAdmin = errors.New("this node is not an admin")
	errRenewUnknown  = errors.New("no certificate of this node is held (removed, or never a member)")
	errRenewProof    = errors.New("the request is not signed by the node key")
)

// renewLocked checks a renewal request and returns the node's new
// certificate (or the one held, if it is recent).
func (n *Node) renewLocked(req renewReq, sender wire.Key, now time.Time) (*member.Cert, error) {
	if n.mem.user == nil {
		return nil, errRenewNotAdmin
	}
	held := n.mem.store.Cert(req.Node)
	if held == nil {
		held, _ = n.mem.store.Lapsed(req.Node)
	}
	if held == nil || held.Ctl != sender || !n.mem.store.Own(held.User) || n.mem.store.Revoked(req.Node) {
		return nil, errRenewUnknown
	}
	if !ed25519.Verify(req.Node.PublicKey(), renewSigned(n.ctlPub, sender, req), req.Sig[:]) {
		return nil, errRenewProof
	}
	if n.mem.store.Cert(req.Node) == held && now.Before(held.NotBefore.Add(held.Lifetime()/4)) {
		return held, nil // renewed lately (by us or another admin)
	}
	c, err := n.issueRenewalLocked(held, now)
	if err != nil {
		return nil, err
	}
	n.logf("glow: renewed the certificate of %s until %s", n.fqdnLocked(c), c.NotAfter.UTC().Format(time.RFC3339))
	return c, nil
}

// takeRenewalLocked applies an admin's answer: the certificates in it are
// records like any other (the store checks them), ours and the admin's.
func (n *Node) takeRenewalLocked(from string, m renewResp, now time.Time) {
	if m.Err != "" {
		n.logf("glow: %s refused to renew this node's certificate: %s", from, m.Err)
		return
	}
	var fresh []recordMsg
	for _, raw := range m.Certs {
		isNew, err := n.mem.store.Apply(member.KindCert, raw, now)
		if err != nil {
			n.logf("glow: renewal answer from %s: %v", from, err)
			continue
		}
		if isNew {
			fresh = append(fresh, recordMsg{member.KindCert, raw})
			n.recordChangedLocked(member.KindCert, raw, now)
		}
	}
	if len(fresh) > 0 {
		n.mem.dirty = true
		n.floodLocked(nil, fresh)
	}
	n.takeOwnCertLocked(now)
}

// renewAnswerLocked takes a renewal answer from an admin that is no peer
// of ours (its certificate expired here): only from an admin asked lately.
// It reports whether pkt was one.
func (n *Node) renewAnswerLocked(pkt []byte, sender wire.Key, now time.Time) bool {
	shared := n.renew.asked[sender]
	if shared == nil || now.Sub(n.renew.askedAt) > time.Minute {
		return false
	}
	m, err := openCtl(pkt, shared)
	if err != nil {
		return false
	}
	msg, err := parseCtl(m)
	resp, ok := msg.(renewResp)
	if err != nil || !ok {
		return false
	}
	n.takeRenewalLocked(sender.String(), resp, now)
	return true
}

// warnCertLocked says, in status and once in the log, when our certificate
// expired or is within a tenth of its lifetime of expiry with no admin
// reachable.
func (n *Node) warnCertLocked(now time.Time) {
	c := n.mem.cert
	var w string
	switch {
	case now.After(c.NotAfter):
		w = fmt.Sprintf("certificate expired at %s: peers refuse this node until an admin renews it (asking every %v)", c.NotAfter.UTC().Format(time.RFC3339), renewRetry)
	case n.mem.user == nil && now.After(c.NotAfter.Add(-c.Lifetime()/10)) && !n.adminReachableLocked():
		w = fmt.Sprintf("certificate expires at %s and no admin is reachable to renew it", c.NotAfter.UTC().Format(time.RFC3339))
	}
	if w != n.renew.warning {
		if w != "" {
			n.logf("glow: WARNING: %s", w)
		} else if n.renew.warning != "" {
			n.logf("glow: certificate valid until %s", c.NotAfter.UTC().Format(time.RFC3339))
		}
		n.renew.warning = w
	}
	if n.mem.user == nil && w == "" && now.Before(c.NotAfter) {
		n.dueLocked(later(now, c.NotAfter.Add(-c.Lifetime()/10)))
	}
}

// adminReachableLocked says whether an admin of our user has a path.
func (n *Node) adminReachableLocked() bool {
	for _, p := range n.paths.peers {
		if p.cert.Admin && n.mem.store.Own(p.cert.User) && p.path().kind != pathNone {
			return true
		}
	}
	return false
}

// setCertLifetime makes d (if not 0) the user's certificate lifetime at
// start: only an admin states it, in a new version of the settings
// document, stored in the records cache (written without n.mu) before it
// takes effect.
func (n *Node) setCertLifetime(d time.Duration) error {
	if d == 0 {
		return nil
	}
	if err := member.CheckCertLifetime(d); err != nil {
		return fmt.Errorf("--cert-lifetime: %w", err)
	}
	n.mu.Lock()
	if n.mem.user == nil {
		n.mu.Unlock()
		return errors.New("--cert-lifetime: only an admin node sets the user's certificate lifetime")
	}
	old := n.mem.store.Doc(member.KindSettings)
	set := member.Settings{}
	if old != nil {
		set, _ = member.ParseSettings(old.Body) // the store took it: it parses
	}
	if set.CertLifetime == d {
		n.mu.Unlock()
		return nil
	}
	set.CertLifetime = d
	c, err := n.prepareDocLocked(member.KindSettings, member.FormatSettings(set))
	n.mu.Unlock()
	if err != nil {
		return err
	}
	if err := n.writeDoc(c); err != nil {
		return fmt.Errorf("storing the certificate lifetime: %w", err)
	}
	n.mu.Lock()
	_, err = n.mem.store.AddDoc(c.doc)
	n.mu.Unlock()
	if err != nil {
		return err
	}
	n.logf("glow: certificates of user %s now last %v (renewed at half of it)", n.mem.cert.UserName, d)
	return nil
}
