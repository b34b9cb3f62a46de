package overlay

import (
	"time"

	"glow/overlay/member"
	"glow/policy"
)

// membership is the part of a node that says what it is and what it
// knows of its user and friends: its certificate, the verified records
// (package member's Store), the user documents in force, records on their
// way in pieces, and the records cache's save state.
//
// Owner: Node.mu guards all of it. The control loop writes it (gossip.go,
// fragment.go, beacon.go, join.go on an admission); API calls write it for
// a document change (save.go's changeDoc, policy.go, friends.go) and read
// it for status. It stays under the one Node.mu, not a lock of its own:
// every path and route decision reads it together with the peers
// (gossip's visibility, routes, shadowed addresses, the policy filter), so
// a lock of its own would be taken inside Node.mu on every packet of the
// control plane and buy no concurrency (doc.go).
type membership struct {
	cert  *member.Cert    // this node's certificate
	user  *member.UserKey // nil unless admin
	store *member.Store

	info       *member.NodeInfo // this node's current signed endpoints
	infoSigned time.Time        // when info was signed
	infoDirty  bool             // our endpoints changed: re-sign our NodeInfo now (any part may set it)

	doc   *policy.Document // the policy in force
	rules *policy.Rules

	frags      fragments       // records in pieces, both ways (fragment.go)
	dirty      bool            // records cache needs saving (the saver, save.go)
	pendingDoc *member.UserDoc // a document change being stored (changeDoc): in every snapshot meanwhile
	saveSeq    uint64          // the last records cache snapshot's number
	// Other nodes' certificates were taken and what follows from the set
	// (certsAppliedLocked) waits for the control loop to drain its queue
	// (flushCertsLocked): a cold start brings N certificates a few a
	// datagram, and each follow-up is O(N).
	certsPending bool
}
