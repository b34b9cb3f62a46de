package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"glow/dns/dnstest"
	"glow/internal/leaktest"
)

// TestExitUpstreams: while an exit node is in use, names that are not
// glow's go to its resolver only; with the exit node chosen but unknown
// they get SERVFAIL and the local upstream sees nothing; off, the local
// upstream again.
func TestExitUpstreams(t *testing.T) {
	leaktest.Check(t)
	local := dnstest.NewUpstream(t, dnstest.Options{})
	exit := dnstest.NewUpstream(t, dnstest.Options{})
	ts := startServer(t, Config{Upstreams: []netip.AddrPort{local.Addr}})

	ts.SetExitUpstreams(true, []netip.AddrPort{exit.Addr})
	if m := ts.query(t, "udp", "example.com.", dns.TypeA); m.Rcode != dns.RcodeSuccess {
		t.Errorf("through the exit node: %s", summary(m))
	}
	if e, l := exit.UDP.Load(), local.UDP.Load(); e != 1 || l != 0 {
		t.Errorf("exit node's resolver saw %d, local %d queries; want 1, 0", e, l)
	}
	ts.query(t, "udp", "nas.alice.glow.", dns.TypeA) // glow's own: answered here
	if e := exit.UDP.Load(); e != 1 {
		t.Errorf("a glow name went to the exit node's resolver (%d queries)", e)
	}

	ts.SetExitUpstreams(true, nil) // chosen, but unknown: fail closed
	if m := ts.query(t, "tcp", "example.com.", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("exit node unknown: %s, want SERVFAIL", summary(m))
	}
	if l := local.UDP.Load() + local.TCP.Load(); l != 0 {
		t.Errorf("exit node unknown: the local upstream saw %d queries (leaked)", l)
	}

	ts.SetExitUpstreams(false, nil)
	ts.query(t, "udp", "example.com.", dns.TypeA)
	if l := local.UDP.Load(); l != 1 {
		t.Errorf("exit node off: the local upstream saw %d queries, want 1", l)
	}
}

// TestLookup: the userspace proxy's stub resolver gets A records, and
// NXDOMAIN as ErrNoHost.
func TestLookup(t *testing.T) {
	leaktest.Check(t)
	up := dnstest.NewUpstream(t, dnstest.Options{})
	var d net.Dialer
	addrs, err := Lookup(context.Background(), d.DialContext, up.Addr, "example.com")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("Lookup example.com = %v, %v; want [192.0.2.1]", addrs, err)
	}
	ts := startServer(t, Config{})
	srv := netip.MustParseAddrPort(ts.addr)
	if _, err := Lookup(context.Background(), d.DialContext, srv, "ghost.alice.glow"); !errors.Is(err, ErrNoHost) {
		t.Errorf("Lookup of an unknown glow name: %v, want ErrNoHost", err)
	}
	if _, err := Lookup(context.Background(), d.DialContext, srv, "a..b"); err == nil {
		t.Errorf("Lookup of %q: no error", "a..b")
	}
}
