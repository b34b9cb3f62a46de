package dns

import (
	"context"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Handle answers one query and returns the reply, or nil when no reply must
// be sent (req is itself a response). network is the transport the query
// came over, "udp" or "tcp": it picks the transport to the upstreams, and a
// UDP reply is truncated (TC set) to the client's size limit, 512 bytes or
// its EDNS0 payload size.
//
// Names under the suffix, short names and reverse names of the overlay are
// answered from Names without blocking; everything else is forwarded, which
// blocks until an upstream answers or ctx is done. Handle does not modify
// req. The reply carries req's message id.
func (s *Server) Handle(ctx context.Context, req *dns.Msg, network string) *dns.Msg {
	s.stats.queries.Add(1)
	resp, forward := s.answer(req)
	if forward {
		resp = s.forward(ctx, req, isTCP(network))
	}
	return s.finish(req, resp, network)
}

func isTCP(network string) bool { return strings.HasPrefix(network, "tcp") }

// answer is the non-blocking half of Handle: it answers req from the name
// table or says that req must be forwarded. resp is nil when req must be
// dropped or forwarded.
func (s *Server) answer(req *dns.Msg) (resp *dns.Msg, forward bool) {
	switch {
	case req.Response:
		s.stats.dropResponse.Add(1)
		return nil, false
	case req.Opcode != dns.OpcodeQuery:
		s.stats.notImp.Add(1)
		return s.reply(req, dns.RcodeNotImplemented), false
	case len(req.Question) != 1:
		s.stats.formErr.Add(1)
		m := new(dns.Msg).SetRcodeFormatError(req)
		m.Opcode = req.Opcode
		return m, false
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		s.stats.formErr.Add(1) // closest counter; BADVERS is rare
		return s.reply(req, dns.RcodeBadVers), false
	}
	q := req.Question[0]
	name := strings.ToLower(dns.Fqdn(q.Name))

	switch {
	case name == s.suffix:
		// The suffix itself: an empty zone apex (SOA for SOA queries).
		m := s.localReply(req)
		if q.Qtype == dns.TypeSOA {
			m.Answer = append(m.Answer, s.soa(s.suffix))
		} else {
			m.Ns = append(m.Ns, s.soa(s.suffix))
		}
		return m, false
	case strings.HasSuffix(name, s.dotSuffix):
		rest := name[:len(name)-len(s.dotSuffix)]
		node, user, ok := strings.Cut(rest, ".")
		if !ok {
			// USER.SUFFIX: exists (it is the parent of its nodes), no data.
			m := s.localReply(req)
			m.Ns = append(m.Ns, s.soa(s.suffix))
			return m, false
		}
		if strings.Contains(user, ".") {
			// Deeper names do not exist.
			return s.nxdomain(req, s.suffix), false
		}
		return s.host(req, q, user, node, s.suffix), false
	case s.selfUser != "" && strings.IndexByte(name, '.') == len(name)-1 && len(name) > 1:
		// A short name: "nas." is nas.SELFUSER.SUFFIX. when that node
		// exists; otherwise it is some other single-label name (a TLD),
		// which is the upstreams' business.
		node := name[:len(name)-1]
		if _, _, ok := s.names.LookupHost(s.selfUser, node); ok {
			return s.host(req, q, s.selfUser, node, ""), false
		}
	case strings.HasSuffix(name, ".in-addr.arpa.") || strings.HasSuffix(name, ".ip6.arpa."):
		if m := s.ptr(req, q, name); m != nil {
			return m, false
		}
	}
	switch ups, exit := s.forwardTo(); {
	case len(ups) == 0 && exit:
		s.stats.servFail.Add(1)
		return s.reply(req, dns.RcodeServerFailure), false
	case len(ups) == 0:
		s.stats.refused.Add(1)
		return s.reply(req, dns.RcodeRefused), false
	}
	return nil, true
}

// reply returns an empty reply to req with rcode.
func (s *Server) reply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	if len(m.Question) == 1 {
		m.Question[0].Name = dns.Fqdn(m.Question[0].Name)
	}
	return m
}

// localReply returns an authoritative NOERROR reply to req, counted as local.
func (s *Server) localReply(req *dns.Msg) *dns.Msg {
	s.stats.local.Add(1)
	m := s.reply(req, dns.RcodeSuccess)
	m.Authoritative = true
	return m
}

func (s *Server) nxdomain(req *dns.Msg, zone string) *dns.Msg {
	m := s.localReply(req)
	m.Rcode = dns.RcodeNameError
	if zone != "" {
		m.Ns = append(m.Ns, s.soa(zone))
	}
	return m
}

