// Package dns is glow's MagicDNS: a small resolver that answers
// NODE.USER.glow with a node's overlay addresses, and everything else by
// forwarding to the resolvers the system had before glow, plus the code that
// points the operating system at it and puts things back afterwards.
//
// # Use
//
// The overlay supplies the names, through the [Names] interface (or by
// filling a [Table]), and serves on the fixed service addresses it puts on its
// TUN interface:
//
//	names := new(dns.Table)
//	names.Set(dns.Host{User: "alice", Node: "nas", V4: v4, V6: v6})
//	ups, err := dns.Apply(dns.OSConfig{StateDir: dir, Interface: "glow0",
//		SearchDomains: []string{"alice.glow"}})
//	srv, err := dns.New(dns.Config{SelfUser: "alice", Names: names, Upstreams: ups})
//	go srv.ListenAndServe(ctx, []netip.AddrPort{
//		netip.AddrPortFrom(dns.ServiceV4, 53), netip.AddrPortFrom(dns.ServiceV6, 53)})
//	...
//	dns.Restore(osCfg)
//
// # What it answers
//
//   - NODE.USER.SUFFIX: A and AAAA from Names, case-insensitively, echoing
//     the query's case. An unknown node is NXDOMAIN with an SOA in the
//     authority section; a known node without an address of the asked
//     family, and USER.SUFFIX and SUFFIX themselves, are NODATA (NOERROR, no
//     answer, SOA). Answers carry [TTL] (30 s).
//   - A single label ("nas") is NODE.SELFUSER.SUFFIX when that node exists;
//     the search domain normally turns "nas" into "nas.alice.glow" first,
//     but programs that skip the search list work too.
//   - PTR for overlay addresses (in-addr.arpa and ip6.arpa) gives
//     NODE.USER.SUFFIX. An unknown address inside the overlay's ranges
//     (Config.Prefixes) is NXDOMAIN; any other reverse name is forwarded.
//   - Everything else goes to Config.Upstreams in order (while the overlay
//     uses an exit node: to the exit node's resolver instead, never to
//     Config.Upstreams; [Server.SetExitUpstreams]), each given ~2 s,
//     over the client's transport; a truncated UDP answer is retried over
//     TCP. All failing: SERVFAIL. No upstreams: REFUSED.
//   - Only loopback and overlay clients (Config.Prefixes and the service
//     addresses) are served; queries from anyone else are dropped and
//     counted ([Server.ClientAllowed], Stats.DropClient), so a LAN host
//     that routes the service address at this machine learns nothing.
//   - Malformed or oversized queries get FORMERR when a header can be read,
//     else they are dropped and counted ([Stats]). A UDP reply larger than
//     the client's limit (512, or its EDNS0 size) is truncated with TC set.
//
// # Why this shape
//
// The resolver knows nothing of records, certificates or gossip: the
// overlay owns them and hands over a two-method interface whose answers
// can change between any two queries, so nothing here caches and there is no
// update protocol to get wrong. The sockets are passed in ([Server.ServeUDP],
// [Server.ServeTCP]) and upstreams are reached through Config.Dial, so the
// same server runs on kernel sockets, on a userspace network stack, and in
// tests over loopback. [Server.Handle] is the whole decision as one function
// of a message, which is what the fuzz test and the benchmarks drive.
//
// Design choices, following Tailscale's MagicDNS where it fits:
//
//   - Fixed service addresses ([ServiceV4] 100.100.100.53, [ServiceV6]
//     fd00:676c:6f77::53) rather than the node's own overlay address, so
//     resolv.conf never changes when addresses do, and glow and Tailscale
//     (100.100.100.100) can run side by side.
//   - Glow names are answered without blocking, in the UDP read loop
//     itself; only forwarded queries get a goroutine, bounded in number.
//     Each forward uses a fresh socket and random id; a reply must match
//     both id and question.
//   - An upstream SERVFAIL or REFUSED moves on to the next upstream but is
//     passed on if no upstream does better.
//   - On the OS side, systemd-resolved gets split DNS (only ~SUFFIX and the
//     search domains come to glow, the machine's other DNS is untouched);
//     without it resolv.conf is rewritten, with an exact backup kept in the
//     state directory beside a marker holding the hash of what glow wrote.
//     Restore puts the original back only while glow's file is still there,
//     so it never clobbers a newer file written by DHCP or the user, and a
//     run after a crash restores before it backs up, so the backup is
//     always the user's file and never glow's.
//   - resolv.conf may be a bind mount (ip netns exec), where the atomic
//     rename fails with EBUSY; then it is rewritten in place.
//
// [Lookup] is a stub resolver for the userspace proxy, which asks the exit
// node's resolver through the tunnel.
//
// Left out: DNS over TLS/HTTPS upstreams, caching of forwarded answers,
// SRV/TXT for announced services, watching resolv.conf for changes made
// while glow runs, and NetworkManager or resolvconf(8) integration (those
// systems are handled by replacing the file they manage).
package dns
