package overlay

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"net/netip"
	"slices"
	"time"

	"glow/internal/wire"
	"glow/overlay/api"
	"glow/overlay/member"
)

// joinProof is the HMAC a joiner sends instead of the secret.
func joinProof(secret [16]byte, inviter, joinerCtl wire.Key, node wire.NodeID, wg wire.Key, name string, nonce [16]byte) [32]byte {
	m := hmac.New(sha256.New, secret[:])
	m.Write([]byte("glow join v1\x00"))
	m.Write(inviter[:])
	m.Write(joinerCtl[:])
	m.Write(node[:])
	m.Write(wg[:])
	m.Write([]byte(name))
	m.Write(nonce[:])
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

// joinSigContext starts what a joiner signs with its node key.
var joinSigContext = []byte("glow join sig v1\x00")

// joinSigned is what a joiner signs with the node key its request names:
// both control keys and the whole request but its signature. The inviter
// checks it against the node id (the public half of that key), so a code
// admits only the holder of the key it names, never someone naming another
// node's id.
func joinSigned(inviter, joinerCtl wire.Key, req joinReq) []byte {
	w := wire.Writer{B: append([]byte{}, joinSigContext...)}
	w.Raw(inviter[:])
	w.Raw(joinerCtl[:])
	w.Raw(req.CodeID[:])
	w.Raw(req.Nonce[:])
	w.Raw(req.Proof[:])
	w.Raw(req.Node[:])
	w.Raw(req.WG[:])
	w.Str(req.Name)
	return w.B
}

// issueInvite issues a code with n.mu held and saves the table without it;
// a code that cannot be saved is withdrawn. code makes the code's text
// (under n.mu).
func (n *Node) issueInvite(ttl time.Duration, uses int, friend bool, code func(p *member.PendingInvite, now time.Time) string) (string, error) {
	now := time.Now()
	n.mu.Lock()
	if n.mem.user == nil {
		n.mu.Unlock()
		if friend {
			return "", errNotAdmin
		}
		return "", api.Errorf(api.CodeNotAdmin, "this node is not an admin node (it does not hold the user key); run 'glow invite' on an admin node ('glow nodes list' shows them)")
	}
	p, err := n.adm.invites.Issue(ttl, uses, friend, now)
	var seq uint64
	var data []byte
	if err == nil {
		seq, data, err = n.adm.invites.Snapshot(now)
	}
	var text string
	if err == nil {
		text = code(p, now)
	}
	n.mu.Unlock()
	if err == nil {
		err = n.adm.invites.Writer.Write(n.state, "invites", seq, data)
	}
	if err != nil {
		if p != nil {
			n.mu.Lock()
			delete(n.adm.invites.ByID, (&member.Invite{Secret: p.Secret}).ID())
			n.mu.Unlock()
		}
		return "", err
	}
	return text, nil
}

// inviteStreams is where a joiner finds this node's link port when not at
// the address of one of eps (the code's endpoints, this node's first): the
// listener's own address if it is bound to one (a loopback one only in a
// lab), else the hosts of this node's endpoints with the link port, if that
// is not the UDP port.
func (n *Node) inviteStreams(eps []netip.AddrPort) []netip.AddrPort {
	ap, err := netip.ParseAddrPort(n.linkAddr)
	if err != nil {
		return nil
	}
	a := ap.Addr().Unmap()
	if !a.IsUnspecified() {
		if a.IsLoopback() && !n.loopbackLab && n.cfg.ListenPacket == nil {
			return nil
		}
		return []netip.AddrPort{netip.AddrPortFrom(a, ap.Port())}
	}
	var out []netip.AddrPort
	for _, ep := range eps {
		if ap.Port() == n.Port() || len(out) == member.MaxInviteStreams {
			break
		}
		out = append(out, netip.AddrPortFrom(ep.Addr(), ap.Port()))
	}
	return out
}

// inviteEndpointsLocked lists where a joiner may find the user: this node's
// endpoints, then the public addresses of nodes it reaches directly.
func (n *Node) inviteEndpointsLocked(now time.Time) []netip.AddrPort {
	var pub []netip.AddrPort
	for _, p := range n.paths.peers {
		a := p.active.Addr().Unmap()
		if p.cert.User != n.mem.cert.User || !endpointOK(p.active, n.loopbackLab) {
			continue
		}
		if !n.loopbackLab && (a.IsPrivate() || a.IsLoopback() || cgnat.Contains(a)) {
			continue
		}
		pub = append(pub, netip.AddrPortFrom(a, p.active.Port()))
	}
	slices.SortFunc(pub, func(a, b netip.AddrPort) int { return a.Compare(b) })
	pub = pub[:min(len(pub), member.MaxInvitePublic)]
	own := n.localEndpointsLocked(now)
	own = own[:min(len(own), member.MaxInviteEndpoints-len(pub))]
	for _, ap := range pub {
		if !slices.Contains(own, ap) {
			own = append(own, ap)
		}
	}
	return own
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Errors a join attempt gets back.
var (
	errInviteUnknown = errors.New("invite code unknown to the inviting node")
	errInviteUsed    = errors.New("invite code already used")
	errInviteExpired = errors.New("invite code expired")
	errInviteProof   = errors.New("invite code proof does not match")
	errJoinNodeProof = errors.New("the request is not signed by the node key it names (a glow older than this inviter signs none: upgrade it)")
	errJoinMember    = errors.New("a node with this id is a member already; it needs no invite")
	errJoinRevoked   = errors.New("this node was removed from the user ('glow nodes remove'); start it with a fresh --state to join again")
	errInviteSave    = errors.New("the inviting node could not record the invite code's use in its state directory, so it admitted nothing; try again")
)

// useInviteLocked records one use of inv by node (with the certificate it
// is given, to answer the node's retries) and saves the book before the
// use takes effect: a code whose use cannot be recorded admits nothing, so
// a restart cannot make a used code good again (join and friend codes
// alike). undo gives the use back, for a step after it that fails.
func (n *Node) useInviteLocked(inv *member.PendingInvite, node wire.NodeID, cert []byte, now time.Time) (undo func(), err error) {
	inv.Uses--
	inv.UsedBy = append(inv.UsedBy, node)
	inv.Certs = append(inv.Certs, bytes.Clone(cert))
	giveBack := func() {
		inv.Uses++
		inv.UsedBy = inv.UsedBy[:len(inv.UsedBy)-1]
		inv.Certs = inv.Certs[:len(inv.Certs)-1]
	}
	if err := n.adm.invites.Save(now); err != nil {
		giveBack()
		n.logf("glow: saving invites: %v", err)
		return nil, errInviteSave
	}
	return func() {
		giveBack()
		if err := n.adm.invites.Save(now); err != nil {
			n.logf("glow: saving invites (the code stays used): %v", err)
		}
	}, nil
}
