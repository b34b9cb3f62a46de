package policy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"glow/internal/leaktest"
	"glow/internal/pkttest"
)

// mapDir is a Directory over a fixed map.
type mapDir map[netip.Addr]Principal

func (d mapDir) Lookup(ip netip.Addr) (Principal, bool) {
	p, ok := d[ip]
	return p, ok
}

var (
	nas     = netip.MustParseAddr("100.64.0.1")
	desk    = netip.MustParseAddr("100.64.0.2")
	laptop  = netip.MustParseAddr("100.64.1.1")
	phone   = netip.MustParseAddr("100.64.1.2")
	carolPC = netip.MustParseAddr("100.64.2.1")
	daveX   = netip.MustParseAddr("100.64.3.1")
	ciBox   = netip.MustParseAddr("100.64.4.1")
	nobody  = netip.MustParseAddr("100.64.9.9")
	nas6    = netip.MustParseAddr("fd7a::1")
	laptop6 = netip.MustParseAddr("fd7a::b1")
	dave6   = netip.MustParseAddr("fd7a::d1")

	nasAddrs = []netip.Addr{nas, nas6} // the node the tests' filter runs on

	testDir = mapDir{
		nas:     {User: "alice", Node: "nas"},
		nas6:    {User: "alice", Node: "nas"},
		desk:    {User: "alice", Node: "desk"},
		laptop:  {User: "bob", Node: "laptop"},
		laptop6: {User: "bob", Node: "laptop"},
		phone:   {User: "bob", Node: "phone"},
		carolPC: {User: "carol", Node: "pc"},
		daveX:   {User: "dave", Node: "x"},
		dave6:   {User: "dave", Node: "x"},
		ciBox:   {User: "erin", Node: "runner", Tags: []string{"ci"}},
	}
)

const testPolicy = `
group friends = bob, carol
tag web = nas, desk
tag ci =
allow bob -> nas:8080/tcp
allow group:friends -> tag:web:80,443/tcp
allow bob/laptop -> nas:icmp
allow carol -> desk:5000-5010/udp
allow carol -> nas:53/udp
allow tag:ci -> nas:22/tcp
`

