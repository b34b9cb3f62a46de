package member

import (
	"slices"
	"strings"
	"time"

	"glow/internal/wire"
)

// FreshViews computes what Certs, Summary and NextExpiry(keep) answer from
// the records held, without what the store keeps between changes: a test
// compares the two after each change (TestStoreCachesFollowChanges).
func (s *Store) FreshViews(keep wire.NodeID) (certs []*Cert, sum Summary, next time.Time) {
	for _, c := range s.certs {
		certs = append(certs, c)
	}
	slices.SortFunc(certs, func(a, b *Cert) int { return strings.Compare(a.Name, b.Name) })
	for id, c := range s.certs {
		if at := c.ExpiresAt(); id != keep && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return certs, Summarize(s.Digest()), next
}
