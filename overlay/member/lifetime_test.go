package member

import (
	"errors"
	"testing"
	"time"

	"glow/internal/wire"
)

func lifeCert(t *testing.T, u *UserKey, k *NodeKeys, name string, from time.Time, life time.Duration) *Cert {
	t.Helper()
	v4, err := AllocIPv4(k.ID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cert{Node: k.ID(), Name: name, WG: k.WGPublic(), Ctl: k.CtlPublic(), IPv4: v4,
		IPv6: NodeAddr6(u.Public(), k.ID()), NotBefore: from, NotAfter: from.Add(life)}
	SignCert(u, c)
	return c
}

func lifeKeys(t *testing.T) *NodeKeys {
	t.Helper()
	k, err := NewNodeKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestStoreRenewal: a renewal (same id, same keys, later start and expiry)
// replaces the certificate held; one that gives the id other keys is
// refused, also once the certificate held expired and was kept aside; a
// renewal of an expired certificate brings back its node's last endpoints.
func TestStoreRenewal(t *testing.T) {
	u, err := NewUserKey("alice")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	k := lifeKeys(t)
	s := NewStore(u.Public())
	c1 := lifeCert(t, u, k, "b", now, 2*time.Minute)
	if ok, err := s.AddCert(c1, now); !ok || err != nil {
		t.Fatalf("first certificate: %v %v", ok, err)
	}
	c2 := lifeCert(t, u, k, "b", now.Add(time.Minute), 2*time.Minute)
	if ok, err := s.AddCert(c2, now.Add(time.Minute)); !ok || err != nil {
		t.Fatalf("renewal refused: %v %v", ok, err)
	}
	other := lifeKeys(t)
	forged := lifeCert(t, u, k, "b", now.Add(90*time.Second), 2*time.Minute)
	forged.WG = other.WGPublic()
	SignCert(u, forged)
	if _, err := s.AddCert(forged, now.Add(90*time.Second)); err == nil || s.Rejected[RejectKeyChange] != 1 {
		t.Fatalf("renewal with other keys: %v", err)
	}
	info := &NodeInfo{Node: k.ID(), Seq: 7}
	SignInfo(k.Sign, info)
	if _, err := s.AddInfo(info); err != nil {
		t.Fatal(err)
	}
	// Expired: past NotAfter and the grace (12 s for 2 minutes).
	at := c2.NotAfter.Add(ExpiryGrace(c2.Lifetime()))
	if gone := s.Expire(at, wire.NodeID{}); len(gone) != 0 {
		t.Fatalf("expired at its grace's last instant: %v", gone)
	}
	if gone := s.Expire(at.Add(time.Nanosecond), wire.NodeID{}); len(gone) != 1 || s.Cert(k.ID()) != nil || s.Info(k.ID()) != nil {
		t.Fatalf("not expired after the grace: %v", gone)
	}
	for _, e := range s.Digest() {
		if e.Node == k.ID() {
			t.Fatalf("expired record still in the digest: %v", e)
		}
	}
	if l, li := s.Lapsed(k.ID()); l != c2 || li != info || s.LapsedByCtl(k.CtlPublic()) != c2 {
		t.Fatal("expired certificate of our user not kept aside with its info")
	}
	if _, err := s.AddCert(forged, at); err == nil {
		t.Fatal("other keys taken for an id whose certificate expired")
	}
	c3 := lifeCert(t, u, k, "b", at, 2*time.Minute)
	if ok, err := s.AddCert(c3, at); !ok || err != nil {
		t.Fatalf("renewal of an expired certificate: %v %v", ok, err)
	}
	if s.Info(k.ID()) != info {
		t.Fatal("the node's last endpoints did not come back with its renewal")
	}
	if l, _ := s.Lapsed(k.ID()); l != nil {
		t.Fatal("renewed certificate still kept aside")
	}
	// A stale expired certificate arriving again (gossip from a node that
	// still held it) is refused and counted.
	if _, err := s.AddCert(c1, at); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired certificate: %v", err)
	}
}

// TestSettings: the lifetime round-trips, is bounded, and a malformed
// document is refused by the store; a store without one says a year.
func TestSettings(t *testing.T) {
	for _, d := range []time.Duration{time.Minute, 2 * time.Minute, 90 * 24 * time.Hour, DefaultCertLifetime} {
		got, err := ParseSettings(FormatSettings(Settings{CertLifetime: d}))
		if err != nil || got.CertLifetime != d {
			t.Errorf("%v: %v %v", d, got, err)
		}
	}
	for _, body := range []string{"cert-lifetime 30s\n", "cert-lifetime 11000d\n", "cert-lifetime x\n", "cert-lifetime\n"} {
		if _, err := ParseSettings([]byte(body)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", body, err)
		}
	}
	if s, err := ParseSettings([]byte("later-key v\ncert-lifetime 5m\n")); err != nil || s.CertLifetime != 5*time.Minute {
		t.Errorf("unknown key: %v %v", s, err)
	}
	u, err := NewUserKey("alice")
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(u.Public())
	if s.CertLifetime() != DefaultCertLifetime {
		t.Fatalf("no settings: %v", s.CertLifetime())
	}
	bad := &UserDoc{Kind: KindSettings, Version: 1, Body: []byte("cert-lifetime 1s\n")}
	if err := SignUserDoc(u, bad); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(KindSettings, bad.Marshal(), time.Now()); err == nil {
		t.Fatal("settings with a 1 s lifetime taken")
	}
	good := &UserDoc{Kind: KindSettings, Version: 2, Body: FormatSettings(Settings{CertLifetime: 2 * time.Minute})}
	if err := SignUserDoc(u, good); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(KindSettings, good.Marshal(), time.Now()); err != nil || s.CertLifetime() != 2*time.Minute {
		t.Fatalf("settings: %v, lifetime %v", err, s.CertLifetime())
	}
}

func FuzzParseSettings(f *testing.F) {
	f.Add([]byte("cert-lifetime 2m0s\n"))
	f.Add([]byte("cert-lifetime 8760h\nother x\n"))
	f.Add([]byte("\n\n x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSettings(b)
		if err != nil {
			return
		}
		if s.CertLifetime != 0 {
			if err := CheckCertLifetime(s.CertLifetime); err != nil {
				t.Fatalf("took %v: %v", s.CertLifetime, err)
			}
			if again, err := ParseSettings(FormatSettings(s)); err != nil || again != s {
				t.Fatalf("round trip: %v %v", again, err)
			}
		}
	})
}
