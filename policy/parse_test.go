package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const sample = `# glow policy for user alice

group friends = bob, carol
tag web = nas, desk
# bob's build server
allow bob -> nas:8080/tcp
allow group:friends -> tag:web:80,443/tcp
allow bob/laptop -> nas:icmp
allow carol -> desk:5000-5010/udp
allow bob -> nas:*            # every port and protocol
allow tag:ci -> *:22
tag ci =
`

func TestParseSample(t *testing.T) {
	d, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := &Document{
		Header: []string{"glow policy for user alice"},
		Groups: []Group{{Name: "friends", Members: []string{"bob", "carol"}}},
		Tags:   []Tag{{Name: "web", Nodes: []string{"nas", "desk"}}, {Name: "ci"}},
		Rules: []Rule{
			{From: Peer{Kind: PeerUser, Name: "bob"}, To: Target{Kind: TargetNode, Name: "nas", Ports: []PortRange{{8080, 8080}}, Proto: ProtoTCP}, Comments: []string{"bob's build server"}},
			{From: Peer{Kind: PeerGroup, Name: "friends"}, To: Target{Kind: TargetTag, Name: "web", Ports: []PortRange{{80, 80}, {443, 443}}, Proto: ProtoTCP}},
			{From: Peer{Kind: PeerNode, Name: "bob", Node: "laptop"}, To: Target{Kind: TargetNode, Name: "nas", Proto: ProtoICMP}},
			{From: Peer{Kind: PeerUser, Name: "carol"}, To: Target{Kind: TargetNode, Name: "desk", Ports: []PortRange{{5000, 5010}}, Proto: ProtoUDP}},
			{From: Peer{Kind: PeerUser, Name: "bob"}, To: Target{Kind: TargetNode, Name: "nas", Proto: ProtoAny}, Note: "every port and protocol"},
			{From: Peer{Kind: PeerTag, Name: "ci"}, To: Target{Kind: TargetAny, Ports: []PortRange{{22, 22}}, Proto: ProtoTCP | ProtoUDP}},
		},
	}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("got\n%#v\nwant\n%#v", d, want)
	}
	roundTrip(t, d)
	const canon = `# glow policy for user alice

group friends = bob, carol

tag web = nas, desk
tag ci =

# bob's build server
allow bob -> nas:8080/tcp
allow group:friends -> tag:web:80,443/tcp
allow bob/laptop -> nas:icmp
allow carol -> desk:5000-5010/udp
allow bob -> nas:* # every port and protocol
allow tag:ci -> *:22
`
	if got := string(d.Format()); got != canon {
		t.Errorf("Format:\n%s\nwant\n%s", got, canon)
	}
}

func roundTrip(t *testing.T, d *Document) {
	t.Helper()
	text := d.Format()
	d2, err := Parse(text)
	if err != nil {
		t.Fatalf("Parse(Format()) failed: %v\n%s", err, text)
	}
	if !reflect.DeepEqual(d, d2) {
		t.Fatalf("round trip differs:\n%#v\n%#v\ntext:\n%s", d, d2, text)
	}
}

