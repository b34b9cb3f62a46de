package overlay

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"glow/internal/wire"
	"glow/overlay/api"
	"glow/overlay/member"
)

// Friends. A friend is another user whose public key this user accepted.
// `glow friend invite` (on alice's admin node) prints a code like a join
// code; `glow friend add CODE` (on bob's admin node) sends a request sealed
// to the inviting node, proving the code's secret by HMAC, with bob's user
// key and the certificate of bob's node; the inviter answers with its own.
// Each side then signs a new friend list (a KindFriends UserDoc) that its
// own nodes learn by gossip, and from then on trusts certificates signed by
// the friend's key.
//
// What a friend learns is limited (visibleLocked): the node it talked to,
// the nodes the policy shares with it, and the user's revocation list,
// which friends honour for this user's nodes only (Store.addFriendDoc). Traffic from a friend's nodes is
// filtered by the policy; relays forward between a friend's node and ours,
// never between two of a friend's nodes.

type friendReq struct {
	CodeID   [16]byte
	Nonce    [16]byte
	Proof    [32]byte
	UserKey  [32]byte
	UserName string
	Cert     []byte
}

type friendResp struct {
	OK       bool
	Err      string
	UserKey  [32]byte
	UserName string
	Cert     []byte
}

const (
	msgFriendReq  msgType = 8
	msgFriendResp msgType = 9
)

func (m friendReq) marshal() []byte {
	w := wire.Writer{B: []byte{byte(msgFriendReq)}}
	w.Raw(m.CodeID[:])
	w.Raw(m.Nonce[:])
	w.Raw(m.Proof[:])
	w.Raw(m.UserKey[:])
	w.Str(m.UserName)
	w.Bytes16(m.Cert)
	return w.B
}

func (m friendResp) marshal() []byte {
	w := wire.Writer{B: []byte{byte(msgFriendResp)}}
	if m.OK {
		w.U8(1)
	} else {
		w.U8(0)
	}
	w.Str(m.Err)
	w.Raw(m.UserKey[:])
	w.Str(m.UserName)
	w.Bytes16(m.Cert)
	return w.B
}

func parseFriendMsg(t msgType, r *wire.Reader) (any, bool) {
	switch t {
	case msgFriendReq:
		var m friendReq
		r.Fixed(m.CodeID[:])
		r.Fixed(m.Nonce[:])
		r.Fixed(m.Proof[:])
		r.Fixed(m.UserKey[:])
		m.UserName = r.Str(63)
		m.Cert = r.Bytes16(1024)
		return m, true
	case msgFriendResp:
		var m friendResp
		m.OK = r.U8() == 1
		m.Err = r.Str(255)
		r.Fixed(m.UserKey[:])
		m.UserName = r.Str(63)
		m.Cert = r.Bytes16(1024)
		return m, true
	}
	return nil, false
}

