package overlay

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"glow/internal/wire"
	"glow/overlay/api"
)

// An Invite is what a join code carries: enough to find the inviting node,
// seal a request to it, and prove knowledge of the secret without sending it.
//
// Code form: "glow-" + lower-case base32 of
//
//	version(1) | user key hash(16) | inviter control key(32) | secret(16) |
//	expiry unix seconds(8) | endpoint count(1) | endpoints |
//	[stream count(1) | stream addresses] | checksum(4)
//
// The stream addresses, present only when there are some, are TCP link
// ports a joiner whose UDP is blocked dials (joinstream.go) besides the link
// port of each endpoint, which is by default the endpoint's address itself.
//
// The endpoints are the inviter's and those of the user's nodes the inviter
// reaches directly at a public address (a VPS): a joiner that cannot reach
// the inviter asks one of them to pass its request on (joinrelay.go).
//
// The checksum (SHA-256 prefix) catches typing and copying mistakes.
//
// The joiner proves the secret with HMAC-SHA256(secret, transcript) where
// the transcript binds both control keys, the joiner's node keys and a
// nonce; the request travels sealed to the inviter's control key. An
// eavesdropper sees neither the secret nor anything it can replay: the code
// is single use (or N-use), and a replayed request only re-obtains the
// certificate of keys the eavesdropper does not have.
type Invite struct {
	Friend    bool // a friend code (glow friend invite), not a join code
	UserHash  [16]byte
	Inviter   wire.Key // inviter's control key
	Secret    [16]byte
	Expires   time.Time
	Endpoints []netip.AddrPort
	Streams   []netip.AddrPort // TCP link addresses other than the endpoints' (joinstream.go)
}

const (
	invitePrefix  = "glow-"
	friendPrefix  = "glowf-"
	inviteVersion = 1
)

// ErrBadCode is the error for any code that cannot be read.
var ErrBadCode = api.Errorf(api.CodeInvalidArgument, "this is not a valid glow invite code (check that it was copied whole)")

// UserHash is the short form of a user key carried in codes.
func UserHash(user []byte) [16]byte {
	h := sha256.Sum256(append([]byte("glow user hash v1\x00"), user...))
	var out [16]byte
	copy(out[:], h[:])
	return out
}

// ID names the invite without revealing its secret.
func (inv *Invite) ID() [16]byte {
	h := sha256.Sum256(append([]byte("glow invite id v1\x00"), inv.Secret[:]...))
	var id [16]byte
	copy(id[:], h[:])
	return id
}

// Code encodes the invite.
func (inv *Invite) Code() string {
	var w wire.Writer
	w.U8(inviteVersion)
	w.Raw(inv.UserHash[:])
	w.Raw(inv.Inviter[:])
	w.Raw(inv.Secret[:])
	w.I64(inv.Expires.Unix())
	eps := inv.Endpoints
	if len(eps) > maxInviteEndpoints {
		eps = eps[:maxInviteEndpoints]
	}
	w.U8(uint8(len(eps)))
	for _, ep := range eps {
		w.AddrPort(ep)
	}
	if ss := inv.Streams[:min(len(inv.Streams), maxInviteStreams)]; len(ss) > 0 {
		w.U8(uint8(len(ss)))
		for _, ap := range ss {
			w.AddrPort(ap)
		}
	}
	sum := sha256.Sum256(w.B)
	w.Raw(sum[:4])
	if inv.Friend {
		return friendPrefix + wire.EncodeB32(w.B)
	}
	return invitePrefix + wire.EncodeB32(w.B)
}

