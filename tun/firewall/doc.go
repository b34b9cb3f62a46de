// Package firewall keeps the underlay out of the overlay: glow's own
// nftables table drops every packet with an overlay address as its source or
// its destination that arrives on any interface but glow's TUN (or loopback).
//
// Without it a LAN neighbour can route 100.64.0.0/10 or a user's ULA /48 at a
// glow node's LAN address and reach what listens on the overlay addresses
// (MagicDNS included), or forge an overlay source address that the node's
// programs then take for a peer (IPv6 has no reverse-path filter, and IPv4's
// is often off). Tailscale's ts-input chain does the same for 100.64.0.0/10.
//
// # Use
//
//	fw, err := firewall.Install(firewall.Config{Interface: "glow0",
//		Prefixes: []netip.Prefix{v4Range, userULA, serviceULA}})
//	fw.SetPrefixes(more)  // e.g. friends' /48s as they become known
//	fw.Close()            // removes the table
//
//	firewall.RemoveStale() // after a crash: removes a table whose interface is gone
//
// # The rule set
//
// One table, `inet glow` ([Table]), one base chain at the prerouting hook with
// raw priority (-300, before conntrack, so forged packets create no state;
// and before routing, so both packets for this host and packets it would
// forward are covered), policy accept:
//
//	iifname "glow0" accept
//	iifname "lo" accept
//	ip saddr 100.64.0.0/10 fib saddr . iif oif missing counter drop
//	ip daddr 100.64.0.0/10 fib daddr . iif type != local counter drop
//	ip6 saddr fdxx:xxxx:xxxx::/48 counter drop   (and daddr; each IPv6 prefix)
//
// The fib conditions are for carrier-grade NAT, which uses 100.64.0.0/10
// too: a host whose WAN address is 100.72.5.9/20 keeps receiving on that
// address (it is the incoming interface's own) and from its neighbours in
// that /20 (the more specific route leads back out the same interface),
// while the overlay's addresses, and forged sources that route into glow's
// interface, are still dropped. Tailscale's chain drops the whole /10 and
// cuts such hosts off their CGNAT neighbours. IPv6 needs no such care: the
// ULA /48s are glow's own.
//
// The counters count what was dropped, by rule (`nft list table inet glow`).
// Everything else is left to the machine's own firewall: glow only removes
// the way in that its interface opened.
//
// # Why this shape
//
// The table is built through netlink with github.com/google/nftables, not by
// running nft(8): no dependency on a program being installed, errors come
// back per message, and the whole table is replaced in one atomic batch
// (add table, delete table, add table, chain, rules), so there is never a
// moment without rules while they change. The rules are built by a pure
// function ([Rules]) that the tests read back without root.
//
// The table outlives a crashed daemon (nothing in the kernel ties it to the
// process). That is the safe way to fail: the overlay stays closed to the
// LAN. The TUN interface, on the other hand, dies with the process, so a
// table whose interface is gone is stale: [RemoveStale] deletes it (glow
// down runs it when no daemon answers), and [Install] replaces a table that
// names its own interface. A table that names another interface that still
// exists belongs to another daemon and is an error, never overwritten.
//
// There is one glow table per network namespace, as there is one kernel-TUN
// glow daemon per namespace (two would both claim 100.64.0.0/10).
package firewall
