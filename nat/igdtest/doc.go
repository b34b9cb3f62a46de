// Package igdtest is a fake Internet gateway device for tests: it answers
// NAT-PMP (RFC 6886) and PCP (RFC 6887) requests over UDP, and UPnP-IGD
// discovery (SSDP over UDP) plus the SOAP control calls of a
// WANIPConnection:1 service over HTTP, keeps a table of the port mappings
// it granted, and counts every request per protocol so that tests can
// assert what a client sent.
//
// # How
//
//	gw, err := igdtest.New(igdtest.Options{Addr: gwIP, PMP: true})
//	defer gw.Close()
//	... run the port mapping client against gwIP ...
//	c := gw.Counters()   // c.PMPMap == 1, c.PMPDelete == 1 after release
//	gw.Mappings()        // the mappings currently granted
//
// Each protocol is switched on by its Options field; a switched-off
// protocol is silent (its requests are still counted, as Ignored), like a
// router that lacks it. The fake maps every request it accepts, never
// forwards a packet, and gives out the external address Options.ExternalIP.
//
// # Why this shape
//
// A client such as tailscale.com/net/portmapper (used by glow/nat) talks to
// the gateway found in the routing table on the well-known ports: 5351 for
// NAT-PMP and PCP, 1900 for SSDP. Its test hooks for other ports are
// unexported, so the fake listens on any address and on those ports by
// default (Options.PXPPort and SSDPPort change them, for clients that can
// be pointed elsewhere). A test of such a client runs in a network
// namespace it creates, with the fake on an address of that namespace, so
// that the client's SSDP multicast and its requests never leave the
// machine and never reach a real router (see glow/nat's portmap tests).
//
// The protocol code is deliberately small and strict about lengths but
// lenient about content: it is a test double, not a router. Its shape
// follows the fake IGD in tailscale's net/portmapper tests (one UDP socket
// for NAT-PMP and PCP, one for SSDP, an HTTP server for the device
// description and SOAP control), with mappings kept and deletes counted so
// that a client's release can be checked.
package igdtest