func compile(t testing.TB, text string) *Rules {
	t.Helper()
	d, err := Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compile(d, CompileConfig{Owner: "alice", Self: "nas", Directory: testDir, Addrs: nasAddrs})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newFilter(t testing.TB, text string) *Filter {
	t.Helper()
	f, err := NewFilter(compile(t, text), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var t0 = time.Unix(1_700_000_000, 0)

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func expect(t *testing.T, got Verdict, allow bool, reason Reason, what string) {
	t.Helper()
	if got.Allow != allow || got.Reason != reason {
		t.Errorf("%s: got %v, want allow=%v %v", what, got, allow, reason)
	}
}

func TestInboundRules(t *testing.T) {
	f := newFilter(t, testPolicy)
	for _, tc := range []struct {
		name   string
		pkt    []byte
		allow  bool
		reason Reason
	}{
		{"bob tcp 8080", pkttest.TCP(ap(laptop, 40000), ap(nas, 8080), pkttest.SYN, nil), true, ReasonOK},
		{"bob phone tcp 8080", pkttest.TCP(ap(phone, 40000), ap(nas, 8080), pkttest.SYN, nil), true, ReasonOK},
		{"bob via group 443", pkttest.TCP(ap(phone, 40000), ap(nas, 443), pkttest.SYN, nil), true, ReasonOK},
		{"carol via group 80", pkttest.TCP(ap(carolPC, 40000), ap(nas, 80), pkttest.SYN, nil), true, ReasonOK},
		{"carol udp 53", pkttest.UDP(ap(carolPC, 40000), ap(nas, 53), nil), true, ReasonOK},
		{"ci tag 22", pkttest.TCP(ap(ciBox, 40000), ap(nas, 22), pkttest.SYN, nil), true, ReasonOK},
		{"own desk any", pkttest.UDP(ap(desk, 1), ap(nas, 9), nil), true, ReasonOwn},
		{"own desk other proto", pkttest.IP(desk, nas, 47, []byte{1, 2, 3, 4}), true, ReasonOwn},
		{"bob wrong port", pkttest.TCP(ap(laptop, 40000), ap(nas, 8081), pkttest.SYN, nil), false, ReasonNotShared},
		{"bob wrong proto", pkttest.UDP(ap(laptop, 40000), ap(nas, 8080), nil), false, ReasonNotShared},
		{"carol wrong node (5000 is desk's)", pkttest.UDP(ap(carolPC, 40000), ap(nas, 5000), nil), false, ReasonNotShared},
		{"carol 8080 is bob's", pkttest.TCP(ap(carolPC, 40000), ap(nas, 8080), pkttest.SYN, nil), false, ReasonNotShared},
		{"dave other user", pkttest.TCP(ap(daveX, 40000), ap(nas, 80), pkttest.SYN, nil), false, ReasonNotShared},
		{"dave other proto", pkttest.IP(daveX, nas, 47, []byte{1, 2, 3, 4}), false, ReasonNotShared},
		{"ping from bob laptop", pkttest.Echo(laptop, nas, false, 1, 1), true, ReasonOK},
		{"ping from bob phone", pkttest.Echo(phone, nas, false, 1, 1), false, ReasonNotShared},
		{"ping from dave", pkttest.Echo(daveX, nas, false, 1, 1), false, ReasonNotShared},
		{"unknown source", pkttest.TCP(ap(nobody, 40000), ap(nas, 8080), pkttest.SYN, nil), false, ReasonUnknownSource},
		{"unsolicited echo reply", pkttest.Echo(laptop, nas, true, 9, 1), false, ReasonUnsolicited},
		{"unsolicited tcp ack", pkttest.TCP(ap(daveX, 22), ap(nas, 40000), pkttest.ACK, nil), false, ReasonNotShared},
		{"ipv6 bob 8080", pkttest.TCP(ap(laptop6, 40000), ap(nas6, 8080), pkttest.SYN, nil), true, ReasonOK},
		{"ipv6 bob 22", pkttest.TCP(ap(laptop6, 40000), ap(nas6, 22), pkttest.SYN, nil), false, ReasonNotShared},
		{"ipv6 ping bob", pkttest.Echo(laptop6, nas6, false, 1, 1), true, ReasonOK},
		{"ipv6 dave", pkttest.UDP(ap(dave6, 1), ap(nas6, 53), nil), false, ReasonNotShared},
		{"ipv6 hop-by-hop", pkttest.InsertIPv6Ext(pkttest.TCP(ap(laptop6, 1), ap(nas6, 8080), pkttest.SYN, nil), pkttest.HopByHop), true, ReasonOK},
		{"ipv6 dest opts wrong port", pkttest.InsertIPv6Ext(pkttest.TCP(ap(laptop6, 1), ap(nas6, 22), pkttest.SYN, nil), pkttest.DestOpts), false, ReasonNotShared},
		{"ipv6 routing+hbh", pkttest.InsertIPv6Ext(pkttest.InsertIPv6Ext(pkttest.TCP(ap(laptop6, 1), ap(nas6, 8080), pkttest.SYN, nil), pkttest.Routing), pkttest.HopByHop), true, ReasonOK},
	} {
		expect(t, f.Inbound(tc.pkt, t0), tc.allow, tc.reason, tc.name)
	}
}

func TestReplies(t *testing.T) {
	f := newFilter(t, testPolicy)
	// nas opens connections to dave, who may not reach nas on his own.
	for _, tc := range []struct {
		name     string
		out, in  []byte
		stranger []byte // same remote, a different flow
	}{
		{"tcp",
			pkttest.TCP(ap(nas, 50000), ap(daveX, 22), pkttest.SYN, nil),
			pkttest.TCP(ap(daveX, 22), ap(nas, 50000), pkttest.SYN|pkttest.ACK, nil),
			pkttest.TCP(ap(daveX, 22), ap(nas, 50001), pkttest.SYN|pkttest.ACK, nil)},
		{"udp",
			pkttest.UDP(ap(nas, 50000), ap(daveX, 53), nil),
			pkttest.UDP(ap(daveX, 53), ap(nas, 50000), nil),
			pkttest.UDP(ap(daveX, 54), ap(nas, 50000), nil)},
		{"icmp echo",
			pkttest.Echo(nas, daveX, false, 77, 1),
			pkttest.Echo(daveX, nas, true, 77, 1),
			pkttest.Echo(daveX, nas, true, 78, 1)},
		{"ipv6 tcp",
			pkttest.TCP(ap(nas6, 50000), ap(dave6, 22), pkttest.SYN, nil),
			pkttest.TCP(ap(dave6, 22), ap(nas6, 50000), pkttest.SYN|pkttest.ACK, nil),
			pkttest.TCP(ap(dave6, 23), ap(nas6, 50000), pkttest.SYN|pkttest.ACK, nil)},
		{"ipv6 echo",
			pkttest.Echo(nas6, dave6, false, 5, 1),
			pkttest.Echo(dave6, nas6, true, 5, 1),
			pkttest.Echo(dave6, nas6, true, 6, 1)},
	} {
		v := f.Inbound(tc.in, t0)
		if v.Allow {
			t.Errorf("%s: reply before request allowed: %v", tc.name, v)
		}
		expect(t, f.Outbound(tc.out, t0), true, ReasonOutbound, tc.name+" out")
		expect(t, f.Inbound(tc.in, t0.Add(time.Second)), true, ReasonReply, tc.name+" reply")
		if v := f.Inbound(tc.stranger, t0.Add(time.Second)); v.Allow {
			t.Errorf("%s: other flow allowed: %v", tc.name, v)
		}
		// Idle past every timeout: the flow is gone.
		if v := f.Inbound(tc.in, t0.Add(3*time.Hour)); v.Allow {
			t.Errorf("%s: reply after expiry allowed: %v", tc.name, v)
		}
	}
}

func TestUnshareCutsInboundFlow(t *testing.T) {
	f := newFilter(t, testPolicy)
	syn := pkttest.TCP(ap(laptop, 40000), ap(nas, 8080), pkttest.SYN, nil)
	synack := pkttest.TCP(ap(nas, 8080), ap(laptop, 40000), pkttest.SYN|pkttest.ACK, nil)
	ack := pkttest.TCP(ap(laptop, 40000), ap(nas, 8080), pkttest.ACK, []byte("GET /"))
	data := pkttest.TCP(ap(nas, 8080), ap(laptop, 40000), pkttest.ACK, []byte("200 OK"))
	now := t0
	expect(t, f.Inbound(syn, now), true, ReasonOK, "syn")
	expect(t, f.Outbound(synack, now), true, ReasonOutbound, "syn-ack")
	expect(t, f.Inbound(ack, now), true, ReasonOK, "ack (a remote flow is not a reply)")
	expect(t, f.Outbound(data, now), true, ReasonOutbound, "data")

	// Unshare: the rule goes and the open connection with it.
	d, _ := Parse([]byte(testPolicy))
	tg, _ := ParseShareTarget("nas:8080/tcp")
	if !d.Unshare("bob", tg) {
		t.Fatal("unshare failed")
	}
	r, err := Compile(d, CompileConfig{Owner: "alice", Self: "nas", Directory: testDir, Addrs: nasAddrs})
	if err != nil {
		t.Fatal(err)
	}
	f.SetRules(r)
	expect(t, f.Inbound(ack, now), false, ReasonNotShared, "ack after unshare")
	// Our side keeps sending: that must not turn the flow into ours.
	expect(t, f.Outbound(data, now), true, ReasonOutbound, "data after unshare")
	expect(t, f.Inbound(ack, now), false, ReasonNotShared, "ack after our data")
	// Even with the flow entry gone (expired), our data does not open it.
	later := now.Add(3 * time.Hour)
	expect(t, f.Outbound(synack, later), true, ReasonOutbound, "syn-ack after expiry")
	expect(t, f.Inbound(ack, later), false, ReasonNotShared, "ack after syn-ack after expiry")
}

func TestReplyOfInboundUDPDoesNotOpen(t *testing.T) {
	f := newFilter(t, testPolicy)
	q := pkttest.UDP(ap(carolPC, 40000), ap(nas, 53), []byte("query"))
	a := pkttest.UDP(ap(nas, 53), ap(carolPC, 40000), []byte("answer"))
	expect(t, f.Inbound(q, t0), true, ReasonOK, "query")
	expect(t, f.Outbound(a, t0), true, ReasonOutbound, "answer")
	f.SetRules(compile(t, "")) // everything unshared
	expect(t, f.Inbound(q, t0), false, ReasonNotShared, "query after unshare")
	// With the entry expired, a late answer while carol may still query
	// records the flow as carol's, so unsharing later still cuts it.
	f.SetRules(compile(t, testPolicy))
	later := t0.Add(10 * time.Minute)
	expect(t, f.Outbound(a, later), true, ReasonOutbound, "late answer")
	f.SetRules(compile(t, ""))
	expect(t, f.Inbound(q, later), false, ReasonNotShared, "query after late answer and unshare")
}

func TestFragments(t *testing.T) {
	f := newFilter(t, testPolicy)
	big := make([]byte, 3000)
	frags := pkttest.FragmentIPv4(pkttest.UDP(ap(carolPC, 40000), ap(nas, 53), big), 1200, 42)
	if len(frags) != 3 {
		t.Fatalf("%d fragments", len(frags))
	}
	// Later fragment before the first: no.
	expect(t, f.Inbound(frags[1], t0), false, ReasonFragmentUnmatched, "orphan")
	expect(t, f.Inbound(frags[0], t0), true, ReasonOK, "first")
	expect(t, f.Inbound(frags[1], t0), true, ReasonFragment, "second")
	expect(t, f.Inbound(frags[2], t0), true, ReasonFragment, "third")
	expect(t, f.Inbound(frags[2], t0.Add(time.Minute)), false, ReasonFragmentUnmatched, "after timeout")

	// A denied first fragment lets no later fragment through.
	denied := pkttest.FragmentIPv4(pkttest.UDP(ap(daveX, 40000), ap(nas, 53), big), 1200, 43)
	expect(t, f.Inbound(denied[0], t0), false, ReasonNotShared, "denied first")
	expect(t, f.Inbound(denied[1], t0), false, ReasonFragmentUnmatched, "denied second")
	// Same id, other source.
	spoof := pkttest.FragmentIPv4(pkttest.UDP(ap(daveX, 40000), ap(nas, 53), big), 1200, 42)
	expect(t, f.Inbound(spoof[1], t0), false, ReasonFragmentUnmatched, "other source same id")

	// IPv6.
	f6 := pkttest.FragmentIPv6(pkttest.TCP(ap(laptop6, 40000), ap(nas6, 8080), pkttest.ACK, big), 1000, 7)
	expect(t, f.Inbound(f6[2], t0), false, ReasonFragmentUnmatched, "v6 orphan")
	expect(t, f.Inbound(f6[0], t0), true, ReasonOK, "v6 first")
	expect(t, f.Inbound(f6[1], t0), true, ReasonFragment, "v6 second")
	f6d := pkttest.FragmentIPv6(pkttest.TCP(ap(laptop6, 40000), ap(nas6, 22), pkttest.ACK, big), 1000, 8)
	expect(t, f.Inbound(f6d[0], t0), false, ReasonNotShared, "v6 denied first")
	expect(t, f.Inbound(f6d[1], t0), false, ReasonFragmentUnmatched, "v6 denied second")

	// A single fragment that is the whole datagram is just a packet.
	whole := pkttest.FragmentIPv6(pkttest.TCP(ap(laptop6, 1), ap(nas6, 8080), pkttest.SYN, nil), 1000, 9)
	expect(t, f.Inbound(whole[0], t0), true, ReasonOK, "v6 atomic fragment")

	// Tiny TCP fragment at offset 8 bytes (RFC 1858).
	tcpFr := pkttest.FragmentIPv4(pkttest.TCP(ap(laptop, 1), ap(nas, 8080), pkttest.ACK, big), 8, 44)
	expect(t, f.Inbound(tcpFr[1], t0), false, ReasonMalformed, "offset-1 tcp fragment")

	// Own nodes' fragments always pass.
	own := pkttest.FragmentIPv4(pkttest.UDP(ap(desk, 1), ap(nas, 2), big), 1200, 45)
	expect(t, f.Inbound(own[1], t0), true, ReasonOwn, "own fragment")
}

func TestICMPErrors(t *testing.T) {
	f := newFilter(t, testPolicy)
	out := pkttest.UDP(ap(nas, 50000), ap(daveX, 9999), []byte("hi"))
	unreach := pkttest.Unreachable(daveX, nas, out)
	expect(t, f.Inbound(unreach, t0), false, ReasonICMPErrorUnmatched, "error before flow")
	f.Outbound(out, t0)
	expect(t, f.Inbound(unreach, t0), true, ReasonRelated, "error about our flow")

	// An error quoting a packet we never sent.
	fake := pkttest.Unreachable(daveX, nas, pkttest.UDP(ap(nas, 50001), ap(daveX, 9999), nil))
	expect(t, f.Inbound(fake, t0), false, ReasonICMPErrorUnmatched, "error about no flow")
	// An error quoting a packet that was not from us.
	notOurs := pkttest.Unreachable(daveX, nas, pkttest.UDP(ap(desk, 50000), ap(daveX, 9999), nil))
	expect(t, f.Inbound(notOurs, t0), false, ReasonICMPErrorUnmatched, "error quoting another source")
	// Truncated quote: 8 bytes of UDP are enough; fewer are not.
	short := pkttest.Unreachable(daveX, nas, out[:28])
	expect(t, f.Inbound(short, t0), true, ReasonRelated, "error with short quote")
	tooShort := pkttest.Unreachable(daveX, nas, out[:24])
	expect(t, f.Inbound(tooShort, t0), false, ReasonICMPErrorUnmatched, "error with cut quote")

	// ICMPv6 packet too big about our TCP flow, and about our ping.
	syn6 := pkttest.TCP(ap(nas6, 50000), ap(dave6, 443), pkttest.SYN, nil)
	f.Outbound(syn6, t0)
	ptb := pkttest.ICMPError(dave6, nas6, pkttest.ICMPv6PacketTooBig, 0, syn6)
	expect(t, f.Inbound(ptb, t0), true, ReasonRelated, "v6 too big")
	ping := pkttest.Echo(nas, daveX, false, 3, 1)
	f.Outbound(ping, t0)
	te := pkttest.ICMPError(daveX, nas, pkttest.ICMPv4TimeExceeded, 0, ping)
	expect(t, f.Inbound(te, t0), true, ReasonRelated, "time exceeded for our ping")

	// Errors about a flow bob opened pass while bob may still reach it.
	syn := pkttest.TCP(ap(laptop, 40000), ap(nas, 8080), pkttest.SYN, nil)
	synack := pkttest.TCP(ap(nas, 8080), ap(laptop, 40000), pkttest.SYN|pkttest.ACK, nil)
	f.Inbound(syn, t0)
	f.Outbound(synack, t0)
	errAbout := pkttest.Unreachable(laptop, nas, synack)
	expect(t, f.Inbound(errAbout, t0), true, ReasonRelated, "error about bob's flow")
	f.SetRules(compile(t, ""))
	expect(t, f.Inbound(errAbout, t0), false, ReasonNotShared, "error about bob's flow after unshare")
}

func TestMalformed(t *testing.T) {
	f := newFilter(t, testPolicy)
	good := [][]byte{
		pkttest.TCP(ap(laptop, 40000), ap(nas, 8080), pkttest.SYN, nil),
		pkttest.UDP(ap(carolPC, 40000), ap(nas, 53), nil),
		pkttest.Echo(laptop, nas, false, 1, 1),
		pkttest.TCP(ap(laptop6, 40000), ap(nas6, 8080), pkttest.SYN, nil),
		pkttest.InsertIPv6Ext(pkttest.UDP(ap(laptop6, 1), ap(nas6, 2), nil), pkttest.DestOpts),
	}
	for _, p := range good {
		for n := range len(p) {
			if v := f.Inbound(p[:n], t0); v.Allow || v.Reason != ReasonMalformed {
				t.Errorf("truncated to %d of %d: %v", n, len(p), v)
			}
			if v := f.Outbound(p[:n], t0); v.Allow {
				t.Errorf("outbound truncated to %d of %d: %v", n, len(p), v)
			}
		}
	}
	bad := pkttest.TCP(ap(laptop, 40000), ap(nas, 8080), pkttest.SYN, nil)
	bad[0] = 0x44 // IHL 16 bytes
	expect(t, f.Inbound(bad, t0), false, ReasonMalformed, "short IHL")
	v5 := slicesClone(bad)
	v5[0] = 0x55
	expect(t, f.Inbound(v5, t0), false, ReasonMalformed, "IP version 5")
	// An IPv6 header chain longer than the limit.
	p := pkttest.UDP(ap(laptop6, 1), ap(nas6, 2), nil)
	for range maxExtHeaders + 1 {
		p = pkttest.InsertIPv6Ext(p, pkttest.DestOpts)
	}
	expect(t, f.Inbound(p, t0), false, ReasonMalformed, "too many extension headers")
	if n := f.Counts()[ReasonMalformed]; n < 100 {
		t.Errorf("malformed count %d", n)
	}
}

func slicesClone(b []byte) []byte { return append([]byte(nil), b...) }

func TestCounts(t *testing.T) {
	f := newFilter(t, testPolicy)
	f.Inbound(pkttest.TCP(ap(daveX, 1), ap(nas, 80), pkttest.SYN, nil), t0)
	f.Inbound(pkttest.TCP(ap(daveX, 1), ap(nas, 80), pkttest.SYN, nil), t0)
	f.Inbound(pkttest.TCP(ap(nobody, 1), ap(nas, 80), pkttest.SYN, nil), t0)
	f.Inbound(pkttest.TCP(ap(laptop, 1), ap(nas, 8080), pkttest.SYN, nil), t0)
	f.Inbound([]byte{0x45}, t0)
	f.Outbound(pkttest.TCP(ap(nas, 1), ap(daveX, 80), pkttest.SYN, nil), t0)
	want := map[Reason]uint64{ReasonNotShared: 2, ReasonUnknownSource: 1, ReasonOK: 1, ReasonMalformed: 1, ReasonOutbound: 1}
	if got := f.Counts(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Counts() = %v, want %v", got, want)
	}
	if f.Flows() != 2 {
		t.Errorf("Flows() = %d, want 2", f.Flows())
	}
	for r := Reason(1); r < numReasons; r++ {
		if r.String() == "" || r.String() == "none" {
			t.Errorf("reason %d has no name", r)
		}
	}
}

func TestFlowTableBound(t *testing.T) {
	f, err := NewFilter(compile(t, testPolicy), Options{MaxFlows: 64})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		f.Outbound(pkttest.UDP(ap(nas, uint16(10000+i)), ap(daveX, 53), nil), t0)
	}
	if n := f.Flows(); n > 64 {
		t.Fatalf("%d flows in a table of 64", n)
	}
	// The newest flows survive, the oldest were evicted.
	expect(t, f.Inbound(pkttest.UDP(ap(daveX, 53), ap(nas, 10999), nil), t0), true, ReasonReply, "newest")
	expect(t, f.Inbound(pkttest.UDP(ap(daveX, 53), ap(nas, 10000), nil), t0), false, ReasonNotShared, "oldest")
}

func TestLRU(t *testing.T) {
	l := newLRU[int](3)
	for i := range 3 {
		e, created := l.put(i, 0)
		if !created {
			t.Fatal("not created")
		}
		e.expires = 100
	}
	l.get(0, 1) // 0 is now the most recent
	e, _ := l.put(3, 1)
	e.expires = 100
	if l.get(1, 1) != nil || l.get(0, 1) == nil || l.get(2, 1) == nil || l.get(3, 1) == nil {
		t.Fatal("wrong entry evicted")
	}
	l.del(2)
	if l.len() != 2 || l.get(2, 1) != nil || l.get(3, 1) == nil || l.get(0, 1) == nil {
		t.Fatal("del")
	}
	if l.get(0, 100) != nil || l.len() != 1 {
		t.Fatal("expired entry returned")
	}
	// Walk the list both ways to check its links.
	n := 0
	for i := l.head; i >= 0; i = l.e[i].next {
		n++
	}
	if n != l.len() {
		t.Fatalf("list has %d, table %d", n, l.len())
	}
}

func TestNewFilterOptions(t *testing.T) {
	if _, err := NewFilter(nil, Options{}); err == nil {
		t.Error("nil rules accepted")
	}
	if _, err := NewFilter(compile(t, ""), Options{UDPTimeout: -1}); err == nil {
		t.Error("negative timeout accepted")
	}
}

func TestNoAllocs(t *testing.T) {
	f := newFilter(t, testPolicy)
	out := pkttest.TCP(ap(nas, 50000), ap(daveX, 22), pkttest.SYN, nil)
	in := pkttest.TCP(ap(daveX, 22), ap(nas, 50000), pkttest.ACK, nil)
	shared := pkttest.TCP(ap(laptop, 40000), ap(nas, 8080), pkttest.ACK, nil)
	icmpErr := pkttest.Unreachable(daveX, nas, out)
	f.Outbound(out, t0)
	f.Inbound(shared, t0)
	for name, fn := range map[string]func(){
		"outbound": func() { f.Outbound(out, t0) },
		"reply":    func() { f.Inbound(in, t0) },
		"shared":   func() { f.Inbound(shared, t0) },
		"icmp err": func() { f.Inbound(icmpErr, t0) },
	} {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocs per packet", name, n)
		}
	}
}

func FuzzInbound(f *testing.F) {
	out := pkttest.UDP(ap(nas, 50000), ap(daveX, 9999), []byte("hi"))
	seeds := [][]byte{
		pkttest.TCP(ap(laptop, 40000), ap(nas, 8080), pkttest.SYN, nil),
		pkttest.UDP(ap(carolPC, 40000), ap(nas, 53), []byte("q")),
		pkttest.Echo(laptop, nas, false, 1, 1),
		pkttest.Echo(daveX, nas, true, 1, 1),
		pkttest.Unreachable(daveX, nas, out),
		pkttest.TCP(ap(laptop6, 40000), ap(nas6, 8080), pkttest.SYN, nil),
		pkttest.InsertIPv6Ext(pkttest.Echo(laptop6, nas6, false, 1, 1), pkttest.HopByHop),
		pkttest.ICMPError(dave6, nas6, pkttest.ICMPv6PacketTooBig, 0, pkttest.TCP(ap(nas6, 1), ap(dave6, 2), pkttest.SYN, nil)),
	}
	seeds = append(seeds, pkttest.FragmentIPv4(pkttest.UDP(ap(carolPC, 1), ap(nas, 53), make([]byte, 100)), 48, 1)...)
	seeds = append(seeds, pkttest.FragmentIPv6(pkttest.UDP(ap(laptop6, 1), ap(nas6, 53), make([]byte, 100)), 48, 1)...)
	for _, s := range seeds {
		f.Add(s)
	}
	filter := newFilter(f, testPolicy)
	filter.Outbound(out, t0)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		v := filter.Inbound(pkt, t0)
		if v.Reason == 0 || v.Reason >= numReasons || v.Allow != v.Reason.Allowed() {
			t.Fatalf("bad verdict %+v", v)
		}
		filter.Outbound(pkt, t0)
	})
}