func friendProof(secret [16]byte, inviter, requester wire.Key, user [32]byte, cert []byte, nonce [16]byte) [32]byte {
	m := hmac.New(sha256.New, secret[:])
	m.Write([]byte("glow friend v1\x00"))
	m.Write(inviter[:])
	m.Write(requester[:])
	m.Write(user[:])
	m.Write(cert)
	m.Write(nonce[:])
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

// FriendInvite issues a friend code valid for ttl (admin nodes only).
func (n *Node) FriendInvite(ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	return n.issueInvite(ttl, 1, true, func(p *member.PendingInvite, now time.Time) string {
		inv := &member.Invite{Friend: true, UserHash: member.UserHash(n.mem.cert.User[:]), Inviter: n.ctlPub, Secret: p.Secret,
			Expires: p.Expires, Endpoints: n.localEndpointsLocked(now)}
		return inv.Code()
	})
}

// friendsLocked returns the friend list in force.
func (n *Node) friendsLocked() []member.Friend {
	d := n.mem.store.Doc(member.KindFriends)
	if d == nil {
		return nil
	}
	fs, _ := member.ParseFriends(d.Body)
	return fs
}

// addFriendLocked puts (name, key) in the friend list (signing a new one).
func (n *Node) addFriendLocked(name string, key [32]byte, now time.Time) error {
	body, err := n.friendAddedLocked(name, key)
	if err != nil || body == nil {
		return err
	}
	_, err = n.signDocLocked(member.KindFriends, body, now)
	return err
}

// friendAddedLocked returns the friend list with (name, key) in it, or nil
// if it is there already.
func (n *Node) friendAddedLocked(name string, key [32]byte) ([]byte, error) {
	if !member.ValidName(name) || name == n.mem.cert.UserName {
		return nil, fmt.Errorf("cannot take a friend named %q", name)
	}
	fs := n.friendsLocked()
	for _, f := range fs {
		switch {
		case f.Key == key && f.Name == name:
			return nil, nil
		case f.Key == key:
			return nil, fmt.Errorf("this user is already a friend, named %s", f.Name)
		case f.Name == name:
			return nil, fmt.Errorf("another friend is already named %s; remove it first", name)
		}
	}
	return member.FormatFriends(append(fs, member.Friend{Name: name, Key: key})), nil
}

// acceptFriendLocked is the inviter's side of `glow friend add`.
func (n *Node) acceptFriendLocked(req friendReq, sender wire.Key, from netip.AddrPort, now time.Time) (*member.Cert, error) {
	inv := n.adm.invites.ByID[req.CodeID]
	if inv == nil || !inv.Friend {
		return nil, errInviteUnknown
	}
	want := friendProof(inv.Secret, n.ctlPub, sender, req.UserKey, req.Cert, req.Nonce)
	if !hmac.Equal(want[:], req.Proof[:]) {
		return nil, errInviteProof
	}
	c, err := member.ParseCert(req.Cert)
	if err != nil || c.User != req.UserKey || c.Ctl != sender {
		return nil, errors.New("the request's certificate does not match its sender")
	}
	if n.mem.store.Own(c.User) {
		return nil, errors.New("that node belongs to this same user")
	}
	already := slices.ContainsFunc(inv.UsedBy, func(id [32]byte) bool { return id == [32]byte(c.Node) })
	if !already {
		if now.After(inv.Expires) {
			return nil, errInviteExpired
		}
		if inv.Uses <= 0 {
			return nil, errInviteUsed
		}
	}
	// As for a join (admitLocked), the use is on disk before it takes
	// effect: a friend code whose use cannot be recorded makes no friend.
	undo := func() {}
	if !already {
		var err error
		if undo, err = n.useInviteLocked(inv, c.Node, req.Cert, now); err != nil {
			return nil, err
		}
	}
	if err := n.addFriendLocked(req.UserName, req.UserKey, now); err != nil {
		undo()
		return nil, err
	}
	if _, err := n.mem.store.AddCert(c, now); err != nil {
		return nil, err
	}
	if p := n.addPeerLocked(c, now); p != nil {
		n.addCandidatesLocked(p, []netip.AddrPort{from}, now)
	}
	n.certsChangedLocked()
	n.logf("glow: %s is now a friend (their node %s)", req.UserName, n.fqdnLocked(c))
	return n.mem.cert, nil
}

// FriendAdd accepts a friend code: both users learn each other's key.
func (n *Node) FriendAdd(ctx context.Context, code string) (string, error) {
	inv, err := member.ParseInvite(code)
	if err != nil {
		return "", err
	}
	if !inv.Friend {
		return "", api.Errorf(api.CodeInvalidArgument, "this is a join code: use it with 'glow up --join CODE' on a new device")
	}
	n.mu.Lock()
	if n.mem.user == nil {
		n.mu.Unlock()
		return "", errNotAdmin
	}
	if inv.UserHash == member.UserHash(n.mem.cert.User[:]) {
		n.mu.Unlock()
		return "", api.Errorf(api.CodeInvalidArgument, "this friend code is from your own user")
	}
	req := friendReq{UserKey: n.mem.cert.User, UserName: n.mem.cert.UserName, Cert: n.mem.cert.Marshal(), CodeID: inv.ID()}
	rand.Read(req.Nonce[:])
	req.Proof = friendProof(inv.Secret, inv.Inviter, n.ctlPub, req.UserKey, req.Cert, req.Nonce)
	shared := sharedKey(n.keys.Ctl, inv.Inviter)
	ch := make(chan friendAnswer, 1)
	n.adm.pendingFriend[inv.Inviter] = ch
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.adm.pendingFriend, inv.Inviter)
		n.mu.Unlock()
	}()

	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		pkt := sealCtl(nil, n.ctlPub, shared, req.marshal()) // fresh each time: the inviter takes a packet once
		for _, ep := range inv.Endpoints {
			n.bind.SendTo(pkt, ep)
		}
		select {
		case <-ctx.Done():
			return "", api.Errorf(api.CodeUnavailable, "no answer from the friend's node at %v; is it up and reachable?", inv.Endpoints)
		case <-t.C:
			continue
		case a := <-ch:
			if !a.resp.OK {
				return "", api.Errorf(api.CodeInvalidArgument, "the friend's node refused: %s", a.resp.Err)
			}
			if member.UserHash(a.resp.UserKey[:]) != inv.UserHash {
				return "", errors.New("the friend's node answered for another user than the code's")
			}
			c, err := member.ParseCert(a.resp.Cert)
			if err != nil || c.User != a.resp.UserKey || c.Ctl != inv.Inviter {
				return "", errors.New("the friend's node sent a certificate that does not match the code")
			}
			n.saveMu.Lock()
			defer n.saveMu.Unlock()
			if _, _, err := n.changeDoc(member.KindFriends, func() ([]byte, error) {
				return n.friendAddedLocked(a.resp.UserName, a.resp.UserKey)
			}, nil); err != nil {
				return "", err
			}
			n.mu.Lock()
			defer n.mu.Unlock()
			now := time.Now()
			if _, err := n.mem.store.AddCert(c, now); err != nil {
				return "", err
			}
			if p := n.addPeerLocked(c, now); p != nil {
				n.addCandidatesLocked(p, append(slices.Clone(inv.Endpoints), a.from), now)
			}
			n.certsChangedLocked()
			n.logf("glow: %s is now a friend (their node %s)", a.resp.UserName, n.fqdnLocked(c))
			return a.resp.UserName, nil
		}
	}
}

