// Package overlay is a glow node: identity, membership records and their
// gossip, link-state routing, the WireGuard data path with its conn.Bind,
// path choice (direct, relayed), NAT traversal, friends and policy, and the
// local API. It wires the leaf packages (tun, link, nat, relay, dns,
// policy) together and is usable as a Go library: Start N nodes in one test
// process with userspace network stacks, over loopback or over the
// in-memory NAT lab (nat/natlab), as the tests here do.
//
// # Shape
//
//	cmd/glow ─► overlay.Start(Config) ─► Node
//	              member/ (package member, no node)            what a node is, what it says: keys, certificates,
//	                                                           records and Store, user documents, invite codes, state files
//	              invite.go                                    issuing and redeeming codes (the node's half)
//	              bind.go bind_send.go bind_recv.go            the packet path (conn.Bind)
//	              tunwrap.go                                   the policy on the packet path
//	              inflight.go lazywg.go                        bounded memory, WireGuard peers on demand
//	              loop.go peers.go gossip.go routes.go         control: one loop, one mutex
//	              membership.go admission.go                   the parts (below): what we know, strangers
//	              paths.go                                     peers' paths: chosen from their state, applied to the Bind
//	              save.go                                      its blocking work, off the mutex
//	              fragment.go                                  records over one packet, in pieces
//	              beacon.go join.go friends.go policy.go       membership and sharing
//	              joinrelay.go                                 joins through any member, passed on to the inviter
//	              renew.go                                     certificate renewal by any admin, expiry at runtime
//	              admins.go docmerge.go                        several admins (promote, demote, restore); two admins' changes merged
//	              joinstream.go                                joins over TCP to a member's link port where UDP is blocked
//	              shadow.go                                    friends' addresses that collide with ours
//	              netcheck.go names.go api.go status.go        NAT, DNS, local API (server)
//	              portclash.go                                 one UDP port per node behind a NAT
//	              devices.go devicewg.go                       plain WireGuard devices behind a via node
//	              subnets.go                                   subnet routes and exit nodes (offered in NodeInfo)
//	cmd/glow ─► overlay/api                                    the local API's bodies and client (stdlib only)
//
// # Parts and owners
//
// The packet path (bind_*.go, tunwrap.go) touches control state only
// through atomics: a peer's current path is an atomic pointer that the
// control loop swaps, so a WireGuard session never notices a path change.
//
// The control state is split into parts, each a struct with one job whose
// comment lists its state and who writes it:
//
//	part                    file           state                                        written by
//	Node (immutable)        node.go        config, keys, Bind, device, listeners        Start only; read without a lock
//	Node.mem  membership    membership.go  certificate, user key, Store, policy, info,  control loop; API (document changes)
//	                                       fragments, records cache save state
//	Node.paths pathState    paths.go       peers (by id, by control key), unproven      control loop; stream readers (attach)
//	                                       addresses, routes, friends' prefixes
//	Node.adm  admission     admission.go   invite table, handshake nonces, pending      control loop (strangers); API (codes)
//	                                       friend codes, joins passed on
//	Node.lnk  linkState     links.go       configured links, bootstrap list, TURN       API (glow link), TURN goroutines
//	                                       allocations
//	Node.ports portState    portclash.go   port mapping, LAN clash, port move           port mapper, control loop, movePort
//	Node.admin adminState   admins.go      promotions waiting for an answer, the        control loop; API (promote); the role writer
//	                                       role writer's work
//	Node.renew renewal      renew.go       our certificate's renewal: next try, admins  control loop
//	                                       asked
//	Node.rt   routeState    subnets.go     prefs (routes offered, exit node), the       control loop; API (glow set); routeApplier
//	                                       kernel routes wanted
//	saver, routeSetter      save.go        the records cache write, the TUN routes      their own goroutines, fed by channels
//	Bind                    bind*.go       endpoints, paths as published (atomics)     applyPathLocked; the packet path reads
//
// One mutex, Node.mu, guards the parts (and the drop counters and the
// loop's wake time); it is held for computation only, never across a
// blocking call: state file writes, routes, WireGuard peer changes and
// memory release are done after it, from a snapshot or through a queue
// (save.go). Lock order, written at Node.saveMu: saveMu (an API call's
// state file write), then mu, then the leaf locks (a state file's writer,
// Bind.mu, Bind.wgCfgMu), never the other way; TestLockOrder,
// TestNoBlockingCallInLocked and TestStateWritesOutsideLock keep it so.
// The one exception to "no blocking call under mu" (redeeming a code) is
// written at Node.mu.
//
// What was not split, and why: the parts share Node.mu instead of a lock
// each. Nearly every control-plane step reads several of them at once
// (a record's gossip asks membership what is visible to which peer; a
// route reads peers, links and certificates; an admission checks a code,
// issues a certificate and adds a peer in one step so a one-use code never
// admits two; a port mapping or a path change re-signs our endpoints), so
// per-part locks would be taken nested on every control packet, add lock
// orders to get wrong, and buy no concurrency: the only contention is an
// API read against the loop, and the lock is never held across I/O. The
// parts still name what belongs together, and methods that need only one
// part live on it (fragments, handshakeNonces, joinRelay, member.Invites).
// The saver and route setter own their work outright (channels), which is
// where blocking happened.
//
// # Trust
//
// A user's public key is the root of trust. A node is a member if it holds
// a certificate signed by that key (or by a friend's key, for a friend's
// node); records are signed by their issuer and versioned, and forged,
// stale, expired or malformed ones are rejected and counted (Store). The
// certificate binds the node's WireGuard key to its overlay addresses, and
// WireGuard's AllowedIPs are exactly those (less a friend's address that
// another user's node holds: shadow.go), so the source address of a
// decrypted packet names its sender for the policy filter.
//
// # Scale
//
// Every node of a user holds every node's certificate and NodeInfo (two
// signed records, a few hundred bytes each) and has every node as a peer
// (WireGuard peers only while there is traffic: lazywg.go). A record
// change floods: each node pushes a record new to it to every neighbour
// (direct path or stream link) but the one it came from, so it crosses
// each link once or twice and reaches every node in the graph's diameter
// of hops; a record is verified once per node and version (Store.Apply
// skips the bytes it holds). Anti-entropy between a user's own neighbours
// is a summary of 64 range sums (one 530-byte packet, whatever N) every
// 5 s, 30 s once idle; a range that differs costs its digest entries (41
// bytes a record, 2N/64 records). TestScaleSim runs N whole nodes on a
// synctest clock over the NAT lab (links of 20 ms, average degree 6,
// churn of a restart, an address change, a leave and a join every 10 s):
// at 100 nodes a change reaches all in 0.11 s, a cold start converges in
// under a second of simulated time, and a node sends 289 bytes/s idle
// (1,894 with full digests), 4,388 under churn (20,701); at 300 nodes
// 0.11 s, 0.4 s, 295 and 4,845 bytes/s: the per-node cost does not grow
// with N while the change rate does not (make bench, BENCHMARKS.md).
//
// A node's control work is bounded by what changed, not by N, except
// where N is the answer: a tick passes a peer with nothing due in O(1)
// (tickPeersLocked keeps lower bounds of its pings' and candidates'
// expiries); the Store keeps its sorted certificates, digest summary and
// next expiry between changes (a summary received is compared with the
// kept one, not summed from 2N records); and the certificates taken from
// a queue of datagrams are followed up once when the queue drains (names,
// policy, shadowed addresses, the Bind's lookup maps: each O(N)), not once
// per certificate, which made a cold start O(N²) a node (while the queue
// never drains, once per max(64, N/4) datagrams: O(1) a datagram). A
// flood, a gossip round and our links walk the neighbour index
// (pathState.nbrs), not all N peers: that walk, per batch of records, was
// 46% of a 1,000-node cold start's CPU (O(N³) in all). A NodeInfo older
// than the one held is dropped before its signature check, and a peer's
// control key costs one X25519, not two. Still O(N) a change: the route
// computation (once per tick with changes) and the records cache write
// (5 s apart). In the simulation a node costs 2.4 MiB of heap at 300
// nodes (5.4 before: 3 MiB of it wireguard-go's receive buffers, which
// the simulation asks for in batches of 1, Config.bindBatch), about 7 KB
// of it per peer (the peer, its Bind endpoint and WireGuard
// configuration, two records, a name), and the cold start 66 s of CPU
// (122 before; 42 s and 2.2 MiB now). 1,000 whole nodes fit in one
// process: measured on a quiet machine at 9e27651, a cold start converges
// in 0.3 s of simulated time after 419 s of CPU, with 6.2 MiB of heap a
// node (19 GB resident at GOGC=60); a change then reaches all 1,000 in
// 0.13 s, and again after a minute of churn; a node sends 297 bytes/s idle
// and 5,362 under churn. The run takes 14 minutes of a 2-core machine, so
// make bench runs it only when asked (GLOW_SCALE_SIM_SIZES=100,300,1000
// make bench; by hand: GOGC=60 GLOW_SCALE=1 GLOW_SCALE_SIM_SIZES=1000 go
// test -run 'TestScaleSim$' ./overlay/). An earlier profile of it: the
// certificate follow-ups 29%, signature checks 20% (2N records a node,
// each checked by every node), the collector about 20%, sealing and
// sending the flood 9%.
//
// Full replication makes every node pay for every change: a node sends
// about (record changes per second in the whole network) × (its degree) ×
// (a record's size), so when each node changes its NodeInfo every ten
// minutes (a roaming laptop, a restart), 1,000 nodes cost each about 4
// KB/s and 100,000 nodes 400 KB/s.
//
// How far that goes: what grows with N on every node is N peers (heap per
// peer: TestScaleHeapPerPeer), 2N records verified once each, and the
// route computation over the whole link-state graph, run on each change:
// at 100,000 nodes about 600 MB of peers and records a node, 200,000
// signature checks (some 10 s of one core) at each cold start, and a
// route computation over 100,000 nodes at each tick with a change.
// Probing is what grows fastest: a new or restarted node is probed by
// every node (a ping a second, for up to a minute of idleness), and
// probes every node, so each join costs the network about 2N pings a
// second for a minute. Pushes and summaries go to every neighbour, which
// is cheap in a sparse graph and costs N-1 copies per change per node in
// a full mesh (a LAN where every node reaches every other). Up to a few
// thousand nodes per user this holds; at 100,000 it would not, and would
// change so: a node holds records only of the nodes it talks to (and
// pulls others on demand), summaries become a tree of range hashes (a
// difference found in log N exchanges, not one 41-byte entry per record
// of a range), pushes go to a bounded number of neighbours (gossip with
// fan-out k, summaries repairing the rest), probing only on traffic,
// and routes are computed per area rather than over the whole graph.
//
// # Testing timers
//
// Timers are tested on a synthetic clock, not by waiting. Each timer of the
// control plane (heartbeats, path expiry, probing, candidate expiry, ping
// and fragment timeouts, lazy WireGuard peers, clock skew) has a test on a
// clockRig (clockrig_test.go, timers_test.go): a node built without
// goroutines, whose Bind records what it sends, has its tick functions
// called at instants the test chooses and is answered by packets sealed as
// its peers would seal them; it holds however often the loop calls them.
// Code that waits on real timers (retries, backoff, inflight.go) and whole
// nodes run under testing/synctest: a node with an in-memory TUN
// (Config.tunDevice, tun/tuntest) over nat/natlab lives in a bubble, its
// loop and wireguard-go on the bubble's clock (bubble_test.go). A
// userspace node cannot: gVisor's netstack parks goroutines where synctest
// does not see them blocked, so multi-node tests over netstacks wait on
// conditions, bounded (waitFor). They build nodes with testNode or
// labNode (node_test.go), which also fail the test if goroutines it
// started outlive its cleanups (internal/leaktest). A test that asserts
// something did not happen looks after an event that proves it would have
// (a later ping answered, a refusal counted, a marker taken from the same
// queue), not after a sleep.
//
// # Choices (where the design left room)
//
//   - Control packets use their own Curve25519 key (not the WireGuard key),
//     sealed with NaCl box, as Tailscale's disco does: the two protocols never
//     share a Diffie-Hellman key.
//   - IPv4 addresses are picked by the admin node from a hash of the node key
//     with linear probing; IPv6 addresses need no allocation (ULA /48 of the
//     user key plus 80 bits of the node key).
//   - Certificates last the user's lifetime (a year unless its settings
//     document says otherwise) and are renewed by any admin at half of it;
//     expired peers are refused after a grace for clock skew (renew.go). A node's
//     keys are pinned by the certificate held for its id: a certificate that
//     gives a known id other keys, or another user, is refused whoever signed
//     it (Store reject "key-change"); only a revocation frees the id.
//   - Admins are the nodes whose certificate has the Admin flag; the user
//     key goes to a promoted node sealed to its control key (admins.go).
//     Two admins' concurrent versions of a user document are merged, not
//     refused: nodes keep the same one of two equal versions (UserDoc.Rank)
//     and the losing admin re-applies its edit, by lines, on the winner
//     (docmerge.go); a whole-text policy apply may name its base version
//     to be refused on a stale one instead.
//   - Heartbeats are fast only while a peer carries traffic (300 ms, dead
//     after 1 s unanswered) and slow when idle (10 s, dead after 25 s), so
//     idle nodes stay quiet and busy paths fail over in about a second.
//     Probing for a direct path to a peer without one is fast (1 s) while the
//     peer is new, has new candidates or carries traffic, slows to 5 s, and
//     stops after a minute of idleness: probing every peer all the time costs
//     N² packets. An idle peer behind relays gets no heartbeats; its route's
//     links are watched by their ends.
//   - A busy peer on a direct path keeps a second path warm: the best relay
//     route avoiding the direct link, pinged every 2 s (failover.go). When
//     the node sends into a direct path silent for 100 ms it heartbeats at
//     once, and with that standby proven the path is dead after 200 ms (3
//     RTT if longer) of silence rather than 1 s; the peer, hearing us
//     relayed while our direct path is silent, follows onto a relay route.
//     Idle peers keep no standby and get no timer for one.
//   - The control loop has no fixed tick: it sleeps until the next deadline
//     its state has (loop.go), at least 250 ms after its last tick and at
//     most 10 s; the data path wakes it when an idle peer gets traffic.
//     Slow periodic work (digests, beacons, info refresh) is done up to
//     2 s early when the loop is awake anyway, so timers fall in step.
//     Once nothing has changed for a minute (no record, path, route,
//     endpoint or peer), digests and beacons go every 30 s instead of 5 s:
//     an idle network has nothing to repair or find, any change brings
//     the fast pace back, and a newcomer's own fast beacons are answered.
//     An idle node with two idle peers ticks 2-3 times in 10 s, not 40, and
//     sends 28-30 datagrams a minute, not 48-60 (TestBubbleIdleTicks,
//     TestBubbleIdleChatter). cmd/glow runs with GODEBUG updatemaxprocs=0:
//     GOMAXPROCS is set from the CPU affinity and cgroup limit at start, not
//     re-read every second (a wake-up an idle daemon does not need).
//   - Only peers with traffic are WireGuard peers (lazywg.go), and at most
//     128 packets per direction are inside wireguard-go (inflight.go), so
//     memory grows neither with the peers known nor with the traffic.
//   - Control datagrams reach the loop through two bounded queues
//     (ctlqueue.go): one for known peers' control packets from their learned
//     addresses or authenticated links, drained first, and a small one for
//     everything else (strangers, beacons, STUN), rate limited per source
//     address. A flood from outsiders never delays a heartbeat, and the work
//     it causes is cheap first: another user's beacon is refused before its
//     signature is checked, a stranger's packet is opened (an X25519) only
//     while an invite code is live. What outsiders can make grow is capped:
//     32 candidates and 16 learned addresses per peer (the oldest unproven
//     go first), 256 certificates per friend user, 64 unauthenticated
//     connections on the link port (8 per address).
//   - User documents hold up to MaxDocBody (64 KiB); records that do not fit
//     one control packet go as fragments, each sealed on its own, paced per
//     peer, reassembled in bounded memory and verified whole; a lost
//     fragment is not asked for, since anti-entropy brings the record again.
//     Such records are announced and pulled rather than pushed, so each
//     node receives one about once. A document change is stored before it
//     takes effect, or refused.
//   - With a kernel TUN the node installs glow's nftables table
//     (tun/firewall) unless Config.NoFirewall: overlay addresses arriving
//     on any other interface are dropped; friends' /48s join it as they
//     are routed (routeFriendsLocked), Close removes it, RepairFirewall
//     removes one a crashed daemon left.
//   - Control packets are fresh exactly once: an epoch and a counter in the
//     box nonce and a replay window per peer, join and friend requests by
//     their time and a bounded nonce cache (replay.go); beacons are signed
//     and timed (beacon.go). Candidates from unauthenticated sources get no
//     more bytes than they sent and at most maxUnprovenProbes pings; a
//     friend's signed endpoints that never answered share a probe budget
//     per friend user (friendprobe.go).
//     Endpoints that no peer should probe (loopback outside a lab whose host
//     addresses are loopback, link-local, multicast, unspecified, our own)
//     are neither taken nor published; pongs' "seen" addresses are hints,
//     capped, after the endpoints the node verified.
//   - Without Config.Port a node takes DefaultPort (or the port it moved to,
//     state file "port") and moves to one the OS picks when a LAN beacon
//     shows another glow node on it: behind one NAT the two would share a
//     public port and one get a per-destination substitute. The newer
//     member moves (or we, after portClashGrace, if the other is pinned);
//     same LAN is taken for same NAT rather than waiting for STUN. At most
//     one move per 10 minutes (portclash.go).
//   - A peer that speaks (an authenticated ping) from a new address is
//     followed once a pong proves the address and either it restarted or
//     its current path left a heartbeat unanswered for heartbeatActive,
//     which the node then sends at once; a second working address does not
//     move the path (roam.go).
//   - A friend learns the node it talks to and the nodes the policy shares
//     with it, nothing else; a relay forwards between a friend's node and
//     ours, never between two nodes of another user.
//   - A friend's certificate may claim any IPv4 address (each user
//     allocates its own): one that our node (or another friend's) holds is
//     not routed to the friend at all, and status lists the conflict; the
//     friend stays reachable over IPv6, whose /48 is per user.
//   - A friend's revocation list (signed by its user key) is gossiped to us
//     and honoured for that friend's nodes only: a friend cannot revoke our
//     nodes or a third user's. Ours goes to friends for the same reason; it
//     holds node ids, no names.
//   - A relay frame's header is not signed, so a node takes one only from
//     a peer's proven path (an address a pong answered from, a stream link
//     whose handshake proved the peer), and only if that neighbour may send
//     it: its source on the first hop (the hop limit still at 8, the most a
//     sender may start with), else a node of ours or of the source's user
//     (package relay). Refusals show in `glow status --json` as relay/*.
//   - A plain WireGuard device (glow device add) is a line of a user
//     document (member.KindDevices), not a certificate: it has no control
//     key and never gossips; the via node recognises its handshake from any
//     address by opening the initiation itself (devicewg.go), and the rest
//     of the user's nodes route its addresses to the via node as allowed
//     IPs of that peer. A friend learns nothing of devices.
package overlay