func TestConcurrentSetRules(t *testing.T) {
	leaktest.Check(t)
	f := newFilter(t, testPolicy)
	rs := []*Rules{compile(t, testPolicy), compile(t, ""), compile(t, policy100())}
	done := make(chan struct{})
	var stop = make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				port := uint16(40000 + g*1000 + i%1000)
				f.Inbound(pkttest.TCP(ap(laptop, port), ap(nas, 8080), pkttest.SYN, nil), t0)
				f.Outbound(pkttest.UDP(ap(nas, port), ap(daveX, 53), nil), t0)
			}
		}()
	}
	for i := range 200 {
		f.SetRules(rs[i%len(rs)])
	}
	close(stop)
	for range 4 {
		<-done
	}
}

// TestAttackShareOtherAddress: bob is granted nas:8080/tcp. His packets to
// port 8080 on any other address (a container network nas routes, nas's LAN
// address, another node's overlay address, a friend's own address) must
// drop with ReasonWrongDst; only nas's own overlay addresses, v4 and v6,
// open the service.
func TestAttackShareOtherAddress(t *testing.T) {
	f := newFilter(t, testPolicy)
	others := []netip.Addr{
		netip.MustParseAddr("172.17.0.2"),   // a container behind nas
		netip.MustParseAddr("192.168.1.20"), // nas's LAN address
		netip.MustParseAddr("10.0.0.1"),
		desk,   // another node of alice
		laptop, // bob's own address, looped back
		nobody, // an overlay address nobody holds
		netip.MustParseAddr("fd7a::2"),
		netip.MustParseAddr("fd00::1"),
	}
	passed := 0
	for _, dst := range others {
		src := laptop
		if dst.Is6() {
			src = laptop6
		}
		for _, pkt := range [][]byte{
			pkttest.TCP(ap(src, 40000), ap(dst, 8080), pkttest.SYN, nil),
			pkttest.TCP(ap(src, 40000), ap(dst, 8080), pkttest.ACK, []byte("GET /")),
		} {
			v := f.Inbound(pkt, t0)
			if v.Allow {
				passed++
			}
			expect(t, v, false, ReasonWrongDst, fmt.Sprintf("bob -> %v:8080", dst))
		}
	}
	t.Logf("bob's packets to port 8080 on %d other addresses: %d/%d passed", len(others), passed, 2*len(others))
	// The shared node's own overlay addresses still open the service.
	expect(t, f.Inbound(pkttest.TCP(ap(laptop, 40000), ap(nas, 8080), pkttest.SYN, nil), t0), true, ReasonOK, "bob -> nas:8080")
	expect(t, f.Inbound(pkttest.TCP(ap(laptop6, 40000), ap(nas6, 8080), pkttest.SYN, nil), t0), true, ReasonOK, "bob -> [nas6]:8080")
	// Replies to flows nas opened come back to nas's own address only.
	expect(t, f.Outbound(pkttest.TCP(ap(nas, 50000), ap(laptop, 22), pkttest.SYN, nil), t0), true, ReasonOutbound, "nas -> bob:22")
	expect(t, f.Inbound(pkttest.TCP(ap(laptop, 22), ap(nas, 50000), pkttest.SYN|pkttest.ACK, nil), t0), true, ReasonReply, "reply")
	if c := f.Counts()[ReasonWrongDst]; c != uint64(2*len(others)) {
		t.Errorf("wrong-destination counted %d, want %d", c, 2*len(others))
	}
}
