package policy

import (
	"net/netip"
	"testing"

	"glow/internal/pkttest"
)

// TestForwardRules: route and exit rules let a friend reach addresses
// through the node (a subnet router, an exit node), nothing more; the
// owner's nodes reach everything.
func TestForwardRules(t *testing.T) {
	const text = `
allow bob -> route nas 10.71.1.0/24
allow carol -> exit nas
allow bob/laptop -> route nas fd12:3456::/64
allow dave -> route desk 10.71.2.0/24
`
	f := newFilter(t, text)
	lanHost := netip.MustParseAddr("10.71.1.5")
	otherLAN := netip.MustParseAddr("10.71.2.5")
	inet := netip.MustParseAddr("198.51.100.7")
	inet6 := netip.MustParseAddr("2001:db8::7")
	lan6 := netip.MustParseAddr("fd12:3456::5")
	for _, tc := range []struct {
		name   string
		pkt    []byte
		allow  bool
		reason Reason
	}{
		{"bob to the shared LAN", pkttest.TCP(ap(laptop, 40000), ap(lanHost, 80), pkttest.SYN, nil), true, ReasonOK},
		{"bob pings the shared LAN", pkttest.Echo(phone, lanHost, false, 1, 1), true, ReasonOK},
		{"bob udp to the shared LAN", pkttest.UDP(ap(phone, 40000), ap(lanHost, 53), nil), true, ReasonOK},
		{"bob to another LAN", pkttest.TCP(ap(laptop, 40000), ap(otherLAN, 80), pkttest.SYN, nil), false, ReasonWrongDst},
		{"bob to the Internet (no exit rule)", pkttest.TCP(ap(laptop, 40000), ap(inet, 80), pkttest.SYN, nil), false, ReasonWrongDst},
		{"bob's route rule opens no service on nas", pkttest.TCP(ap(laptop, 40000), ap(nas, 80), pkttest.SYN, nil), false, ReasonNotShared},
		{"bob laptop to the v6 LAN", pkttest.TCP(ap(laptop6, 40000), ap(lan6, 80), pkttest.SYN, nil), true, ReasonOK},
		{"carol to the Internet", pkttest.TCP(ap(carolPC, 40000), ap(inet, 443), pkttest.SYN, nil), true, ReasonOK},
		{"carol to nas's LAN (exit is not the LAN)", pkttest.TCP(ap(carolPC, 40000), ap(lanHost, 80), pkttest.SYN, nil), false, ReasonWrongDst},
		{"carol to the overlay through the exit", pkttest.TCP(ap(carolPC, 40000), ap(desk, 80), pkttest.SYN, nil), false, ReasonWrongDst},
		{"dave's rule names desk, not nas", pkttest.TCP(ap(daveX, 40000), ap(otherLAN, 80), pkttest.SYN, nil), false, ReasonWrongDst},
		{"own desk to anything", pkttest.TCP(ap(desk, 40000), ap(inet, 80), pkttest.SYN, nil), true, ReasonOwn},
	} {
		expect(t, f.Inbound(tc.pkt, t0), tc.allow, tc.reason, tc.name)
	}
	// IPv6 through an exit rule (carol has no IPv6 address here; dave gets the rule).
	f2 := newFilter(t, "allow dave -> exit nas\n")
	expect(t, f2.Inbound(pkttest.TCP(ap(dave6, 40000), ap(inet6, 443), pkttest.SYN, nil), t0), true, ReasonOK, "dave to the v6 Internet")
	expect(t, f2.Inbound(pkttest.TCP(ap(dave6, 40000), ap(lan6, 443), pkttest.SYN, nil), t0), false, ReasonWrongDst, "dave to a ULA through the exit")

	// The reply from the LAN host reaches bob: his flow is known.
	f.Outbound(pkttest.TCP(ap(lanHost, 80), ap(laptop, 40001), pkttest.SYN|pkttest.ACK, nil), t0)
	// Unshared: the open flow is cut.
	f.SetRules(compile(t, "allow carol -> exit nas\n"))
	expect(t, f.Inbound(pkttest.TCP(ap(laptop, 40000), ap(lanHost, 80), pkttest.ACK, nil), t0), false, ReasonWrongDst, "bob after the route rule is gone")
}

// TestForwardParse: route and exit targets parse, format back and are
// checked.
func TestForwardParse(t *testing.T) {
	d, err := Parse([]byte("allow bob -> route nas 10.71.1.0/24\nallow group:g -> exit vps\ngroup g = carol\n"))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, d)
	if got := d.Rules[0].To; got.Kind != TargetRoute || got.Name != "nas" || got.Prefix != netip.MustParsePrefix("10.71.1.0/24") {
		t.Errorf("route rule parsed as %+v", got)
	}
	if got := d.Rules[1].To; got.Kind != TargetExit || got.Name != "vps" || got.Proto != ProtoAny {
		t.Errorf("exit rule parsed as %+v", got)
	}
	for _, bad := range []string{
		"allow bob -> route nas 10.71.1.5/24",
		"allow bob -> route nas 0.0.0.0/0",
		"allow bob -> route nas",
		"allow bob -> route nas 10.0.0.0/8 extra",
		"allow bob -> route NAS! 10.0.0.0/8",
		"allow bob -> exit",
		"allow bob -> exit vps 10.0.0.0/8",
		"allow bob -> route nas ::ffff:10.0.0.0/104",
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
	for s, want := range map[string]Target{
		"route nas 10.71.1.0/24": {Kind: TargetRoute, Name: "nas", Proto: ProtoAny, Prefix: netip.MustParsePrefix("10.71.1.0/24")},
		"exit vps":               {Kind: TargetExit, Name: "vps", Proto: ProtoAny},
	} {
		got, err := ParseShareTarget(s)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseShareTarget(%q) = %+v, %v", s, got, err)
		}
	}
	var doc Document
	tg, _ := ParseShareTarget("route nas 10.71.1.0/24")
	if changed, err := doc.Share("bob", tg); !changed || err != nil {
		t.Fatalf("Share: %v %v", changed, err)
	}
	if got := string(doc.Format()); got != "allow bob -> route nas 10.71.1.0/24\n" {
		t.Errorf("Format = %q", got)
	}
	if !doc.Unshare("bob", tg) {
		t.Error("Unshare found nothing")
	}
}
