// Package member is what a glow node is and what it says, as data: node and
// user keys and the overlay addresses derived from them (identity.go,
// user.go), certificates (cert.go), signed records and the Store that
// verifies and versions them (record.go), user documents: friends,
// revocations, policy (userdoc.go), invite codes and the inviter's table of
// codes (invite.go), the state directory's files (state.go), and the
// passphrase-sealed backup of a user key (backup.go).
//
// It needs no running node: nothing here starts a goroutine, opens a
// socket or takes a lock it does not own, so everything is testable and
// fuzzable on its own. The node (package overlay) holds these values and
// decides who may change them (overlay/doc.go); this package imports
// neither the overlay nor wireguard-go nor gVisor (deps_test.go).
//
// Every decoder here takes hostile bytes (from the network or a damaged
// state file) and answers with an error, never a panic: each has a fuzz
// target.
package member
