package member

import (
	"fmt"
	"strings"
	"time"

	"glow/internal/wire"
)

// Certificate lifetime, renewal and expiry.
//
// How long a certificate lasts is a property of the user, stated in its
// settings document (KindSettings, signed by the user key like the policy),
// so that every admin issues with it; a user without one (state from before
// it existed) has DefaultCertLifetime. A node asks for renewal at half its
// certificate's lifetime (overlay/renew.go), and a peer is refused once its
// certificate is past NotAfter and a grace for clock skew (ExpiresAt).

// KindSettings is the user's settings document: "KEY VALUE" lines, of which
// "cert-lifetime DURATION" is the one known today; unknown keys are
// ignored, so that a newer admin may add some.
const KindSettings RecordKind = 6

const (
	DefaultCertLifetime = 365 * 24 * time.Hour
	// MinCertLifetime is the shortest lifetime a user may choose: short
	// enough for tests to watch renewals, long enough that a renewal (at
	// half of it) has time to cross relays and retries.
	MinCertLifetime = time.Minute
	// MaxCertLifetime is the longest: ten years.
	MaxCertLifetime = 10 * 365 * 24 * time.Hour
)

// IsUserDocKind says whether records of kind k are user documents.
func IsUserDocKind(k RecordKind) bool {
	switch k {
	case KindFriends, KindPolicy, KindRevoked, KindDevices, KindSettings:
		return true
	}
	return false
}

// Settings are what a user's settings document states.
type Settings struct {
	CertLifetime time.Duration // 0: DefaultCertLifetime
}

// CheckCertLifetime refuses a lifetime outside [MinCertLifetime, MaxCertLifetime].
func CheckCertLifetime(d time.Duration) error {
	if d < MinCertLifetime || d > MaxCertLifetime {
		return fmt.Errorf("certificate lifetime %v: want between %v and %v", d, MinCertLifetime, MaxCertLifetime)
	}
	return nil
}

// FormatSettings is the body of a KindSettings document.
func FormatSettings(s Settings) []byte {
	var b strings.Builder
	if s.CertLifetime != 0 {
		fmt.Fprintf(&b, "cert-lifetime %s\n", s.CertLifetime)
	}
	return []byte(b.String())
}

// ParseSettings reads the body of a KindSettings document.
func ParseSettings(body []byte) (Settings, error) {
	var s Settings
	for i, line := range strings.Split(string(body), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		key, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			return Settings{}, fmt.Errorf("settings line %d: %w: want KEY VALUE", i+1, ErrMalformed)
		}
		switch key {
		case "cert-lifetime":
			d, err := time.ParseDuration(strings.TrimSpace(val))
			if err != nil {
				return Settings{}, fmt.Errorf("settings line %d: %w: %v", i+1, ErrMalformed, err)
			}
			if err := CheckCertLifetime(d); err != nil {
				return Settings{}, fmt.Errorf("settings line %d: %w: %v", i+1, ErrMalformed, err)
			}
			s.CertLifetime = d
		}
	}
	return s, nil
}

// CertLifetime is the lifetime the store's user gives its certificates:
// its settings document's, or DefaultCertLifetime.
func (s *Store) CertLifetime() time.Duration {
	if d := s.docs[KindSettings]; d != nil {
		if set, err := ParseSettings(d.Body); err == nil && set.CertLifetime != 0 {
			return set.CertLifetime
		}
	}
	return DefaultCertLifetime
}

// ExpiryGrace is how long after its NotAfter a certificate of lifetime
// life is still taken: clocks a few minutes apart must not cut a node off
// at its peers just before its renewal lands. It is ClockSkew (10
// minutes), less for lifetimes under 100 minutes (a tenth of the
// lifetime), so that a test's two-minute certificates still expire.
func ExpiryGrace(life time.Duration) time.Duration {
	return min(ClockSkew, max(life/10, 0))
}

// Lifetime is the span the certificate was issued for.
func (c *Cert) Lifetime() time.Duration { return c.NotAfter.Sub(c.NotBefore) }

// ExpiresAt is when peers stop taking the certificate: NotAfter and the
// grace for clock skew.
func (c *Cert) ExpiresAt() time.Time { return c.NotAfter.Add(ExpiryGrace(c.Lifetime())) }

// RenewAt is when the certificate's node asks for a new one: at half its
// lifetime.
func (c *Cert) RenewAt() time.Time { return c.NotBefore.Add(c.Lifetime() / 2) }

// Expire drops the certificates (and node infos) that peers no longer take
// at now (ExpiresAt), but keep's: a node keeps its own certificate, expired
// or not, and says so. Expired certificates of the store's own user are
// kept aside (Lapsed) so that an admin can renew them and so that the node's
// keys stay pinned; they are not gossiped.
func (s *Store) Expire(now time.Time, keep wire.NodeID) (gone []wire.NodeID) {
	if s.nextExp != nil && s.nextExp.keep == keep && (s.nextExp.at.IsZero() || !now.After(s.nextExp.at)) {
		return nil // none expires before the earliest (NextExpiry, kept until a change)
	}
	for id, c := range s.certs {
		if id != keep && now.After(c.ExpiresAt()) {
			if s.Own(c.User) {
				s.lapse(c, s.infos[id])
			}
			s.changed()
			delete(s.certs, id)
			delete(s.infos, id)
			gone = append(gone, id)
		}
	}
	return gone
}

// NextExpiry is the earliest ExpiresAt of the certificates held but keep's
// (zero if none).
func (s *Store) NextExpiry(keep wire.NodeID) time.Time {
	if s.nextExp != nil && s.nextExp.keep == keep {
		return s.nextExp.at
	}
	var t time.Time
	for id, c := range s.certs {
		if at := c.ExpiresAt(); id != keep && (t.IsZero() || at.Before(t)) {
			t = at
		}
	}
	s.nextExp = &nextExpiry{keep, t}
	return t
}

// nextExpiry is NextExpiry's answer for keep, kept until the certificates
// change.
type nextExpiry struct {
	keep wire.NodeID
	at   time.Time
}

// lapsedCert is an expired certificate of the store's user, with the last
// endpoints its node published.
type lapsedCert struct {
	cert *Cert
	info *NodeInfo
}

// lapse keeps c (expired, of the store's own user) aside, unless a newer one is.
func (s *Store) lapse(c *Cert, info *NodeInfo) {
	if old, ok := s.lapsed[c.Node]; ok && !c.NotBefore.After(old.cert.NotBefore) {
		if info != nil && (old.info == nil || info.Seq > old.info.Seq) {
			old.info = info
			s.lapsed[c.Node] = old
		}
		return
	}
	if s.lapsed == nil {
		s.lapsed = map[wire.NodeID]lapsedCert{}
	}
	s.lapsed[c.Node] = lapsedCert{c, info}
}

// Lapsed returns the expired certificate of id kept aside, and its node's
// last endpoints, or nil.
func (s *Store) Lapsed(id wire.NodeID) (*Cert, *NodeInfo) {
	l := s.lapsed[id]
	return l.cert, l.info
}

// LapsedByCtl returns the expired certificate kept aside whose node has
// control key k, or nil.
func (s *Store) LapsedByCtl(k wire.Key) *Cert {
	for _, l := range s.lapsed {
		if l.cert.Ctl == k {
			return l.cert
		}
	}
	return nil
}

// LapsedCerts returns the expired certificates kept aside.
func (s *Store) LapsedCerts() []*Cert {
	out := make([]*Cert, 0, len(s.lapsed))
	for _, l := range s.lapsed {
		out = append(out, l.cert)
	}
	return out
}
