package member_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

func TestAddresses(t *testing.T) {
	u := membertest.NewUser(t, "alice")
	k, _ := member.NewNodeKeys()
	p := member.UserPrefix6(u.Public())
	if !p.Addr().Is6() || p.Addr().As16()[0] != 0xfd || p.Bits() != 48 {
		t.Fatalf("user prefix %v is not a ULA /48", p)
	}
	a := member.NodeAddr6(u.Public(), k.ID())
	if !p.Contains(a) {
		t.Fatalf("%v not in %v", a, p)
	}
	if member.NodeAddr6(u.Public(), k.ID()) != a {
		t.Fatal("IPv6 not deterministic")
	}
	// IPv4 allocation avoids used addresses and stays in range.
	used := map[netip.Addr]bool{}
	for i := 0; i < 200; i++ {
		v4, err := member.AllocIPv4(k.ID(), used)
		if err != nil {
			t.Fatal(err)
		}
		if used[v4] || !member.IPv4Range.Contains(v4) || member.ReservedV4[v4] {
			t.Fatalf("bad allocation %v", v4)
		}
		used[v4] = true
	}
}

func TestCertRoundTripAndForgery(t *testing.T) {
	now := time.Now()
	alice, mallory := membertest.NewUser(t, "alice"), membertest.NewUser(t, "mallory")
	_, c := membertest.NewCert(t, alice, "nas", now)
	got, err := member.ParseCert(c.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "nas" || got.UserName != "alice" || got.IPv4 != c.IPv4 || got.IPv6 != c.IPv6 || got.WG != c.WG {
		t.Fatalf("round trip: %+v", got)
	}
	if err := got.Verify(alice.Public(), now); err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(mallory.Public(), now); !errors.Is(err, member.ErrWrongUser) {
		t.Fatalf("other user's key accepted: %v", err)
	}
	if err := got.Verify(alice.Public(), now.Add(2*time.Hour)); !errors.Is(err, member.ErrExpired) {
		t.Fatalf("expired accepted: %v", err)
	}
	// Every single-bit flip is rejected.
	raw := c.Marshal()
	for i := 0; i < len(raw)*8; i += 7 {
		b := bytes.Clone(raw)
		b[i/8] ^= 1 << (i % 8)
		if _, err := member.ParseCert(b); err == nil {
			t.Fatalf("flip of bit %d accepted", i)
		}
	}
	// A certificate naming alice's key but signed by mallory.
	k, _ := member.NewNodeKeys()
	forged := &member.Cert{Node: k.ID(), Name: "evil", WG: k.WGPublic(), Ctl: k.CtlPublic(), IPv4: c.IPv4,
		IPv6: member.NodeAddr6(alice.Public(), k.ID()), NotBefore: now, NotAfter: now.Add(time.Hour)}
	member.SignCert(mallory, forged)
	b := forged.Marshal()
	copy(b[1:33], alice.Public()) // claim alice's key
	if _, err := member.ParseCert(b); !errors.Is(err, member.ErrBadSignature) && !errors.Is(err, member.ErrMalformed) {
		t.Fatalf("forged certificate: %v", err)
	}
	if _, err := member.ParseCert(raw[:len(raw)-1]); err == nil {
		t.Fatal("truncated certificate accepted")
	}
}

func FuzzParseCert(f *testing.F) {
	u := membertest.NewUser(f, "alice")
	_, c := membertest.NewCert(f, u, "nas", time.Now())
	f.Add(c.Marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := member.ParseCert(b)
		if err == nil && !bytes.Equal(c.Marshal(), b) {
			t.Fatal("accepted certificate does not re-encode to its bytes")
		}
	})
}