func TestParseForms(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"allow bob -> nas:22", "allow bob -> nas:22"},
		{"allow bob -> nas:22/tcp+udp", "allow bob -> nas:22"},
		{"allow bob -> nas:*/tcp", "allow bob -> nas:*/tcp"},
		{"allow bob -> nas:*/tcp+udp", "allow bob -> nas:*/tcp+udp"},
		{"allow bob -> nas:*/icmp", "allow bob -> nas:icmp"},
		{"allow * -> *:*", "allow * -> *:*"},
		{"allow bob->nas:80-80/udp", "allow bob -> nas:80/udp"},
		{"\tallow   bob  ->  nas:1,2-3,65535/tcp  ", "allow bob -> nas:1,2-3,65535/tcp"},
		{"allow bob -> nas:22\r", "allow bob -> nas:22"},
		{"allow bob -> icmp:icmp", "allow bob -> icmp:icmp"},
	} {
		d, err := Parse([]byte(tc.in))
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got := strings.TrimSpace(string(d.Format())); got != tc.out {
			t.Errorf("%q formats as %q, want %q", tc.in, got, tc.out)
		}
		roundTrip(t, d)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "\n\n", "# only a comment\n", "# a\n\n# b\n"} {
		d, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if len(d.Rules) != 0 {
			t.Fatalf("%q: rules %v", in, d.Rules)
		}
		roundTrip(t, d)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		line int
		msg  string
	}{
		{"group friends = bob\n\nallow group:frends -> nas:22", 3, `unknown group "frends"`},
		{"allow tag:web -> nas:22", 1, `unknown tag "web"`},
		{"allow bob -> tag:web:22", 1, `unknown tag "web"`},
		{"tag web = nas\ntag web = desk", 2, `duplicate tag "web" (first defined on line 1)`},
		{"group g =\n#\ngroup g = bob", 3, `duplicate group "g"`},
		{"allow bob -> nas:0", 1, "port 0 out of range"},
		{"allow bob -> nas:65536", 1, "port 65536 out of range"},
		{"allow bob -> nas:99999999", 1, `bad port "99999999"`},
		{"allow bob -> nas:10-5", 1, `port range "10-5" is reversed`},
		{"allow bob -> nas:+5", 1, `bad port "+5"`},
		{"allow bob -> nas:80,", 1, `bad port ""`},
		{"allow bob -> nas:", 1, "missing ports"},
		{"allow bob -> nas:80/sctp", 1, `unknown protocol "sctp"`},
		{"allow bob -> nas:80/icmp", 1, "icmp has no ports"},
		{"allow bob -> nas", 1, `destination "nas" needs ":"`},
		{"allow bob nas:80", 1, `allow needs "->"`},
		{"allow -> nas:80", 1, "missing source"},
		{"allow Bob -> nas:80", 1, `invalid user name "Bob"`},
		{"allow bob/ -> nas:80", 1, `invalid node name ""`},
		{"allow bob -> NAS:80", 1, `invalid node name "NAS"`},
		{"allow bob -> " + strings.Repeat("a", 64) + ":80", 1, "invalid node name"},
		{"deny bob -> nas:80", 1, `unknown statement "deny"`},
		{"group friends bob", 1, `group needs "="`},
		{"group friends = bob, bob", 1, `user "bob" listed twice`},
		{"group friends = bob,,carol", 1, `invalid user name ""`},
		{"tag web = nas, Desk", 1, `invalid node name "Desk"`},
		{"\n\nallow bob -> nas:80\x00", 3, "control character"},
		{"allow bob -> nas:80 # \xff", 1, "invalid UTF-8"},
	} {
		_, err := Parse([]byte(tc.in))
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%q: error %v, want *ParseError", tc.in, err)
			continue
		}
		if pe.Line != tc.line || !strings.Contains(pe.Msg, tc.msg) {
			t.Errorf("%q: got %q, want line %d containing %q", tc.in, err, tc.line, tc.msg)
		}
	}
}

func TestParseLimits(t *testing.T) {
	_, err := Parse(make([]byte, MaxDocumentSize+1))
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 0 || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("oversized: %v", err)
	}
	var b strings.Builder
	for range MaxRules + 1 {
		b.WriteString("allow b -> n:1\n")
	}
	_, err = Parse([]byte(b.String()))
	if !errors.As(err, &pe) || pe.Line != MaxRules+1 || !strings.Contains(pe.Msg, "more than 10000 rules") {
		t.Errorf("too many rules: %v", err)
	}
}

func TestParseErrorString(t *testing.T) {
	_, err := Parse([]byte("group friends = bob\n\nallow group:frends -> nas:22"))
	if got, want := err.Error(), `line 3: unknown group "frends"`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestComments(t *testing.T) {
	in := "#header\n#\n\n# above\n\n# right above\nallow bob -> nas:22 #  note  \n# trailer 1\n#  trailer 2\n"
	d, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Header, []string{"header", ""}) ||
		!reflect.DeepEqual(d.Rules[0].Comments, []string{"above", "right above"}) ||
		d.Rules[0].Note != "note" ||
		!reflect.DeepEqual(d.Trailer, []string{"trailer 1", " trailer 2"}) {
		t.Fatalf("%#v", d)
	}
	roundTrip(t, d)
}

