package member

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"glow/internal/wire"
)

// A Cert binds a node's keys, name and overlay addresses to its user, signed
// by the user key. It is the node's membership: peers add a WireGuard peer
// only for a node with a valid certificate of a user they trust.
type Cert struct {
	User      [32]byte // user's ed25519 public key
	UserName  string
	Node      wire.NodeID
	Name      string
	WG        wire.Key
	Ctl       wire.Key
	IPv4      netip.Addr
	IPv6      netip.Addr
	Admin     bool
	NotBefore time.Time // also the certificate's version: a newer one replaces an older
	NotAfter  time.Time
	Sig       [ed25519.SignatureSize]byte

	Raw []byte // the encoding, kept for gossip
}

const certVersion = 1

// certContext is signed with every certificate, so no other glow signature
// can be replayed as one.
var certContext = []byte("glow cert v1\x00")

// Errors a certificate check returns; callers count them.
var (
	ErrBadSignature = errors.New("bad signature")
	ErrExpired      = errors.New("certificate expired")
	ErrNotYetValid  = errors.New("certificate not yet valid")
	ErrWrongUser    = errors.New("certificate of an unknown user")
	ErrMalformed    = errors.New("malformed")
)

func (c *Cert) body() []byte {
	var w wire.Writer
	w.U8(certVersion)
	w.Raw(c.User[:])
	w.Str(c.UserName)
	w.Raw(c.Node[:])
	w.Str(c.Name)
	w.Raw(c.WG[:])
	w.Raw(c.Ctl[:])
	v4 := c.IPv4.As4()
	w.Raw(v4[:])
	v6 := c.IPv6.As16()
	w.Raw(v6[:])
	var flags uint8
	if c.Admin {
		flags |= 1
	}
	w.U8(flags)
	w.I64(c.NotBefore.UnixNano())
	w.I64(c.NotAfter.UnixNano())
	return w.B
}

// SignCert fills in c.User and signs c with the user key.
func SignCert(u *UserKey, c *Cert) {
	copy(c.User[:], u.Public())
	c.UserName = u.Name
	body := c.body()
	copy(c.Sig[:], ed25519.Sign(u.Priv, append(append([]byte{}, certContext...), body...)))
	c.Raw = append(body, c.Sig[:]...)
}

// Marshal returns the certificate's encoding.
func (c *Cert) Marshal() []byte {
	if c.Raw == nil {
		c.Raw = append(c.body(), c.Sig[:]...)
	}
	return c.Raw
}

// PeekCertNode returns the node a certificate encoding names, unverified
// (zero if it is too short).
func PeekCertNode(b []byte) (id wire.NodeID) {
	r := wire.Reader{B: b}
	r.U8()
	r.Fixed(make([]byte, 32))
	r.Str(63)
	r.Fixed(id[:])
	if r.Err != nil {
		return wire.NodeID{}
	}
	return id
}

// ParseCert decodes a certificate and checks that it is well formed and that
// its signature matches the user key it names. Whether that user is trusted,
// and whether the certificate is in date, is for the caller (Verify).
func ParseCert(b []byte) (*Cert, error) {
	if len(b) > 1024 {
		return nil, fmt.Errorf("certificate: %w: too long", ErrMalformed)
	}
	r := wire.Reader{B: b}
	c := &Cert{}
	if v := r.U8(); r.Err == nil && v != certVersion {
		return nil, fmt.Errorf("certificate: %w: version %d", ErrMalformed, v)
	}
	r.Fixed(c.User[:])
	c.UserName = r.Str(63)
	r.Fixed(c.Node[:])
	c.Name = r.Str(63)
	r.Fixed(c.WG[:])
	r.Fixed(c.Ctl[:])
	var v4 [4]byte
	r.Fixed(v4[:])
	var v6 [16]byte
	r.Fixed(v6[:])
	flags := r.U8()
	nb, na := r.I64(), r.I64()
	r.Fixed(c.Sig[:])
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("certificate: %w: %v", ErrMalformed, err)
	}
	c.IPv4, c.IPv6 = netip.AddrFrom4(v4), netip.AddrFrom16(v6)
	c.Admin = flags&1 != 0
	c.NotBefore, c.NotAfter = time.Unix(0, nb), time.Unix(0, na)
	if !ValidName(c.UserName) || !ValidName(c.Name) {
		return nil, fmt.Errorf("certificate: %w: bad name", ErrMalformed)
	}
	if !IPv4Range.Contains(c.IPv4) || ReservedV4[c.IPv4] {
		return nil, fmt.Errorf("certificate: %w: IPv4 %v outside %v", ErrMalformed, c.IPv4, IPv4Range)
	}
	if c.IPv6 != NodeAddr6(c.User[:], c.Node) {
		return nil, fmt.Errorf("certificate: %w: IPv6 %v is not the node's", ErrMalformed, c.IPv6)
	}
	signed := len(b) - ed25519.SignatureSize
	if !ed25519.Verify(c.User[:], append(append([]byte{}, certContext...), b[:signed]...), c.Sig[:]) {
		return nil, fmt.Errorf("certificate of %s.%s: %w", c.Name, c.UserName, ErrBadSignature)
	}
	c.Raw = bytes.Clone(b)
	return c, nil
}

// Verify checks that c is issued by user and valid at now.
func (c *Cert) Verify(user ed25519.PublicKey, now time.Time) error {
	if !bytes.Equal(c.User[:], user) {
		return ErrWrongUser
	}
	if now.Before(c.NotBefore.Add(-ClockSkew)) {
		return ErrNotYetValid
	}
	if now.After(c.ExpiresAt()) { // NotAfter and a grace for clock skew (lifetime.go)
		return ErrExpired
	}
	return nil
}

// ClockSkew is how far in the future a certificate may start and still be accepted.
const ClockSkew = 10 * time.Minute

// FQDN returns node.user.
func (c *Cert) FQDN() string { return c.Name + "." + c.UserName }
