package member

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
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
// ports a joiner whose UDP is blocked dials (overlay/joinstream.go) besides the link
// port of each endpoint, which is by default the endpoint's address itself.
//
// The endpoints are the inviter's and those of the user's nodes the inviter
// reaches directly at a public address (a VPS): a joiner that cannot reach
// the inviter asks one of them to pass its request on (overlay/joinrelay.go).
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
	Streams   []netip.AddrPort // TCP link addresses other than the endpoints' (overlay/joinstream.go)
}

const (
	invitePrefix  = "glow-"
	friendPrefix  = "glowf-"
	inviteVersion = 1
)

// MaxInviteEndpoints bounds a code's endpoints; up to maxInvitePublic of
// them are other nodes' public addresses.
const (
	MaxInviteEndpoints = 8
	MaxInvitePublic    = 3
	MaxInviteStreams   = 2
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
	if len(eps) > MaxInviteEndpoints {
		eps = eps[:MaxInviteEndpoints]
	}
	w.U8(uint8(len(eps)))
	for _, ep := range eps {
		w.AddrPort(ep)
	}
	if ss := inv.Streams[:min(len(inv.Streams), MaxInviteStreams)]; len(ss) > 0 {
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
	if n > MaxInviteEndpoints {
		return nil, ErrBadCode
	}
	for i := 0; i < n; i++ {
		inv.Endpoints = append(inv.Endpoints, r.AddrPort())
	}
	if r.Err == nil && len(r.B) > 0 {
		n := int(r.U8())
		if n == 0 || n > MaxInviteStreams {
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

// PendingInvite is an issued code as the inviter keeps it.
type PendingInvite struct {
	Secret  [16]byte   `json:"secret"`
	Expires time.Time  `json:"expires"`
	Uses    int        `json:"uses"`             // uses left
	UsedBy  [][32]byte `json:"used_by"`          // nodes admitted with it, to answer their retries
	Certs   [][]byte   `json:"certs"`            // the certificates given, same order
	Friend  bool       `json:"friend,omitempty"` // a friend code
}

// Invites is the inviter's book of codes, persisted in the state directory.
type Invites struct {
	state  State
	ByID   map[[16]byte]*PendingInvite
	seq    uint64        // the last snapshot's number
	Writer OrderedWriter // writes snapshots in order
}

func LoadInvites(st State) (*Invites, error) {
	iv := &Invites{state: st, ByID: map[[16]byte]*PendingInvite{}}
	data, err := st.ReadFile("invites")
	if err != nil {
		return iv, nil // none yet
	}
	if iv.ByID, err = ParseInvites(st.Path("invites"), data); err != nil {
		return nil, err
	}
	return iv, nil
}

// MaxInviteUses bounds the uses of one code (glow invite --uses), and so
// the nodes an invites file may list per code.
const MaxInviteUses = 1 << 16

// ParseInvites parses the invites file (read from path). A damaged file
// is an error that names it, never a book the join code would trip over:
// every entry is checked (no null entries, uses in range, one
// certificate per node it admitted).
func ParseInvites(path string, data []byte) (map[[16]byte]*PendingInvite, error) {
	var list []*PendingInvite
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, &DamagedError{path, err}
	}
	byID := make(map[[16]byte]*PendingInvite, len(list))
	for i, p := range list {
		switch {
		case p == nil:
			return nil, &DamagedError{path, fmt.Errorf("entry %d is empty", i)}
		case p.Uses < 0 || p.Uses > MaxInviteUses || len(p.UsedBy) > MaxInviteUses:
			return nil, &DamagedError{path, fmt.Errorf("entry %d: %d uses left, %d used: out of range", i, p.Uses, len(p.UsedBy))}
		case len(p.UsedBy) != len(p.Certs):
			return nil, &DamagedError{path, fmt.Errorf("entry %d: %d nodes admitted but %d certificates", i, len(p.UsedBy), len(p.Certs))}
		}
		byID[(&Invite{Secret: p.Secret}).ID()] = p
	}
	return byID, nil
}

// Live reports whether some code may still be used or retried at now
// (up to grace after it expires, for a joiner's retries). With none,
// a request from an unknown sender cannot succeed, and the node does not
// pay an X25519 to open it.
func (iv *Invites) Live(now time.Time, grace time.Duration) bool {
	for _, p := range iv.ByID {
		if now.Before(p.Expires.Add(grace)) {
			return true
		}
	}
	return false
}

// Save writes the invites file as the table is now. The caller holds the
// lock that guards the table (in overlay, Node.mu: the
// control loop redeeming a code; Node.mu's comment says why).
func (iv *Invites) Save(now time.Time) error {
	seq, data, err := iv.Snapshot(now)
	if err != nil {
		return err
	}
	return iv.Writer.Write(iv.state, "invites", seq, data)
}

// Snapshot numbers and marshals the table, forgetting long expired codes.
// The caller holds the table's lock; the write (iv.Writer.Write) need not.
func (iv *Invites) Snapshot(now time.Time) (uint64, []byte, error) {
	var list []*PendingInvite
	for id, p := range iv.ByID {
		if now.After(p.Expires.Add(24 * time.Hour)) {
			delete(iv.ByID, id) // long expired: forget
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

// Issue creates a new code's secret; the caller saves the table.
func (iv *Invites) Issue(ttl time.Duration, uses int, friend bool, now time.Time) (*PendingInvite, error) {
	p := &PendingInvite{Expires: now.Add(ttl), Uses: uses, Friend: friend}
	if _, err := rand.Read(p.Secret[:]); err != nil {
		return nil, err
	}
	iv.ByID[(&Invite{Secret: p.Secret}).ID()] = p
	return p, nil
}
