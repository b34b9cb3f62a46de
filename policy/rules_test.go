package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"glow/internal/pkttest"
)

func TestAllow(t *testing.T) {
	r := compile(t, testPolicy)
	bobLaptop := Principal{User: "bob", Node: "laptop"}
	bobPhone := Principal{User: "bob", Node: "phone"}
	carol := Principal{User: "carol", Node: "pc"}
	ci := Principal{User: "erin", Node: "runner", Tags: []string{"ci"}}
	for _, tc := range []struct {
		src    Principal
		node   string
		proto  uint8
		port   uint16
		allow  bool
		reason Reason
	}{
		{bobLaptop, "nas", 6, 8080, true, ReasonOK},
		{bobLaptop, "nas", 17, 8080, false, ReasonNotShared},
		{bobLaptop, "nas", 6, 80, true, ReasonOK},
		{bobLaptop, "desk", 6, 80, true, ReasonOK},
		{bobLaptop, "desk", 6, 8080, false, ReasonNotShared},
		{bobLaptop, "nas", 1, 0, true, ReasonOK},
		{bobLaptop, "nas", 58, 0, true, ReasonOK},
		{bobPhone, "nas", 1, 0, false, ReasonNotShared},
		{carol, "desk", 17, 5005, true, ReasonOK},
		{carol, "desk", 17, 5011, false, ReasonNotShared},
		{carol, "nas", 17, 5005, false, ReasonNotShared},
		{carol, "other", 6, 80, false, ReasonNotShared},
		{ci, "nas", 6, 22, true, ReasonOK},
		{ci, "desk", 6, 22, false, ReasonNotShared},
		{Principal{User: "erin"}, "nas", 6, 22, false, ReasonNotShared},
		{Principal{User: "alice", Node: "desk"}, "nas", 47, 0, true, ReasonOwn},
		{Principal{}, "nas", 6, 22, false, ReasonUnknownSource},
	} {
		ok, why := r.Allow(tc.src, tc.node, tc.proto, tc.port)
		if ok != tc.allow || why != tc.reason {
			t.Errorf("Allow(%v, %s, %d, %d) = %v %v, want %v %v", tc.src, tc.node, tc.proto, tc.port, ok, why, tc.allow, tc.reason)
		}
	}
	any := compile(t, "allow * -> *:*")
	if ok, _ := any.Allow(Principal{User: "zed"}, "box", 132, 0); !ok {
		t.Error("* -> *:* does not allow SCTP")
	}
	tcpOnly := compile(t, "allow * -> *:*/tcp")
	if ok, _ := tcpOnly.Allow(Principal{User: "zed"}, "box", 132, 0); ok {
		t.Error("*/tcp allows SCTP")
	}
}

func TestCompileConfig(t *testing.T) {
	for _, cfg := range []CompileConfig{
		{Owner: "", Self: "nas", Directory: testDir},
		{Owner: "alice", Self: "NAS", Directory: testDir},
		{Owner: "alice", Self: "nas", Addrs: nasAddrs},
		{Owner: "alice", Self: "nas", Directory: testDir},
		{Owner: "alice", Self: "nas", Directory: testDir, Addrs: []netip.Addr{{}}},
	} {
		if _, err := Compile(nil, cfg); err == nil {
			t.Errorf("Compile accepted %+v", cfg)
		}
	}
	bad := &Document{Rules: []Rule{{From: Peer{Kind: PeerGroup, Name: "nope"}, To: Target{Kind: TargetAny, Proto: ProtoAny}}}}
	_, err := Compile(bad, CompileConfig{Owner: "alice", Self: "nas", Directory: testDir, Addrs: nasAddrs})
	if err == nil || !strings.Contains(err.Error(), `rule 1: unknown group "nope"`) {
		t.Errorf("Compile of a bad document: %v", err)
	}
}

// policy100 is a policy of 100 rules, one of which lets bob reach nas:8080.
func policy100() string {
	var b strings.Builder
	b.WriteString("group g = u1, u2, u3, bob\ntag web = nas, desk\n")
	for i := range 97 {
		fmt.Fprintf(&b, "allow user%d -> nas:%d/tcp\n", i, 1000+i)
	}
	b.WriteString("allow group:g -> tag:web:443\nallow * -> desk:80\nallow bob -> nas:8080/tcp\n")
	return b.String()
}

func BenchmarkAllow(b *testing.B) {
	for _, tc := range []struct{ name, policy string }{
		{"rules=1", "allow bob -> nas:8080/tcp"},
		{"rules=100", policy100()},
	} {
		r := compile(b, tc.policy)
		src := Principal{User: "bob", Node: "laptop"}
		b.Run(tc.name+"/self", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ok, _ := r.Allow(src, "nas", 6, 8080); !ok {
					b.Fatal("denied")
				}
			}
		})
		b.Run(tc.name+"/other-node-denied", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ok, _ := r.Allow(src, "desk", 6, 8080); ok {
					b.Fatal("allowed")
				}
			}
		})
	}
}

func BenchmarkInbound(b *testing.B) {
	reply := pkttest.TCP(ap(laptop, 22), ap(nas, 50000), pkttest.ACK, make([]byte, 1200))
	out := pkttest.TCP(ap(nas, 50000), ap(laptop, 22), pkttest.SYN, nil)
	shared := pkttest.TCP(ap(laptop, 40000), ap(nas, 8080), pkttest.ACK, make([]byte, 1200))
	for _, tc := range []struct{ name, policy string }{
		{"rules=0", ""},
		{"rules=1", "allow bob -> nas:8080/tcp"},
		{"rules=100", policy100()},
	} {
		f := newFilter(b, tc.policy)
		f.Outbound(out, t0)
		b.Run(tc.name+"/reply", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(reply)))
			for b.Loop() {
				if v := f.Inbound(reply, t0); !v.Allow {
					b.Fatal(v)
				}
			}
		})
		if tc.policy == "" {
			continue
		}
		f.Inbound(shared, t0)
		b.Run(tc.name+"/shared", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(shared)))
			for b.Loop() {
				if v := f.Inbound(shared, t0); !v.Allow {
					b.Fatal(v)
				}
			}
		})
	}
}

func BenchmarkOutbound(b *testing.B) {
	f := newFilter(b, policy100())
	pkt := pkttest.TCP(ap(nas, 50000), ap(laptop, 22), pkttest.ACK, make([]byte, 1200))
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		f.Outbound(pkt, t0)
	}
}

func BenchmarkInboundParallel(b *testing.B) {
	f := newFilter(b, policy100())
	pkts := make([][]byte, 64)
	for i := range pkts {
		f.Outbound(pkttest.TCP(ap(nas, uint16(50000+i)), ap(laptop, 22), pkttest.SYN, nil), t0)
		pkts[i] = pkttest.TCP(ap(laptop, 22), ap(nas, uint16(50000+i)), pkttest.ACK, make([]byte, 1200))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			f.Inbound(pkts[i%len(pkts)], t0)
			i++
		}
	})
}