type friendAnswer struct {
	resp friendResp
	from netip.AddrPort
}

// Friends lists the friends and what each may reach.
func (n *Node) Friends() []FriendInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []FriendInfo
	for _, f := range n.friendsLocked() {
		fi := FriendInfo{Name: f.Name, Key: wire.EncodeB32(f.Key[:8]), Nodes: []string{}, Shared: []string{}}
		for _, c := range n.mem.store.Certs() {
			if c.User == f.Key {
				fi.Nodes = append(fi.Nodes, c.Name)
			}
		}
		if n.mem.doc != nil {
			for _, g := range n.mem.doc.Shares() {
				if g.Who == f.Name || g.Who == "*" {
					fi.Shared = append(fi.Shared, g.To.String())
				}
			}
		}
		out = append(out, fi)
	}
	return out
}

// FriendRemove drops a friend: its nodes can no longer reach or be reached.
func (n *Node) FriendRemove(name string) error {
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	_, _, err := n.changeDoc(member.KindFriends, func() ([]byte, error) {
		if n.mem.user == nil {
			return nil, errNotAdmin
		}
		fs := n.friendsLocked()
		i := slices.IndexFunc(fs, func(f member.Friend) bool { return f.Name == name })
		if i < 0 {
			return nil, api.Errorf(api.CodeNotFound, "%s is not a friend (see 'glow friend list')", name)
		}
		return member.FormatFriends(slices.Delete(fs, i, i+1)), nil
	}, nil)
	return err
}
