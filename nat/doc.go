// Package nat finds out how a glow node can be reached from the Internet:
// its public endpoints as seen through STUN, how its NAT maps ports, and the
// list of endpoint candidates that peers should probe when they punch holes.
//
// # What
//
//   - [IsSTUN], [Respond]: the STUN server side. Every glow node with a public
//     address answers STUN Binding requests on its glow port, so any public
//     node can serve as a STUN server for the others (no central server).
//     It answers only requests at least as large as the answer (glow's
//     client pads its requests with SOFTWARE), so it is no amplifier.
//   - [Client]: the STUN client side. [Client.Probe] asks several servers in
//     parallel and returns a [Report]: the reflexive (public) endpoints seen,
//     whether the mapping is endpoint-independent or varies with the
//     destination, and the round-trip time to each server. That is what
//     `glow netcheck` prints and what path selection needs to decide whether
//     hole punching can work.
//   - [Candidates], [InterfaceAddrs]: the endpoint candidates a node
//     advertises (local interface addresses, STUN reflexive, port-mapped).
//   - Package natlab (glow/nat/natlab): an in-memory Internet with RFC 4787
//     NAT gateways, for testing all of the above and the node's hole
//     punching without a real network.
//
// # How
//
// STUN must run on the node's own UDP socket: the public port that STUN
// reports is only useful if it is the port WireGuard traffic leaves from.
// So this package owns no socket. The socket owner (the overlay's Bind)
// demultiplexes each received datagram:
//
//	n, from := sock.ReadFrom(buf)
//	switch {
//	case nat.IsSTUN(buf[:n]):
//		if client.HandleResponse(buf[:n], from) {
//			break // an answer to one of our probes
//		}
//		if resp, ok := nat.Respond(buf[:n], from); ok {
//			sock.WriteTo(resp, from)
//		}
//	case ...: // WireGuard, glow control
//	}
//
// and the [Client] sends its requests through the injected
// [ClientConfig.Send], which writes to that same socket.
//
// # Why this shape
//
// The client is passive (no goroutine, no socket of its own): responses are
// pushed in by the socket owner, and [Client.Probe] owns the only goroutines
// (one per server) and waits for them before it returns. Time comes from
// [ClientConfig.Now] and timers, so tests run under testing/synctest or
// against natlab with a fake clock. STUN encoding and decoding is left to
// github.com/pion/stun; this package adds the demux check, strict input
// validation (every byte here comes from the network and is fuzzed), and the
// RFC 4787 interpretation of the answers.
//
// Mapping behaviour is judged from servers with different IP addresses: a
// NAT with address-dependent mapping gives one public port per destination
// IP, which two servers on one IP cannot reveal. Tailscale's netcheck makes
// the same call ("MappingVariesByDestIP").
//
// Each retransmission uses a fresh transaction ID (RFC 5389 reuses one): the
// client then knows which attempt an answer belongs to, so the latency it
// reports is a true round trip even after a loss.
package nat