// ParseInvite decodes a code. It does not check expiry (the inviter does).
func ParseInvite(code string) (*Invite, error) {
	code = strings.TrimSpace(code)
	friend := strings.HasPrefix(code, friendPrefix)
	prefix := invitePrefix
	if friend {
		prefix = friendPrefix
	}
	if !strings.HasPrefix(code, prefix) || len(code) > 512 {
		return nil, ErrBadCode
	}
	b, err := wire.DecodeB32(code[len(prefix):])
	if err != nil || len(b) < 5 {
		return nil, ErrBadCode
	}
	body, sum := b[:len(b)-4], b[len(b)-4:]
	want := sha256.Sum256(body)
	if !hmac.Equal(sum, want[:4]) {
		return nil, ErrBadCode
	}
	r := wire.Reader{B: body}
	if r.U8() != inviteVersion {
		return nil, fmt.Errorf("%w: unknown version", ErrBadCode)
	}
	inv := &Invite{Friend: friend}
	r.Fixed(inv.UserHash[:])
	r.Fixed(inv.Inviter[:])
	r.Fixed(inv.Secret[:])
	inv.Expires = time.Unix(r.I64(), 0)
	n := int(r.U8())
	if n > maxInviteEndpoints {
		return nil, ErrBadCode
	}
	for i := 0; i < n; i++ {
		inv.Endpoints = append(inv.Endpoints, r.AddrPort())
	}
	if r.Err == nil && len(r.B) > 0 {
		n := int(r.U8())
		if n == 0 || n > maxInviteStreams {
			return nil, ErrBadCode
		}
		for i := 0; i < n; i++ {
			inv.Streams = append(inv.Streams, r.AddrPort())
		}
	}
	if r.Done() != nil {
		return nil, ErrBadCode
	}
	for _, ep := range append(slices.Clone(inv.Endpoints), inv.Streams...) {
		if !ep.IsValid() || ep.Port() == 0 {
			return nil, ErrBadCode
		}
	}
	return inv, nil
}

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

// pendingInvite is an issued code as the inviter keeps it.
type pendingInvite struct {
	Secret  [16]byte   `json:"secret"`
	Expires time.Time  `json:"expires"`
	Uses    int        `json:"uses"`             // uses left
	UsedBy  [][32]byte `json:"used_by"`          // nodes admitted with it, to answer their retries
	Certs   [][]byte   `json:"certs"`            // the certificates given, same order
	Friend  bool       `json:"friend,omitempty"` // a friend code
}

// invites is the inviter's book of codes, persisted in the state directory.
type invites struct {
	state State
	byID  map[[16]byte]*pendingInvite
	seq   uint64        // the last snapshot's number
	w     orderedWriter // writes snapshots in order
}

func loadInvites(st State) (*invites, error) {
	iv := &invites{state: st, byID: map[[16]byte]*pendingInvite{}}
	data, err := st.ReadFile("invites")
	if err != nil {
		return iv, nil // none yet
	}
	if iv.byID, err = parseInvites(st.Path("invites"), data); err != nil {
		return nil, err
	}
	return iv, nil
}

// maxInviteUses bounds the uses of one code (glow invite --uses), and so
// the nodes an invites file may list per code.
const maxInviteUses = 1 << 16

// parseInvites parses the invites file (read from path). A damaged file
// is an error that names it, never a book the join code would trip over:
// every entry is checked (no null entries, uses in range, one
// certificate per node it admitted).
func parseInvites(path string, data []byte) (map[[16]byte]*pendingInvite, error) {
	var list []*pendingInvite
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, &DamagedError{path, err}
	}
	byID := make(map[[16]byte]*pendingInvite, len(list))
	for i, p := range list {
		switch {
		case p == nil:
			return nil, &DamagedError{path, fmt.Errorf("entry %d is empty", i)}
		case p.Uses < 0 || p.Uses > maxInviteUses || len(p.UsedBy) > maxInviteUses:
			return nil, &DamagedError{path, fmt.Errorf("entry %d: %d uses left, %d used: out of range", i, p.Uses, len(p.UsedBy))}
		case len(p.UsedBy) != len(p.Certs):
			return nil, &DamagedError{path, fmt.Errorf("entry %d: %d nodes admitted but %d certificates", i, len(p.UsedBy), len(p.Certs))}
		}
		byID[(&Invite{Secret: p.Secret}).ID()] = p
	}
	return byID, nil
}

// live reports whether some code may still be used or retried at now
// (up to joinTimeout after it expires, for a joiner's retries). With none,
// a request from an unknown sender cannot succeed, and the node does not
// pay an X25519 to open it.
func (iv *invites) live(now time.Time) bool {
	for _, p := range iv.byID {
		if now.Before(p.Expires.Add(joinTimeout)) {
			return true
		}
	}
	return false
}

// save writes the invites file as the table is now. Node.mu is held: the
// control loop redeeming a code (Node.mu's comment says why).
func (iv *invites) save(now time.Time) error {
	seq, data, err := iv.snapshot(now)
	if err != nil {
		return err
	}
	return iv.w.write(iv.state, "invites", seq, data)
}

