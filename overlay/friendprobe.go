package overlay

import "time"

// A friend's node names its endpoints in a NodeInfo it signs, and nothing
// proves those addresses are its own: a friend (up to member.MaxFriendCerts
// nodes, 16 endpoints each, refreshed at will) could have our nodes probe
// anyone. So pings to a friend's candidates that never answered draw on a
// budget per friend user: friendProbeBurst, then friendProbeRate a second.
// Our own nodes' candidates, and a friend's that answered, are not limited.
const (
	friendProbeRate  = 32
	friendProbeBurst = 64
)

// friendProbeLocked takes a token from user's probe budget.
func (n *Node) friendProbeLocked(user [32]byte, now time.Time) bool {
	m := n.paths.friendProbes
	if m == nil {
		m = map[[32]byte]*bucket{}
		n.paths.friendProbes = m
	}
	bk := m[user]
	if bk == nil {
		if len(m) >= 64 { // users no longer friends leave their buckets
			for u := range m {
				if _, ok := n.mem.store.FriendName(u); !ok {
					delete(m, u)
				}
			}
		}
		bk = &bucket{tokens: friendProbeBurst, last: now}
		m[user] = bk
	}
	bk.tokens = min(friendProbeBurst, bk.tokens+now.Sub(bk.last).Seconds()*friendProbeRate)
	bk.last = now
	if bk.tokens < 1 {
		n.dropCtl["friend-probe-limited"]++
		return false
	}
	bk.tokens--
	return true
}
