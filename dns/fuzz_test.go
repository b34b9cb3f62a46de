package dns

import (
	"context"
	"testing"

	"github.com/miekg/dns"
)

// FuzzHandle feeds arbitrary bytes through the server's query path: the
// wire-level parse (drop or FORMERR) and, for what unpacks, Handle. Nothing
// may panic, and every reply must pack.
func FuzzHandle(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"nas.alice.glow.", dns.TypeA},
		{"NAS.alice.glow.", dns.TypeAAAA},
		{"nas.", dns.TypeANY},
		{"alice.glow.", dns.TypeSOA},
		{"1.0.64.100.in-addr.arpa.", dns.TypePTR},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.7.f.6.c.6.7.6.0.0.d.f.ip6.arpa.", dns.TypePTR},
		{"example.com.", dns.TypeA},
	} {
		m := new(dns.Msg).SetQuestion(q.name, q.qtype)
		b, _ := m.Pack()
		f.Add(b)
		m.SetEdns0(4096, true)
		b, _ = m.Pack()
		f.Add(b)
	}
	f.Add([]byte{0xbe, 0xef, 0x01, 0x00, 0, 5, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{})

	// No upstreams: forwarded names get REFUSED, so no network is used.
	s, err := New(Config{SelfUser: "alice", Names: testTable()})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		req, raw := s.parse(b)
		if raw != nil {
			r := new(dns.Msg)
			if err := r.Unpack(raw); err != nil || r.Rcode != dns.RcodeFormatError {
				t.Fatalf("FORMERR reply %x: %v", raw, err)
			}
		}
		if req == nil {
			return
		}
		for _, network := range []string{"udp", "tcp"} {
			resp := s.Handle(ctx, req, network)
			if resp == nil {
				continue
			}
			out, err := resp.Pack()
			if err != nil {
				t.Fatalf("%s reply does not pack: %v\n%v", network, err, resp)
			}
			if resp.Id != req.Id {
				t.Fatalf("reply id %d, query %d", resp.Id, req.Id)
			}
			if network == "udp" {
				limit := dns.MinMsgSize
				if o := req.IsEdns0(); o != nil {
					limit = max(limit, int(o.UDPSize()))
				}
				if len(out) > limit {
					t.Fatalf("udp reply %d bytes, limit %d", len(out), limit)
				}
			}
		}
	})
}
