package member

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"glow/internal/wire"
)

// RecordKind names what a gossiped record states.
type RecordKind uint8

// Record kinds. Each (kind, node) pair has at most one current record.
const (
	KindCert RecordKind = 1 // a node's certificate, signed by its user
	KindInfo RecordKind = 2 // a node's current endpoints, signed by the node
)

func (k RecordKind) String() string {
	switch k {
	case KindCert:
		return "cert"
	case KindInfo:
		return "info"
	case KindFriends:
		return "friends"
	case KindPolicy:
		return "policy"
	case KindRevoked:
		return "revoked"
	case KindDevices:
		return "devices"
	case KindSettings:
		return "settings"
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// NodeInfo is a node's signed statement of where it can be reached now.
// Seq orders a node's statements; a higher Seq replaces a lower one.
type NodeInfo struct {
	Node      wire.NodeID
	Seq       uint64
	Endpoints []netip.AddrPort
	Links     []LinkInfo // neighbours this node reaches directly, for routing
	// Routes are the prefixes this node offers to route for its peers
	// (subnet routes, and 0.0.0.0/0 and ::/0 for an exit node: routes.go).
	// An info with routes is encoded as version 2; without, as version 1.
	Routes []netip.Prefix
	Sig    [ed25519.SignatureSize]byte

	raw []byte
}

const (
	infoVersion  = 1
	infoRoutes   = 2 // version 1 and the routes
	MaxEndpoints = 16
	MaxLinks     = 64
	MaxRoutes    = 16 // routes one NodeInfo offers
)

// LinkInfo is one edge of the routing graph: a neighbour and the cost of
// reaching it (lower is better).
type LinkInfo struct {
	Node wire.NodeID
	Cost uint16
}

var infoContext = []byte("glow info v1\x00")

func (n *NodeInfo) body() []byte {
	var w wire.Writer
	if len(n.Routes) > 0 {
		w.U8(infoRoutes)
	} else {
		w.U8(infoVersion)
	}
	w.Raw(n.Node[:])
	w.U64(n.Seq)
	w.U8(uint8(len(n.Endpoints)))
	for _, ep := range n.Endpoints {
		w.AddrPort(ep)
	}
	w.U8(uint8(len(n.Links)))
	for _, l := range n.Links {
		w.Raw(l.Node[:])
		w.U16(l.Cost)
	}
	if len(n.Routes) > 0 {
		w.U8(uint8(len(n.Routes)))
		for _, p := range n.Routes {
			w.AddrPort(netip.AddrPortFrom(p.Addr(), uint16(p.Bits()))) // the port field holds the length
		}
	}
	return w.B
}

// SignInfo signs n with the node's key (which must be n.Node's).
func SignInfo(k ed25519.PrivateKey, n *NodeInfo) {
	if len(n.Endpoints) > MaxEndpoints {
		n.Endpoints = n.Endpoints[:MaxEndpoints]
	}
	if len(n.Links) > MaxLinks {
		n.Links = n.Links[:MaxLinks]
	}
	if len(n.Routes) > MaxRoutes {
		n.Routes = n.Routes[:MaxRoutes]
	}
	body := n.body()
	copy(n.Sig[:], ed25519.Sign(k, append(append([]byte{}, infoContext...), body...)))
	n.raw = append(body, n.Sig[:]...)
}

// Marshal returns the record's encoding.
func (n *NodeInfo) Marshal() []byte { return n.raw }

// PeekInfoNode returns the node a NodeInfo encoding names, unverified.
func PeekInfoNode(b []byte) wire.NodeID {
	id, _, _ := peekInfo(b)
	return id
}

// peekInfo reads a NodeInfo encoding's node and version number as
// ParseInfo does, unverified; ok says both were there (the node is
// returned when only the version number is missing).
func peekInfo(b []byte) (id wire.NodeID, seq uint64, ok bool) {
	r := wire.Reader{B: b}
	r.U8()
	r.Fixed(id[:])
	if r.Err != nil {
		return wire.NodeID{}, 0, false
	}
	seq = r.U64()
	return id, seq, r.Err == nil
}

// ParseInfo decodes a NodeInfo and checks its signature against its node key.
func ParseInfo(b []byte) (*NodeInfo, error) {
	if len(b) > 1024 {
		return nil, fmt.Errorf("node info: %w: too long", ErrMalformed)
	}
	r := wire.Reader{B: b}
	n := &NodeInfo{}
	v := r.U8()
	if r.Err == nil && v != infoVersion && v != infoRoutes {
		return nil, fmt.Errorf("node info: %w: version %d", ErrMalformed, v)
	}
	r.Fixed(n.Node[:])
	n.Seq = r.U64()
	cnt := int(r.U8())
	if cnt > MaxEndpoints {
		return nil, fmt.Errorf("node info: %w: %d endpoints", ErrMalformed, cnt)
	}
	for i := 0; i < cnt && r.Err == nil; i++ {
		ep := r.AddrPort()
		if !ep.IsValid() {
			return nil, fmt.Errorf("node info: %w: bad endpoint", ErrMalformed)
		}
		n.Endpoints = append(n.Endpoints, ep)
	}
	links := int(r.U8())
	if links > MaxLinks {
		return nil, fmt.Errorf("node info: %w: %d links", ErrMalformed, links)
	}
	for i := 0; i < links && r.Err == nil; i++ {
		var l LinkInfo
		r.Fixed(l.Node[:])
		l.Cost = r.U16()
		n.Links = append(n.Links, l)
	}
	if v == infoRoutes {
		cnt := int(r.U8())
		if r.Err == nil && (cnt == 0 || cnt > MaxRoutes) {
			return nil, fmt.Errorf("node info: %w: %d routes", ErrMalformed, cnt)
		}
		for i := 0; i < cnt && r.Err == nil; i++ {
			ap := r.AddrPort()
			p, err := ap.Addr().Prefix(int(ap.Port()))
			if r.Err == nil && (err != nil || int(ap.Port()) > ap.Addr().BitLen() || p != netip.PrefixFrom(ap.Addr(), int(ap.Port()))) {
				return nil, fmt.Errorf("node info: %w: bad route %v/%d", ErrMalformed, ap.Addr(), ap.Port())
			}
			n.Routes = append(n.Routes, p)
		}
	}
	r.Fixed(n.Sig[:])
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("node info: %w: %v", ErrMalformed, err)
	}
	signed := len(b) - ed25519.SignatureSize
	if !ed25519.Verify(n.Node.PublicKey(), append(append([]byte{}, infoContext...), b[:signed]...), n.Sig[:]) {
		return nil, fmt.Errorf("node info of %v: %w", n.Node, ErrBadSignature)
	}
	n.raw = bytes.Clone(b)
	return n, nil
}

// RecordKey names the slot a record fills.
type RecordKey struct {
	Kind RecordKind
	Node wire.NodeID
}

// DigestEntry says which version of a record a node holds.
type DigestEntry struct {
	RecordKey
	Version uint64
}

// Rejection reasons the Store counts.
const (
	RejectMalformed = "malformed"
	RejectSignature = "bad-signature"
	RejectUser      = "unknown-user"
	RejectExpired   = "expired"
	RejectStale     = "stale"
	RejectNoCert    = "no-cert"
	RejectConflict  = "address-conflict"
	RejectRevoked   = "revoked"
	RejectKeyChange = "key-change" // a certificate giving a known node other keys or another user
	RejectFriendCap = "friend-cap" // a friend's node beyond maxFriendCerts
	RejectKeyTaken  = "key-taken"  // a certificate with the WireGuard or control key, or the short id, of another user's node
)

// MaxFriendCerts bounds the certificates of one friend user a store keeps:
// a friend can mint them without end, and each would be a peer.
const MaxFriendCerts = 256

// Store holds the records a node knows about its user's nodes and decides
// which incoming records to accept. It is not safe for concurrent use: the
// node's control loop owns it.
type Store struct {
	user    ed25519.PublicKey
	trusted map[[32]byte]string // friend user keys (from our friend list) -> name
	certs   map[wire.NodeID]*Cert
	infos   map[wire.NodeID]*NodeInfo
	docs    map[RecordKind]*UserDoc // our user's friend list, policy, revocations
	revoked map[wire.NodeID]bool    // by our user: no certificate of these ids
	devKeys map[wire.Key]bool       // our user's devices' WireGuard keys (KindDevices)
	// Friends' revocation lists, by friend user key. A friend's list
	// revokes only that friend's certificates (friendRevoked[c.User]).
	friendDocs    map[[32]byte]*UserDoc
	friendRevoked map[[32]byte]map[wire.NodeID]bool
	// Expired certificates of our user, kept aside (lifetime.go).
	lapsed map[wire.NodeID]lapsedCert
	// Rejected counts refused records by reason.
	Rejected map[string]uint64

	// What is computed from the records held, kept until they change
	// (changed): the control loop asks for these on every tick, summary
	// and route computation, and each costs O(records) to build.
	sorted  []*Cert  // Certs, nil until asked for
	sum     *Summary // Summary, nil until asked for
	nextExp *nextExpiry
}

// changed drops what was computed from the records held.
func (s *Store) changed() { s.sorted, s.sum, s.nextExp = nil, nil, nil }

// NewStore returns an empty store trusting the given user key.
func NewStore(user ed25519.PublicKey) *Store {
	return &Store{
		user:     user,
		trusted:  map[[32]byte]string{},
		certs:    map[wire.NodeID]*Cert{},
		infos:    map[wire.NodeID]*NodeInfo{},
		docs:     map[RecordKind]*UserDoc{},
		revoked:  map[wire.NodeID]bool{},
		Rejected: map[string]uint64{},

		friendDocs:    map[[32]byte]*UserDoc{},
		friendRevoked: map[[32]byte]map[wire.NodeID]bool{},
	}
}

func (s *Store) reject(reason string, err error) error {
	s.Rejected[reason]++
	return fmt.Errorf("%s: %w", reason, err)
}

// Change is what an accepted record changed.
type Change struct {
	Kind RecordKind
	Node wire.NodeID
}

// Apply decodes one record and keeps it if it is valid, trusted and newer
// than what the store holds. It returns whether the record was new.
func (s *Store) Apply(kind RecordKind, b []byte, now time.Time) (bool, error) {
	switch kind {
	case KindCert:
		if old := s.certs[PeekCertNode(b)]; old != nil && bytes.Equal(old.Raw, b) {
			return false, nil // the same record again: no need to verify it
		}
		c, err := ParseCert(b)
		if err != nil {
			if errors.Is(err, ErrBadSignature) {
				return false, s.reject(RejectSignature, err)
			}
			return false, s.reject(RejectMalformed, err)
		}
		return s.AddCert(c, now)
	case KindInfo:
		id, seq, ok := peekInfo(b)
		old := s.infos[id]
		if old != nil && bytes.Equal(old.raw, b) {
			return false, nil // the same record again, from another neighbour: no need to verify it
		}
		if ok && old != nil && s.certs[id] != nil && seq < old.Seq {
			// An older version is dropped unverified (a forged one counts
			// as stale): at a cold start the versions a node signs while
			// its links come up cross each other in the flood.
			return false, s.reject(RejectStale, fmt.Errorf("node info of %v: seq below %d", id, old.Seq))
		}
		n, err := ParseInfo(b)
		if err != nil {
			if errors.Is(err, ErrBadSignature) {
				return false, s.reject(RejectSignature, err)
			}
			return false, s.reject(RejectMalformed, err)
		}
		return s.AddInfo(n)
	case KindFriends, KindPolicy, KindRevoked, KindDevices, KindSettings:
		d, err := ParseUserDoc(b)
		if err != nil {
			if errors.Is(err, ErrBadSignature) {
				return false, s.reject(RejectSignature, err)
			}
			return false, s.reject(RejectMalformed, err)
		}
		if d.Kind != kind {
			return false, s.reject(RejectMalformed, fmt.Errorf("%v record holds a %v document", kind, d.Kind))
		}
		return s.AddDoc(d)
	}
	return false, s.reject(RejectMalformed, fmt.Errorf("unknown record kind %d", kind))
}

// AddDoc keeps a user document of this store's user, or a friend's
// revocation list, if it is newer. A new friend list changes which users'
// certificates are trusted; certificates of users no longer trusted are
// dropped, and so are their revocation lists.
func (s *Store) AddDoc(d *UserDoc) (bool, error) {
	if !bytes.Equal(d.User[:], s.user) {
		return s.addFriendDoc(d)
	}
	if old := s.docs[d.Kind]; old != nil && !docWins(d, old) {
		if bytes.Equal(d.raw, old.raw) {
			return false, nil
		}
		return false, s.reject(RejectStale, fmt.Errorf("%v version %d (rank %x) <= %d (rank %x)", d.Kind, d.Version, d.rank, old.Version, old.rank))
	}
	if d.Kind == KindFriends {
		fs, err := ParseFriends(d.Body)
		if err != nil {
			return false, s.reject(RejectMalformed, err)
		}
		s.changed()
		s.trusted = map[[32]byte]string{}
		for _, f := range fs {
			s.trusted[f.Key] = f.Name
		}
		for id, c := range s.certs {
			if !s.trusts(c.User) {
				delete(s.certs, id)
				delete(s.infos, id)
			}
		}
		for u := range s.friendDocs {
			if !s.trusts(u) {
				delete(s.friendDocs, u)
				delete(s.friendRevoked, u)
			}
		}
	}
	if d.Kind == KindDevices {
		ds, err := ParseDevices(d.User, d.Body)
		if err != nil {
			return false, s.reject(RejectMalformed, err)
		}
		s.devKeys = map[wire.Key]bool{}
		for _, dv := range ds {
			s.devKeys[dv.WG] = true
		}
		for id, c := range s.certs {
			if !s.Own(c.User) && s.devKeys[c.WG] {
				delete(s.certs, id) // a friend's node with one of our devices' keys gives way (keysFree)
				delete(s.infos, id)
			}
		}
	}
	if d.Kind == KindRevoked {
		ids, err := ParseRevoked(d.Body)
		if err != nil {
			return false, s.reject(RejectMalformed, err)
		}
		s.changed()
		s.revoked = map[wire.NodeID]bool{}
		for _, id := range ids {
			s.revoked[id] = true
			delete(s.certs, id)
			delete(s.infos, id)
			delete(s.lapsed, id)
		}
	}
	if d.Kind == KindSettings {
		if _, err := ParseSettings(d.Body); err != nil {
			return false, s.reject(RejectMalformed, err)
		}
	}
	s.docs[d.Kind] = d
	s.changed()
	return true, nil
}

// addFriendDoc keeps a friend's revocation list if it is newer. It
// revokes that friend's certificates only: ids of our nodes or of a third
// user's in it change nothing. Friends' other documents are not ours to
// hold.
func (s *Store) addFriendDoc(d *UserDoc) (bool, error) {
	if _, ok := s.trusted[d.User]; !ok || d.Kind != KindRevoked {
		return false, s.reject(RejectUser, fmt.Errorf("%v document of another user", d.Kind))
	}
	if old := s.friendDocs[d.User]; old != nil && !docWins(d, old) {
		if bytes.Equal(d.raw, old.raw) {
			return false, nil
		}
		return false, s.reject(RejectStale, fmt.Errorf("%v of %s version %d <= %d", d.Kind, s.trusted[d.User], d.Version, old.Version))
	}
	ids, err := ParseRevoked(d.Body)
	if err != nil {
		return false, s.reject(RejectMalformed, err)
	}
	s.changed()
	set := make(map[wire.NodeID]bool, len(ids))
	for _, id := range ids {
		set[id] = true
		if c := s.certs[id]; c != nil && c.User == d.User {
			delete(s.certs, id)
			delete(s.infos, id)
		}
	}
	s.friendRevoked[d.User] = set
	s.friendDocs[d.User] = d
	return true, nil
}

// Revoked reports whether a node was removed from the user.
func (s *Store) Revoked(id wire.NodeID) bool { return s.revoked[id] }

// revokedCert reports whether c is revoked: by our user (any certificate of
// the id), or by the user that issued it.
func (s *Store) revokedCert(c *Cert) bool {
	return s.revoked[c.Node] || s.friendRevoked[c.User][c.Node]
}

// Doc returns this user's document of kind k, or nil.
func (s *Store) Doc(k RecordKind) *UserDoc { return s.docs[k] }

// Own reports whether user is this store's own user.
func (s *Store) Own(user [32]byte) bool { return bytes.Equal(user[:], s.user) }

func (s *Store) trusts(user [32]byte) bool {
	if s.Own(user) {
		return true
	}
	_, ok := s.trusted[user]
	return ok
}

// FriendName returns the name this user gave a friend's key.
func (s *Store) FriendName(user [32]byte) (string, bool) {
	n, ok := s.trusted[user]
	return n, ok
}

// AddCert keeps a parsed certificate if it is trusted and newer: issued by
// this store's user or by a friend, in date. A node's keys are pinned by the
// certificate held: one for the same id with other WireGuard or control
// keys, or of another user, is refused whoever signed it. Only a
// revocation, which drops the held certificate, unpins the id.
func (s *Store) AddCert(c *Cert, now time.Time) (bool, error) {
	if !s.trusts(c.User) {
		return false, s.reject(RejectUser, ErrWrongUser)
	}
	if s.revokedCert(c) {
		return false, s.reject(RejectRevoked, fmt.Errorf("certificate of %s, a removed node", c.FQDN()))
	}
	if err := c.Verify(c.User[:], now); err != nil {
		if errors.Is(err, ErrExpired) && s.Own(c.User) && s.pinned(c) {
			s.lapse(c, nil) // renewable by an admin (lifetime.go)
		}
		return false, s.reject(RejectExpired, err)
	}
	if l, ok := s.lapsed[c.Node]; ok {
		if l.cert.WG != c.WG || l.cert.Ctl != c.Ctl || l.cert.User != c.User {
			return false, s.reject(RejectKeyChange, fmt.Errorf("certificate of %s with other keys than the expired one of node %v", c.FQDN(), c.Node))
		}
	}
	if old := s.certs[c.Node]; old != nil && s.Own(c.User) && !s.Own(old.User) {
		// A friend's certificate for an id of ours never shadows ours,
		// whichever arrived first.
		s.changed()
		delete(s.certs, c.Node)
		delete(s.infos, c.Node)
	}
	if old := s.certs[c.Node]; old != nil && (old.WG != c.WG || old.Ctl != c.Ctl || old.User != c.User) {
		return false, s.reject(RejectKeyChange, fmt.Errorf("certificate of %s with other keys than %s's held for node %v", c.FQDN(), old.FQDN(), c.Node))
	}
	if old := s.certs[c.Node]; old != nil && !c.NotBefore.After(old.NotBefore) {
		if c.NotBefore.Equal(old.NotBefore) {
			return false, nil // the same record again: not an error
		}
		return false, s.reject(RejectStale, fmt.Errorf("certificate of %s older than the one held", c.FQDN()))
	}
	if err := s.keysFree(c); err != nil {
		return false, err
	}
	if s.certs[c.Node] == nil && !s.Own(c.User) {
		held := 0
		for _, o := range s.certs {
			if o.User == c.User {
				held++
			}
		}
		if held >= MaxFriendCerts {
			return false, s.reject(RejectFriendCap, fmt.Errorf("certificate of %s: %d nodes of that friend held already", c.FQDN(), held))
		}
	}
	for id, o := range s.certs {
		if (o.IPv4 == c.IPv4 || o.Name == c.Name) && id != c.Node && o.User == c.User { // cheapest test first: N a certificate
			if o.NotBefore.After(c.NotBefore) {
				return false, s.reject(RejectConflict, fmt.Errorf("%s: %v or name already held by %s", c.FQDN(), c.IPv4, o.Node))
			}
			// The newer certificate wins; the older holder was re-issued or replaced.
			s.changed()
			delete(s.certs, id)
			delete(s.infos, id)
		}
	}
	s.certs[c.Node] = c
	s.changed()
	if l, ok := s.lapsed[c.Node]; ok && s.infos[c.Node] == nil && l.info != nil {
		s.infos[c.Node] = l.info // its last endpoints come back with it
	}
	delete(s.lapsed, c.Node)
	return true, nil
}

// keysFree checks that no node of another user holds c's WireGuard or
// control key, or its short id. A user key signs whatever keys and id it
// likes, and nothing proves that the node holds them; a peer is found by
// these (wireguard-go's peer by its public key, a control message by its
// sender's key, a relayed frame by the short ids of its ends), so a
// friend's certificate with the keys of one of our nodes would take that
// node's WireGuard peer and its control messages. Our certificates (held,
// or lapsed and renewable) keep their keys: a friend's certificate that
// names them is refused, and one held already gives way to ours,
// whichever arrived first. Our devices' WireGuard keys (plain WireGuard
// peers, found by that key alone) are ours the same way. Between two
// friends the one held first keeps them. Keys shared by two nodes of one
// user are that user's affair.
func (s *Store) keysFree(c *Cert) error {
	same := func(o *Cert) bool {
		return o.User != c.User && (o.WG == c.WG || o.Ctl == c.Ctl || o.Node.Short() == c.Node.Short())
	}
	for id, o := range s.certs {
		if id == c.Node || !same(o) {
			continue
		}
		if !s.Own(c.User) || s.Own(o.User) {
			return s.reject(RejectKeyTaken, fmt.Errorf("certificate of %s with the keys of %s", c.FQDN(), o.FQDN()))
		}
	}
	if !s.Own(c.User) {
		if s.devKeys[c.WG] {
			return s.reject(RejectKeyTaken, fmt.Errorf("certificate of %s with the WireGuard key of one of our devices", c.FQDN()))
		}
		for _, l := range s.lapsed {
			if same(l.cert) {
				return s.reject(RejectKeyTaken, fmt.Errorf("certificate of %s with the keys of %s", c.FQDN(), l.cert.FQDN()))
			}
		}
		return nil
	}
	for id, o := range s.certs {
		if id != c.Node && same(o) {
			s.changed()
			delete(s.certs, id)
			delete(s.infos, id)
		}
	}
	return nil
}

// pinned says whether c gives its id the keys the store holds for it, if
// it holds any (valid or lapsed).
func (s *Store) pinned(c *Cert) bool {
	if old := s.certs[c.Node]; old != nil && (old.WG != c.WG || old.Ctl != c.Ctl || old.User != c.User) {
		return false
	}
	if l, ok := s.lapsed[c.Node]; ok && (l.cert.WG != c.WG || l.cert.Ctl != c.Ctl || l.cert.User != c.User) {
		return false
	}
	return true
}

// AddInfo keeps a parsed NodeInfo if its node is certified and the Seq is newer.
func (s *Store) AddInfo(n *NodeInfo) (bool, error) {
	if l, ok := s.lapsed[n.Node]; ok && s.certs[n.Node] == nil {
		s.lapse(l.cert, n) // kept with it, not gossiped
		return false, nil
	}
	if s.certs[n.Node] == nil {
		return false, s.reject(RejectNoCert, fmt.Errorf("node info of %v with no certificate", n.Node))
	}
	if old := s.infos[n.Node]; old != nil && n.Seq <= old.Seq {
		if n.Seq == old.Seq {
			return false, nil
		}
		return false, s.reject(RejectStale, fmt.Errorf("node info of %v: seq %d <= %d", n.Node, n.Seq, old.Seq))
	}
	s.infos[n.Node] = n
	s.changed()
	return true, nil
}

// Cert returns the certificate of id, or nil.
func (s *Store) Cert(id wire.NodeID) *Cert { return s.certs[id] }

// Info returns the NodeInfo of id, or nil.
func (s *Store) Info(id wire.NodeID) *NodeInfo { return s.infos[id] }

// Certs returns every certificate held, ordered by name, in a slice the
// caller may change. The order is kept between changes, so a call costs a
// copy, not a sort.
func (s *Store) Certs() []*Cert {
	if s.sorted == nil {
		s.sorted = make([]*Cert, 0, len(s.certs))
		for _, c := range s.certs {
			s.sorted = append(s.sorted, c)
		}
		slices.SortFunc(s.sorted, func(a, b *Cert) int { return strings.Compare(a.Name, b.Name) })
	}
	return slices.Clone(s.sorted)
}

// Digest lists every record held with its version.
func (s *Store) Digest() []DigestEntry {
	d := make([]DigestEntry, 0, len(s.certs)+len(s.infos))
	for id, c := range s.certs {
		d = append(d, DigestEntry{RecordKey{KindCert, id}, uint64(c.NotBefore.UnixNano())})
	}
	for id, n := range s.infos {
		d = append(d, DigestEntry{RecordKey{KindInfo, id}, n.Seq})
	}
	for _, doc := range s.docs {
		d = append(d, DigestEntry{doc.Key(), doc.Rank()})
	}
	for _, doc := range s.friendDocs {
		d = append(d, DigestEntry{doc.Key(), doc.Rank()})
	}
	return d
}

// Summary is Summarize(s.Digest()), kept between changes.
func (s *Store) Summary() Summary {
	if s.sum == nil {
		sum := Summarize(s.Digest())
		s.sum = &sum
	}
	return *s.sum
}

// Version returns the version held for key, 0 if none.
func (s *Store) Version(k RecordKey) uint64 {
	switch k.Kind {
	case KindCert:
		if c := s.certs[k.Node]; c != nil {
			return uint64(c.NotBefore.UnixNano())
		}
	case KindInfo:
		if n := s.infos[k.Node]; n != nil {
			return n.Seq
		}
	case KindFriends, KindPolicy, KindRevoked, KindDevices, KindSettings:
		if d := s.doc(k); d != nil {
			return d.Rank() // Version and a hash: see UserDoc.Rank
		}
	}
	return 0
}

// Raw returns the encoding of the record at key, or nil.
func (s *Store) Raw(k RecordKey) []byte {
	switch k.Kind {
	case KindCert:
		if c := s.certs[k.Node]; c != nil {
			return c.Marshal()
		}
	case KindInfo:
		if n := s.infos[k.Node]; n != nil {
			return n.Marshal()
		}
	case KindFriends, KindPolicy, KindRevoked, KindDevices, KindSettings:
		if d := s.doc(k); d != nil {
			return d.Marshal()
		}
	}
	return nil
}

// doc returns the user document at k: this user's, or a friend's
// revocation list.
func (s *Store) doc(k RecordKey) *UserDoc {
	if d := s.docs[k.Kind]; d != nil && d.User == k.Node {
		return d
	}
	if d := s.friendDocs[k.Node]; d != nil && d.Kind == k.Kind {
		return d
	}
	return nil
}