// snapshot numbers and marshals the table, forgetting long expired codes.
// Node.mu is held; the write (iv.w.write) need not be.
func (iv *invites) snapshot(now time.Time) (uint64, []byte, error) {
	var list []*pendingInvite
	for id, p := range iv.byID {
		if now.After(p.Expires.Add(24 * time.Hour)) {
			delete(iv.byID, id) // long expired: forget
			continue
		}
		list = append(list, p)
	}
	data, err := json.Marshal(list)
	if err != nil {
		return 0, nil, err
	}
	iv.seq++
	return iv.seq, data, nil
}

// issue creates a new code's secret; the caller saves the table.
func (iv *invites) issue(ttl time.Duration, uses int, friend bool, now time.Time) (*pendingInvite, error) {
	p := &pendingInvite{Expires: now.Add(ttl), Uses: uses, Friend: friend}
	if _, err := rand.Read(p.Secret[:]); err != nil {
		return nil, err
	}
	iv.byID[(&Invite{Secret: p.Secret}).ID()] = p
	return p, nil
}

// issueInvite issues a code with n.mu held and saves the table without it;
// a code that cannot be saved is withdrawn. code makes the code's text
// (under n.mu).
func (n *Node) issueInvite(ttl time.Duration, uses int, friend bool, code func(p *pendingInvite, now time.Time) string) (string, error) {
	now := time.Now()
	n.mu.Lock()
	if n.user == nil {
		n.mu.Unlock()
		if friend {
			return "", errNotAdmin
		}
		return "", api.Errorf(api.CodeNotAdmin, "this node is not an admin node (it does not hold the user key); run 'glow invite' on the node where the user was created")
	}
	p, err := n.invites.issue(ttl, uses, friend, now)
	var seq uint64
	var data []byte
	if err == nil {
		seq, data, err = n.invites.snapshot(now)
	}
	var text string
	if err == nil {
		text = code(p, now)
	}
	n.mu.Unlock()
	if err == nil {
		err = n.invites.w.write(n.state, "invites", seq, data)
	}
	if err != nil {
		if p != nil {
			n.mu.Lock()
			delete(n.invites.byID, (&Invite{Secret: p.Secret}).ID())
			n.mu.Unlock()
		}
		return "", err
	}
	return text, nil
}

// maxInviteEndpoints bounds a code's endpoints; up to maxInvitePublic of
// them are other nodes' public addresses.
const (
	maxInviteEndpoints = 8
	maxInvitePublic    = 3
	maxInviteStreams   = 2
)

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
		if ap.Port() == n.Port() || len(out) == maxInviteStreams {
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
	for _, p := range n.peers {
		a := p.active.Addr().Unmap()
		if p.cert.User != n.cert.User || !endpointOK(p.active, n.loopbackLab) {
			continue
		}
		if !n.loopbackLab && (a.IsPrivate() || a.IsLoopback() || cgnat.Contains(a)) {
			continue
		}
		pub = append(pub, netip.AddrPortFrom(a, p.active.Port()))
	}
	slices.SortFunc(pub, func(a, b netip.AddrPort) int { return a.Compare(b) })
	pub = pub[:min(len(pub), maxInvitePublic)]
	own := n.localEndpointsLocked(now)
	own = own[:min(len(own), maxInviteEndpoints-len(pub))]
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
func (n *Node) useInviteLocked(inv *pendingInvite, node wire.NodeID, cert []byte, now time.Time) (undo func(), err error) {
	inv.Uses--
	inv.UsedBy = append(inv.UsedBy, node)
	inv.Certs = append(inv.Certs, bytes.Clone(cert))
	giveBack := func() {
		inv.Uses++
		inv.UsedBy = inv.UsedBy[:len(inv.UsedBy)-1]
		inv.Certs = inv.Certs[:len(inv.Certs)-1]
	}
	if err := n.invites.save(now); err != nil {
		giveBack()
		n.logf("glow: saving invites: %v", err)
		return nil, errInviteSave
	}
	return func() {
		giveBack()
		if err := n.invites.save(now); err != nil {
			n.logf("glow: saving invites (the code stays used): %v", err)
		}
	}, nil
}
