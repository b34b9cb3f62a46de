package overlay

import (
	"net/netip"

	"glow/internal/wire"
	"glow/overlay/member"
)

// admission is the part of a node that deals with strangers: nodes that
// hold no certificate we trust yet, asking to join with a code or to
// become friends, and joiners whose requests we pass on for them.
//
// A stranger's datagram enters in one place, handleJoinLocked (join.go),
// from handleControlLocked when its control key is no peer's. Until the
// request's proof is checked it touches only these tables (and reads
// whether we are an admin node and whether the key is a peer's): a request
// is opened (an X25519) only while a code is live or a friend code of ours
// is pending, and its nonce is taken once (replay.go). Once proven, the
// admission itself (admitLocked, acceptFriendLocked) changes membership.
//
// Owner: Node.mu, with the control loop as the writer of the tables but
// for issuing a code (an API call: issueInvite) and a friend code's
// pending answer (FriendAdd). It shares Node.mu rather than having a lock
// of its own because redeeming a code and admitting the node are one step
// (Node.mu's comment: a one-use code can never admit two).
type admission struct {
	invites       *member.Invites                // codes issued (nil table on non-admin nodes is empty); the pointer is set by Start
	handshakes    handshakeNonces                // join and friend requests taken lately (replay.go)
	pendingFriend map[wire.Key]chan friendAnswer // friend codes in use, by inviter key
	joinAnswers   map[netip.AddrPort]int         // join answers sent, for the log
	joinRelay     joinRelay                      // join requests passed on for strangers (joinrelay.go)
}