func TestShareUnshare(t *testing.T) {
	d, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	n := len(d.Rules)
	tg, err := ParseShareTarget("nas:8080")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Target{Kind: TargetNode, Name: "nas", Ports: []PortRange{{8080, 8080}}, Proto: ProtoTCP}); !tg.Equal(want) {
		t.Fatalf("ParseShareTarget: %v", tg)
	}
	if changed, err := d.Share("bob", tg); err != nil || changed {
		t.Fatalf("share of an existing grant: %v %v", changed, err)
	}
	tg2, _ := ParseShareTarget("desk:3000-3001/udp")
	if changed, err := d.Share("dave", tg2); err != nil || !changed || len(d.Rules) != n+1 {
		t.Fatalf("share: %v %v", changed, err)
	}
	if got := d.Rules[n].From.String() + " -> " + d.Rules[n].To.String(); got != "dave -> desk:3000-3001/udp" {
		t.Fatalf("new rule %q", got)
	}
	roundTrip(t, d)
	if _, err := d.Share("Dave", tg2); err == nil {
		t.Error("share to an invalid user succeeded")
	}
	bad, _ := ParseShareTarget("tag:nope:80")
	if _, err := d.Share("dave", bad); err == nil || len(d.Rules) != n+1 {
		t.Errorf("share to an unknown tag: %v", err)
	}
	if !d.Unshare("dave", tg2) || len(d.Rules) != n {
		t.Fatal("unshare did not remove the rule")
	}
	if d.Unshare("dave", tg2) {
		t.Fatal("second unshare reported a change")
	}
	if !d.Unshare("bob", tg) || len(d.Rules) != n-1 {
		t.Fatal("unshare of a written rule failed")
	}
	icmp, _ := ParseShareTarget("nas:icmp")
	if d.Unshare("bob", icmp) {
		t.Fatal("unshare for bob removed bob/laptop's rule")
	}
	if !d.Unshare("bob/laptop", icmp) {
		t.Fatal("unshare for bob/laptop failed")
	}
	for _, s := range []string{"nas", "nas:0", "nas:80/gre", "Nas:80"} {
		if _, err := ParseShareTarget(s); err == nil {
			t.Errorf("ParseShareTarget(%q) succeeded", s)
		}
	}
}

func TestShares(t *testing.T) {
	d, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range d.Shares() {
		got = append(got, g.Who+" via "+g.From.String()+": "+g.To.String())
	}
	want := []string{
		"bob via bob: nas:8080/tcp",
		"bob via group:friends: tag:web:80,443/tcp",
		"bob via bob/laptop: nas:icmp",
		"bob via bob: nas:*",
		"carol via group:friends: tag:web:80,443/tcp",
		"carol via carol: desk:5000-5010/udp",
		"tag:ci via tag:ci: *:22",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Shares:\n%q\nwant\n%q", got, want)
	}
}

func TestValidateBuilt(t *testing.T) {
	for _, d := range []*Document{
		{Rules: []Rule{{From: Peer{Kind: PeerUser, Name: "bob"}, To: Target{Kind: TargetNode, Name: "nas", Proto: ProtoTCP | ProtoICMP}}}},
		{Rules: []Rule{{From: Peer{Kind: PeerUser, Name: "bob"}, To: Target{Kind: TargetNode, Name: "nas", Proto: ProtoAny, Ports: []PortRange{{1, 2}}}}}},
		{Rules: []Rule{{From: Peer{Kind: PeerUser, Name: "bob"}, To: Target{Kind: TargetNode, Name: "nas", Proto: ProtoTCP, Ports: []PortRange{{5, 2}}}}}},
		{Rules: []Rule{{From: Peer{}, To: Target{Kind: TargetAny, Proto: ProtoAny}}}},
		{Rules: []Rule{{From: Peer{Kind: PeerAny}, To: Target{Kind: TargetAny, Proto: ProtoAny}, Note: "a\nb"}}},
		{Groups: []Group{{Name: "g", Members: []string{"x", "x"}}}},
		{Header: []string{"trailing space "}},
	} {
		if err := d.Validate(); err == nil {
			t.Errorf("Validate(%#v) passed", d)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("allow * -> *:*"))
	f.Add([]byte("group g = a\nallow group:g -> tag:t:1-2,3/udp # n\ntag t = x\n# end"))
	f.Add([]byte("#a\n\n#b\nallow b/c -> n:icmp\r\n"))
	f.Add([]byte("allow bob -> nas:65535-65535/tcp+udp"))
	f.Add([]byte("allow bob -> route nas 10.71.1.0/24\nallow group:g -> exit vps # n\nallow b/c -> route n fd12::/64"))
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := Parse(in)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("parsed document does not validate: %v", err)
		}
		roundTrip(t, d)
	})
}