// host answers q for node of user. zone is the zone for the SOA of a
// negative answer, or "" for none (short names have no zone of ours).
func (s *Server) host(req *dns.Msg, q dns.Question, user, node, zone string) *dns.Msg {
	v4, v6, ok := s.names.LookupHost(user, node)
	if !ok {
		return s.nxdomain(req, zone)
	}
	m := s.localReply(req)
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		return m
	}
	owner := dns.Fqdn(q.Name) // echo the query's case
	ttl := uint32(TTL.Seconds())
	if v4.IsValid() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY) {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
			A:   v4.AsSlice(),
		})
	}
	if v6.IsValid() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY) {
		m.Answer = append(m.Answer, &dns.AAAA{
			Hdr:  dns.RR_Header{Name: owner, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl},
			AAAA: v6.AsSlice(),
		})
	}
	if len(m.Answer) == 0 && zone != "" {
		m.Ns = append(m.Ns, s.soa(zone)) // NODATA
	}
	return m
}

// ptr answers a reverse query, or returns nil when it must be forwarded.
func (s *Server) ptr(req *dns.Msg, q dns.Question, name string) *dns.Msg {
	ip, ok := parseReverse(name)
	if !ok {
		return nil
	}
	zone := "in-addr.arpa."
	if ip.Is6() {
		zone = "ip6.arpa."
	}
	node, user, ok := s.names.LookupAddr(ip)
	if !ok {
		for _, p := range s.prefixes {
			if p.Contains(ip) {
				return s.nxdomain(req, zone)
			}
		}
		return nil
	}
	m := s.localReply(req)
	if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, &dns.PTR{
			Hdr: dns.RR_Header{Name: dns.Fqdn(q.Name), Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: uint32(TTL.Seconds())},
			Ptr: node + "." + user + "." + s.suffix,
		})
	} else {
		m.Ns = append(m.Ns, s.soa(zone))
	}
	return m
}

// soa is the SOA record of zone, sent in negative answers. Its minimum
// (the negative-caching TTL) is TTL.
func (s *Server) soa(zone string) dns.RR {
	ttl := uint32(TTL.Seconds())
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      "ns." + s.suffix,
		Mbox:    "hostmaster." + s.suffix,
		Serial:  1,
		Refresh: 3600, Retry: 600, Expire: 86400,
		Minttl: ttl,
	}
}

// finish adds an OPT record when the query had one and truncates a UDP reply
// to the client's size.
func (s *Server) finish(req, resp *dns.Msg, network string) *dns.Msg {
	if resp == nil {
		return nil
	}
	resp.Id = req.Id
	reqOpt := req.IsEdns0()
	if reqOpt != nil && resp.IsEdns0() == nil {
		resp.SetEdns0(ednsSize, false)
	}
	if !isTCP(network) {
		size := dns.MinMsgSize
		if reqOpt != nil && int(reqOpt.UDPSize()) > size {
			size = int(reqOpt.UDPSize())
		}
		wasTC := resp.Truncated
		resp.Truncate(size)
		if resp.Truncated && !wasTC {
			s.stats.truncated.Add(1)
		}
	}
	return resp
}

// parseReverse parses a full reverse name ("4.3.2.1.in-addr.arpa.", 32
// nibbles under "ip6.arpa.") into an address. Partial names fail.
func parseReverse(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		var b [4]byte
		for i := 3; i >= 0; i-- {
			var label string
			if i == 0 {
				label, rest = rest, ""
			} else {
				var ok bool
				label, rest, ok = strings.Cut(rest, ".")
				if !ok {
					return netip.Addr{}, false
				}
			}
			if len(label) == 0 || len(label) > 3 || (len(label) > 1 && label[0] == '0') {
				return netip.Addr{}, false
			}
			n := 0
			for j := 0; j < len(label); j++ {
				c := label[j]
				if c < '0' || c > '9' {
					return netip.Addr{}, false
				}
				n = n*10 + int(c-'0')
			}
			if n > 255 {
				return netip.Addr{}, false
			}
			b[i] = byte(n)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		if len(rest) != 63 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i := 0; i < 32; i++ {
			c := rest[2*i]
			if i < 31 && rest[2*i+1] != '.' {
				return netip.Addr{}, false
			}
			var v byte
			switch {
			case '0' <= c && c <= '9':
				v = c - '0'
			case 'a' <= c && c <= 'f':
				v = c - 'a' + 10
			default:
				return netip.Addr{}, false
			}
			// Nibble i counts from the least significant end.
			pos := 31 - i
			if pos%2 == 0 {
				b[pos/2] |= v << 4
			} else {
				b[pos/2] |= v
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}
