package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// describe reads a rule built by Rules back into nft-like text, from its
// expressions alone, so the test checks what the kernel would get rather
// than what the builder meant.
func describe(t *testing.T, r *nftables.Rule) string {
	t.Helper()
	var out []string
	var reg []byte // what register 1 holds, symbolically
	var field string
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			switch e.Key {
			case expr.MetaKeyIIFNAME:
				field = "iifname"
			case expr.MetaKeyNFPROTO:
				field = "nfproto"
			default:
				t.Fatalf("unexpected meta key %v", e.Key)
			}
			reg = nil
		case *expr.Payload:
			if e.Base != expr.PayloadBaseNetworkHeader || e.DestRegister != 1 {
				t.Fatalf("unexpected payload %+v", e)
			}
			switch {
			case e.Offset == 12 && e.Len == 4:
				field = "ip saddr"
			case e.Offset == 16 && e.Len == 4:
				field = "ip daddr"
			case e.Offset == 8 && e.Len == 16:
				field = "ip6 saddr"
			case e.Offset == 24 && e.Len == 16:
				field = "ip6 daddr"
			default:
				t.Fatalf("unexpected payload offset %d len %d", e.Offset, e.Len)
			}
		case *expr.Bitwise:
			if len(e.Mask) != int(e.Len) || !bytes.Equal(e.Xor, make([]byte, e.Len)) {
				t.Fatalf("bad bitwise %+v", e)
			}
			reg = e.Mask
		case *expr.Cmp:
			if e.Register != 1 || e.Op != expr.CmpOpEq && !(e.Op == expr.CmpOpNeq && field == "fib daddr . iif type") {
				t.Fatalf("unexpected cmp %+v after %s", e, field)
			}
			switch field {
			case "fib daddr . iif type":
				if !bytes.Equal(e.Data, binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)) {
					t.Fatalf("fib type compared with %x, want local", e.Data)
				}
				out = append(out, field+" != local")
			case "fib saddr . iif oif":
				if !bytes.Equal(e.Data, []byte{0}) {
					t.Fatalf("fib oif presence compared with %x, want 0 (missing)", e.Data)
				}
				out = append(out, field+" missing")
			case "iifname":
				if len(e.Data) != unix.IFNAMSIZ {
					t.Fatalf("iifname data %q is not IFNAMSIZ long", e.Data)
				}
				out = append(out, fmt.Sprintf("iifname %q", bytes.TrimRight(e.Data, "\x00")))
			case "nfproto":
				out = append(out, map[byte]string{unix.NFPROTO_IPV4: "ipv4", unix.NFPROTO_IPV6: "ipv6"}[e.Data[0]])
			default:
				a, ok := netip.AddrFromSlice(e.Data)
				if !ok || reg == nil {
					t.Fatalf("address compare without a mask: %+v", e)
				}
				bits := 0
				for _, b := range reg {
					for i := 7; i >= 0 && b&(1<<i) != 0; i-- {
						bits++
					}
				}
				p := netip.PrefixFrom(a, bits)
				if p.Masked() != p {
					t.Fatalf("%v is not masked", p)
				}
				out = append(out, field+" "+p.String())
			}
		case *expr.Fib:
			switch {
			case e.ResultADDRTYPE && e.FlagDADDR && e.FlagIIF && !e.FlagSADDR && !e.FlagPRESENT && e.Register == 1:
				field = "fib daddr . iif type"
			case e.ResultOIF && e.FlagSADDR && e.FlagIIF && e.FlagPRESENT && !e.FlagDADDR && e.Register == 1:
				field = "fib saddr . iif oif"
			default:
				t.Fatalf("unexpected fib %+v", e)
			}
		case *expr.Counter:
			out = append(out, "counter")
		case *expr.Verdict:
			out = append(out, map[expr.VerdictKind]string{expr.VerdictAccept: "accept", expr.VerdictDrop: "drop"}[e.Kind])
		default:
			t.Fatalf("unexpected expression %T", e)
		}
	}
	s := fmt.Sprint(out)
	return s[1 : len(s)-1]
}

func TestRules(t *testing.T) {
	table, chain, rules := Rules(Config{Interface: "glow0", Prefixes: []netip.Prefix{
		netip.MustParsePrefix("100.64.0.7/10"), // not masked: the rule masks it
		netip.MustParsePrefix("fd3c:118c:f554::/48"),
		netip.MustParsePrefix("fd00:676c:6f77::/48"),
		netip.MustParsePrefix("100.100.100.53/32"),        // inside 100.64/10: no rule of its own
		netip.MustParsePrefix("fd3c:118c:f554::/48"),      // duplicate
		netip.MustParsePrefix("::ffff:100.64.0.0/106"),    // mapped: the same /10
		netip.MustParsePrefix("fd00:676c:6f77::53/128"),   // inside the service /48
		netip.MustParsePrefix("fd12:3456:789a:1::/64"),    // a friend's, on its own
		netip.MustParsePrefix("fd12:3456:789a:1:2::/80"),  // covered by the /64
		netip.MustParsePrefix("fd12:3456:789a:1:2::1/80"), // unmasked and covered
	}})
	if table.Name != "glow" || table.Family != nftables.TableFamilyINet {
		t.Errorf("table %s family %v, want inet glow", table.Name, table.Family)
	}
	if chain.Table != table || *chain.Hooknum != *nftables.ChainHookPrerouting ||
		*chain.Priority != *nftables.ChainPriorityRaw || chain.Type != nftables.ChainTypeFilter ||
		*chain.Policy != nftables.ChainPolicyAccept {
		t.Errorf("chain %+v: want a filter chain at prerouting, raw priority, policy accept", chain)
	}
	var got []string
	for _, r := range rules {
		if r.Table != table || r.Chain != chain {
			t.Errorf("rule %v not in table glow's chain", r.Exprs)
		}
		if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); !ok || c == "" {
			t.Errorf("rule %s has no comment", describe(t, r))
		}
		got = append(got, describe(t, r))
	}
	want := []string{
		`iifname "glow0" accept`,
		`iifname "lo" accept`,
		"ipv4 ip saddr 100.64.0.0/10 fib saddr . iif oif missing counter drop",
		"ipv4 ip daddr 100.64.0.0/10 fib daddr . iif type != local counter drop",
		"ipv6 ip6 saddr fd00:676c:6f77::/48 counter drop",
		"ipv6 ip6 daddr fd00:676c:6f77::/48 counter drop",
		"ipv6 ip6 saddr fd12:3456:789a:1::/64 counter drop",
		"ipv6 ip6 daddr fd12:3456:789a:1::/64 counter drop",
		"ipv6 ip6 saddr fd3c:118c:f554::/48 counter drop",
		"ipv6 ip6 daddr fd3c:118c:f554::/48 counter drop",
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", join(got), join(want))
	}
}

func join(s []string) string {
	var b bytes.Buffer
	for _, l := range s {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

func TestRulesNoPrefixes(t *testing.T) {
	_, _, rules := Rules(Config{Interface: "glow1"})
	if len(rules) != 2 {
		t.Fatalf("%d rules, want the two accepts only", len(rules))
	}
	if got := ruleIifname(rules[0]); got != "glow1" {
		t.Errorf("owner read back from the first rule = %q, want glow1", got)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{},
		{Interface: "a-name-that-is-too-long"},
		{Interface: "glow0", Prefixes: []netip.Prefix{{}}},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
		if _, err := Install(c); err == nil {
			t.Errorf("Install(%+v): no error", c)
		} else if !errors.Is(err, ErrInstall) {
			t.Errorf("Install(%+v): %v does not match ErrInstall", c, err)
		}
	}
}
