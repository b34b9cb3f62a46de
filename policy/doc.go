// Package policy is glow's access policy: the text document a user writes
// (and "glow share" edits), its validation, and the packet filter that
// enforces it on each node.
//
// # The document
//
// A policy belongs to one user, the owner, and says which other users may
// reach which of the owner's nodes. It is line based; "#" starts a comment.
//
//	# glow policy for user alice
//	group friends = bob, carol
//	tag web = nas, desk
//	allow bob -> nas:8080/tcp
//	allow group:friends -> tag:web:80,443/tcp
//	allow bob/laptop -> nas:icmp
//	allow carol -> desk:5000-5010/udp
//	allow bob -> nas:*            # every port and protocol
//
// Statements:
//
//	group NAME = USER, USER, ...   a set of users (the list may be empty)
//	tag NAME = NODE, NODE, ...     a set of the owner's nodes
//	allow SOURCE -> DEST           a grant
//
// A SOURCE is a user ("bob": all of bob's nodes), one node of a user
// ("bob/laptop"), "group:NAME", "tag:NAME" (nodes whose certificate carries
// that tag) or "*" (every authenticated user). A DEST is one of the owner's
// nodes ("nas"), "tag:NAME" (the nodes listed in the tag) or "*" (all the
// owner's nodes), then ":" and one of
//
//	PORTS          TCP and UDP on those ports: 22  80,443  5000-5010
//	PORTS/tcp      also /udp and /tcp+udp; "*" as PORTS means every port
//	icmp           ICMP and ICMPv6 (echo requests and informational types)
//	*              every port of every IP protocol
//
// Names are 1 to 63 lowercase letters, digits and '-'. Groups and tags may
// be used before the line that defines them, but must be defined once. The
// parser rejects, naming the line, unknown statements, groups and tags,
// duplicate definitions, ports outside 1-65535 or reversed ranges, unknown
// protocols, control characters, and input over 1 MiB or 10,000 rules.
//
// The default needs no rule: the owner's own nodes reach each other on
// every port and protocol, and nobody else reaches anything. Rules only
// add; there is no deny, so the order of rules does not matter and no rule
// can lock the owner out of their own nodes.
//
// Parse reads a document; Format writes it back canonically (groups, then
// tags, then rules, each under the comments written above it, with end of
// line comments kept), and Parse(Format(d)) equals d for every parsed d
// (FuzzParse checks this). Share, Unshare and
// Shares edit and list grants for "glow share nas:8080/tcp --with bob",
// "glow unshare" and "glow friend list"; ParseShareTarget reads their
// argument, where a bare port list means TCP.
//
// # The filter
//
// Compile turns a document into Rules for one node (CompileConfig names the
// owner, this node and the Directory that maps overlay addresses to
// certified principals). Rules.Allow is the policy as a pure decision:
// who, to which node, protocol and port, and why (a Reason).
//
// A Filter enforces Rules on that node's packets, at two named points of the
// TUN wrapper: Outbound for packets the node sends into the overlay, and
// Inbound for decrypted packets from the overlay before the operating
// system sees them:
//
//	f, err := policy.NewFilter(rules, policy.Options{})
//	...
//	if v := f.Inbound(pkt, now); !v.Allow { drop(pkt, v.Reason) }
//	...
//	f.SetRules(newRules) // after a new policy arrives; no restart
//
// Every decision carries a Reason and is counted (Counts, for "glow
// status"). The filter is stateful in the way that matters for revocation:
//
//   - A flow is remembered with who opened it. Only flows this node opened
//     give the remote side "reply" passes (ok-reply). Packets of flows the
//     remote side opened are checked against the current rules on every
//     packet, so "glow unshare" cuts open connections at once.
//   - Echo replies pass only as replies to this node's echo requests; ICMP
//     errors pass only when the packet they quote belongs to a known flow.
//   - A later fragment passes only if the first fragment of the same
//     datagram (source, destination, identification, protocol) passed.
//   - The source of an inbound packet is identified by its address through
//     the Directory; the overlay guarantees the address is the sender's.
//     Unknown sources drop.
//   - A rule opens a service on the node's own overlay addresses only
//     (CompileConfig.Addrs, IPv4 and IPv6): another user's packet to any
//     other address, one the node routes (containers, other interfaces) or
//     holds on another interface, drops as wrong-destination.
//
// # Why this shape
//
// The decision is a pure function of (principal, node, protocol, port) so
// that it can be tested without packets and explained ("why was this
// dropped?") by the same code that enforces it. The stateful part is a
// bounded table with time passed in as an argument: no goroutines, no
// clock reads, nothing to stop, and tests step time by hand. Rules are
// immutable and swapped through an atomic pointer, so the packet path takes
// no lock for them. Per packet the filter does not allocate; the flow table
// is sharded under short mutexes.
//
// The TCP idle timeout is two hours rather than a few minutes: connections
// idle longer than five minutes (SSH, database pools) are common, and the
// table's size bound, with least-recently-used eviction, already caps the
// memory. Time-outs and sizes are Options.
package policy
