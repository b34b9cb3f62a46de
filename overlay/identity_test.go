package overlay

import (
	"bytes"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"glow/internal/leaktest"
	"glow/internal/wire"
	"glow/overlay/member"
)

func newTestUser(t testing.TB, name string) *member.UserKey {
	u, err := member.NewUserKey(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func newTestCert(t testing.TB, u *member.UserKey, name string, now time.Time) (*member.NodeKeys, *member.Cert) {
	k, err := member.NewNodeKeys()
	if err != nil {
		t.Fatal(err)
	}
	v4, _ := member.AllocIPv4(k.ID(), nil)
	c := &member.Cert{Node: k.ID(), Name: name, WG: k.WGPublic(), Ctl: k.CtlPublic(), IPv4: v4,
		IPv6: member.NodeAddr6(u.Public(), k.ID()), NotBefore: now, NotAfter: now.Add(time.Hour)}
	member.SignCert(u, c)
	return k, c
}

func TestAddresses(t *testing.T) {
	u := newTestUser(t, "alice")
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
	alice, mallory := newTestUser(t, "alice"), newTestUser(t, "mallory")
	_, c := newTestCert(t, alice, "nas", now)
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

func TestStoreRejectsForgedStaleExpired(t *testing.T) {
	now := time.Now()
	alice, mallory := newTestUser(t, "alice"), newTestUser(t, "mallory")
	st := member.NewStore(alice.Public())
	k, c := newTestCert(t, alice, "nas", now)
	if ok, err := st.Apply(member.KindCert, c.Marshal(), now); !ok || err != nil {
		t.Fatalf("valid cert: %v %v", ok, err)
	}
	if ok, err := st.Apply(member.KindCert, c.Marshal(), now); ok || err != nil {
		t.Fatalf("same cert again: %v %v", ok, err)
	}
	_, mc := newTestCert(t, mallory, "evil", now)
	if _, err := st.Apply(member.KindCert, mc.Marshal(), now); err == nil || st.Rejected[member.RejectUser] != 1 {
		t.Fatalf("other user's cert: %v %v", err, st.Rejected)
	}
	_, old := newTestCert(t, alice, "old", now.Add(-3*time.Hour))
	if _, err := st.Apply(member.KindCert, old.Marshal(), now); err == nil || st.Rejected[member.RejectExpired] != 1 {
		t.Fatalf("expired cert: %v %v", err, st.Rejected)
	}
	if _, err := st.Apply(member.KindCert, []byte("garbage"), now); err == nil || st.Rejected[member.RejectMalformed] != 1 {
		t.Fatalf("garbage: %v", err)
	}
	// Node info: signed by the node, ordered by Seq.
	info := &member.NodeInfo{Node: k.ID(), Seq: 10, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:47470")}}
	member.SignInfo(k.Sign, info)
	if ok, err := st.Apply(member.KindInfo, info.Marshal(), now); !ok || err != nil {
		t.Fatalf("info: %v %v", ok, err)
	}
	stale := &member.NodeInfo{Node: k.ID(), Seq: 9}
	member.SignInfo(k.Sign, stale)
	if _, err := st.Apply(member.KindInfo, stale.Marshal(), now); err == nil || st.Rejected[member.RejectStale] != 1 {
		t.Fatalf("replayed older info: %v %v", err, st.Rejected)
	}
	other, _ := member.NewNodeKeys()
	forged := &member.NodeInfo{Node: k.ID(), Seq: 11}
	member.SignInfo(other.Sign, forged) // signed by the wrong key
	if _, err := st.Apply(member.KindInfo, forged.Marshal(), now); err == nil || st.Rejected[member.RejectSignature] != 1 {
		t.Fatalf("forged info: %v %v", err, st.Rejected)
	}
	orphan := &member.NodeInfo{Node: other.ID(), Seq: 1}
	member.SignInfo(other.Sign, orphan)
	if _, err := st.Apply(member.KindInfo, orphan.Marshal(), now); err == nil || st.Rejected[member.RejectNoCert] != 1 {
		t.Fatalf("info of uncertified node: %v", err)
	}
	if st.Info(k.ID()).Seq != 10 {
		t.Fatal("store lost the good record")
	}
	// A newer certificate for the same node replaces the old one.
	c2 := *c
	c2.Raw = nil
	c2.NotBefore = now.Add(time.Second)
	member.SignCert(alice, &c2)
	if ok, err := st.Apply(member.KindCert, c2.Marshal(), now); !ok || err != nil {
		t.Fatalf("newer cert: %v %v", ok, err)
	}
	if ok, err := st.Apply(member.KindCert, c.Marshal(), now); ok || err == nil {
		t.Fatal("older cert replaced a newer one")
	}
}

func TestInviteCodes(t *testing.T) {
	alice := newTestUser(t, "alice")
	k, _ := member.NewNodeKeys()
	inv := &member.Invite{UserHash: member.UserHash(alice.Public()), Inviter: k.CtlPublic(),
		Expires: time.Unix(1900000000, 0), Endpoints: []netip.AddrPort{
			netip.MustParseAddrPort("10.0.0.1:47470"), netip.MustParseAddrPort("[2001:db8::1]:47470")}}
	copy(inv.Secret[:], "0123456789abcdef")
	code := inv.Code()
	if !strings.HasPrefix(code, "glow-") || strings.ContainsAny(code, " \n") {
		t.Fatalf("code %q", code)
	}
	got, err := member.ParseInvite(code)
	if err != nil {
		t.Fatal(err)
	}
	if got.Secret != inv.Secret || got.Inviter != inv.Inviter || len(got.Endpoints) != 2 || got.Endpoints[1] != inv.Endpoints[1] || !got.Expires.Equal(inv.Expires) {
		t.Fatalf("round trip: %+v", got)
	}
	if _, err := member.ParseInvite(strings.ToUpper(code[:5]) + code[5:]); err == nil {
		t.Fatal("wrong prefix accepted")
	}
	bad := []string{"", "glow-", "glow-abc", code[:len(code)-1], code[:20] + "z" + code[21:], code + "a", "tskey-abc"}
	for _, b := range bad {
		if _, err := member.ParseInvite(b); err == nil {
			t.Errorf("malformed code %q accepted", b)
		}
	}
}

// TestJoinSingleUse: a code admits one node; reuse and forged proofs fail.
func TestJoinSingleUse(t *testing.T) {
	admin := testNode(t, "n1", func(c *Config) { c.UserName = "alice" })
	code, err := admin.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	testNode(t, "n2", func(c *Config) { c.JoinCode = code })
	cfg := Config{StateDir: t.TempDir(), NodeName: "n3", Random: true, Userspace: true, NoDiscovery: true, NoPortMap: true, HostAddrs: loopback, JoinCode: code}
	if n, err := Start(cfg); err == nil {
		n.Close()
		t.Fatal("a used code admitted a second node")
	} else if !strings.Contains(err.Error(), "already used") {
		t.Fatalf("reuse: %v", err)
	}
	// The failed join left no certificate behind, and kept the keys it made.
	st := member.State{Dir: cfg.StateDir}
	if st.Exists("cert") || !st.Exists("node.key") {
		t.Fatal("failed join: want node.key and no cert")
	}
	// A wrong secret for a real code id: the proof fails.
	inv, _ := member.ParseInvite(code)
	inv.Secret[0] ^= 1
	cfg.StateDir = t.TempDir()
	cfg.JoinCode = inv.Code()
	if n, err := Start(cfg); err == nil {
		n.Close()
		t.Fatal("wrong secret admitted")
	}
	// Expired codes are refused.
	code2, _ := admin.Invite(time.Nanosecond, 1)
	time.Sleep(time.Millisecond)
	cfg.StateDir, cfg.JoinCode = t.TempDir(), code2
	if n, err := Start(cfg); err == nil {
		n.Close()
		t.Fatal("expired code admitted")
	}
}

func TestStateFiles(t *testing.T) {
	leaktest.Check(t) // a Start that fails leaves nothing running
	st := member.State{Dir: t.TempDir()}
	if _, err := st.LoadNodeKeys(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing keys: %v", err)
	}
	k, _ := member.NewNodeKeys()
	if err := st.SaveNodeKeys(k); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(st.Path("node.key"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("node.key mode %v", fi.Mode())
	}
	k2, err := st.LoadNodeKeys()
	if err != nil || k2.ID() != k.ID() || k2.WG != k.WG || k2.Ctl != k.Ctl {
		t.Fatalf("reload: %v", err)
	}
	other, _ := member.NewNodeKeys()
	if err := st.SaveNodeKeys(other); err == nil {
		t.Fatal("keys overwritten")
	}
	if k3, _ := st.LoadNodeKeys(); k3.ID() != k.ID() {
		t.Fatal("keys replaced")
	}
	// Damaged files name themselves and are left alone.
	orig, _ := os.ReadFile(st.Path("node.key"))
	for _, bad := range []string{"", "nonsense", "glow node key v1\nsign AAAA\n", strings.Replace(string(orig), "wg ", "wg x", 1)} {
		os.WriteFile(st.Path("node.key"), []byte(bad), 0o600)
		_, err := st.LoadNodeKeys()
		var de *member.DamagedError
		if !errors.As(err, &de) || !errors.Is(err, member.ErrDamaged) || !strings.Contains(err.Error(), st.Path("node.key")) {
			t.Fatalf("damaged %q: %v", bad, err)
		}
		if got, _ := os.ReadFile(st.Path("node.key")); string(got) != bad {
			t.Fatal("damaged key file was rewritten")
		}
	}
	os.WriteFile(st.Path("node.key"), orig, 0o600)
	os.WriteFile(st.Path("cert"), []byte("not a cert"), 0o644)
	if _, err := st.LoadCert(); !errors.Is(err, member.ErrDamaged) {
		t.Fatalf("damaged cert: %v", err)
	}
	// Start refuses a damaged state and names the file.
	_, err = Start(Config{StateDir: st.Dir, NodeName: "x", Random: true, Userspace: true, NoDiscovery: true, NoPortMap: true})
	if err == nil || !strings.Contains(err.Error(), "cert") {
		t.Fatalf("start on damaged state: %v", err)
	}
	// A damaged records cache is not fatal.
	os.WriteFile(st.Path("records"), []byte{1, 2}, 0o600)
	if err := st.LoadRecords(member.NewStore(nil), func(member.RecordKind, []byte) error { return nil }); !errors.Is(err, member.ErrDamaged) {
		t.Fatalf("damaged records: %v", err)
	}
}

// TestRestartKeepsIdentity: a node restarted on the same state keeps its
// addresses, and finds its peers from the records cache with no admin up.
func TestRestartKeepsIdentity(t *testing.T) {
	nodes := joinedNet(t, 3)
	n2 := nodes[1]
	dir := n2.cfg.StateDir
	v4 := n2.Cert().IPv4
	nodes[0].Close() // the admin goes away
	n2.Close()
	again := testNode(t, "n2", func(c *Config) { c.StateDir = dir })
	if again.Cert().IPv4 != v4 {
		t.Fatalf("address changed: %v -> %v", v4, again.Cert().IPv4)
	}
	waitFor(t, 20*time.Second, "restarted n2 to reach n3", func() bool {
		for _, p := range again.Status().Peers {
			if p.Name == "n3" && p.Online {
				return true
			}
		}
		return false
	})
}

func FuzzParseCert(f *testing.F) {
	u := newTestUser(f, "alice")
	_, c := newTestCert(f, u, "nas", time.Now())
	f.Add(c.Marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := member.ParseCert(b)
		if err == nil && !bytes.Equal(c.Marshal(), b) {
			t.Fatal("accepted certificate does not re-encode to its bytes")
		}
	})
}

func FuzzParseInfo(f *testing.F) {
	k, _ := member.NewNodeKeys()
	n := &member.NodeInfo{Node: k.ID(), Seq: 1, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("[::1]:1")}}
	member.SignInfo(k.Sign, n)
	f.Add(n.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) { member.ParseInfo(b) })
}

func FuzzParseInvite(f *testing.F) {
	inv := &member.Invite{Expires: time.Unix(1, 0), Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:1")}}
	f.Add(inv.Code())
	inv.Streams = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:443")}
	f.Add(inv.Code())
	f.Add("glow-")
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := member.ParseInvite(s)
		if err == nil {
			again, err := member.ParseInvite(inv.Code())
			if err != nil {
				t.Fatalf("re-encoded code does not parse: %v", err)
			}
			if !slices.Equal(again.Streams, inv.Streams) || len(inv.Streams) > member.MaxInviteStreams {
				t.Fatalf("stream addresses %v, re-read as %v", inv.Streams, again.Streams)
			}
		}
	})
}

func FuzzParseCtl(f *testing.F) {
	f.Add(pingMsg{}.marshal())
	f.Add(pongMsg{Seen: netip.MustParseAddrPort("1.2.3.4:5")}.marshal())
	f.Add(marshalDigests([]member.DigestEntry{{RecordKey: member.RecordKey{Kind: member.KindCert, Node: wire.NodeID{1}}, Version: 7}})[0])
	f.Add(marshalWants([]member.RecordKey{{Kind: member.KindInfo, Node: wire.NodeID{2}}})[0])
	f.Add(marshalRecords([]recordMsg{{member.KindCert, []byte("x")}})[0])
	f.Add(joinReq{Name: "a", Sig: [64]byte{1}}.marshal())
	f.Add(joinReq{Name: "a"}.marshal()[:1+16+16+32+32+32+1+1]) // from a joiner that signs nothing
	f.Add(joinResp{OK: true, Cert: []byte("c")}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseCtl(b)
		if j, ok := m.(joinReq); ok && err == nil {
			// A join request re-encodes to its bytes (with a signature, zero if it had none).
			if again, err := parseCtl(j.marshal()); err != nil || again.(joinReq) != j {
				t.Fatalf("join request does not round-trip: %v", err)
			}
		}
	})
}

func FuzzParseBeacon(f *testing.F) {
	u := newTestUser(f, "alice")
	k, c := newTestCert(f, u, "nas", time.Now())
	bn := &Node{keys: k, cert: c}
	bn.port.Store(1)
	f.Add(bn.beaconLocked())
	h := wire.Header(wire.KindBeacon)
	f.Add(append(append(h[:], 0, 1), c.Marshal()...))
	f.Fuzz(func(t *testing.T, b []byte) { parseBeacon(b) })
}

func TestControlSealing(t *testing.T) {
	a, _ := member.NewNodeKeys()
	b, _ := member.NewNodeKeys()
	m := pingMsg{TxID: [12]byte{1, 2, 3}}.marshal()
	pkt := sealCtl(nil, a.CtlPublic(), sharedKey(a.Ctl, b.CtlPublic()), m)
	if wire.Classify(pkt) != wire.KindControl {
		t.Fatal("sealed packet not classified as control")
	}
	sender, err := ctlSender(pkt)
	if err != nil || sender != a.CtlPublic() {
		t.Fatal("sender key")
	}
	got, err := openCtl(pkt, sharedKey(b.Ctl, sender))
	if err != nil || !bytes.Equal(got, m) {
		t.Fatalf("open: %v", err)
	}
	c, _ := member.NewNodeKeys()
	if _, err := openCtl(pkt, sharedKey(c.Ctl, sender)); err == nil {
		t.Fatal("a third party opened the packet")
	}
	pkt[len(pkt)-1] ^= 1
	if _, err := openCtl(pkt, sharedKey(b.Ctl, sender)); err == nil {
		t.Fatal("tampered packet opened")
	}
}

// TestRemoveNode: a revoked node is dropped by every node of the user and
// cannot come back with its certificate.
func TestRemoveNode(t *testing.T) {
	nodes := joinedNet(t, 3)
	admin, n2, n3 := nodes[0], nodes[1], nodes[2]
	serveEcho(t, n2, 7000)
	if c, err := dial(n3, n2.Cert().IPv4, 7000, 5*time.Second); err != nil {
		t.Fatalf("before removal: %v", err)
	} else {
		c.Close()
	}
	if err := n2.RemoveNode("n3"); err == nil {
		t.Fatal("a non-admin node removed a node")
	}
	if err := admin.RemoveNode("n3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "n2 to drop n3", func() bool {
		_, ok := peerStatus(n2, "n3")
		return !ok
	})
	if _, ok := peerStatus(admin, "n3"); ok {
		t.Fatal("the admin still has n3 as a peer")
	}
	// n3 still pings and gossips; it must stay refused. Looked at once
	// something of n3's has reached n2 since it dropped n3 and was refused
	// (its certificate, or a control packet from a sender n2 no longer
	// knows): n3 was heard, and not taken back.
	refusedRevoked := func() uint64 {
		n2.mu.Lock()
		defer n2.mu.Unlock()
		return n2.store.Rejected[member.RejectRevoked]
	}
	r0, d0 := refusedRevoked(), controlDrops(n2)
	waitFor(t, 30*time.Second, "n2 to refuse something of n3's", func() bool {
		return refusedRevoked() > r0 || controlDrops(n2) > d0
	})
	if _, ok := peerStatus(n2, "n3"); ok {
		t.Fatal("n3 came back")
	}
	refused := refusedRevoked()
	if _, err := dial(n3, n2.Cert().IPv4, 7000, 2*time.Second); err == nil {
		t.Fatal("the removed node reached n2")
	}
	t.Logf("n2 refused the removed node's certificate %d times, and %d control packets", refused, controlDrops(n2))
}

// TestStoreRefusesKeyChange: a certificate that gives a known node other
// keys, or puts it under another user, is refused even when the user key
// signed it; after a revocation of the node, and only then, the id is free.
func TestStoreRefusesKeyChange(t *testing.T) {
	now := time.Now()
	alice, bob := newTestUser(t, "alice"), newTestUser(t, "bob")
	st := member.NewStore(alice.Public())
	_, c := newTestCert(t, alice, "nas", now)
	if ok, err := st.Apply(member.KindCert, c.Marshal(), now); !ok || err != nil {
		t.Fatalf("valid cert: %v %v", ok, err)
	}
	other, _ := member.NewNodeKeys()
	rekey := func(u *member.UserKey, wg, ctl wire.Key, at time.Time) *member.Cert {
		c2 := *c
		c2.Raw, c2.WG, c2.Ctl, c2.NotBefore = nil, wg, ctl, at
		c2.IPv6 = member.NodeAddr6(u.Public(), c.Node)
		member.SignCert(u, &c2)
		return &c2
	}
	newWG := rekey(alice, other.WGPublic(), c.Ctl, now.Add(time.Second))
	newCtl := rekey(alice, c.WG, other.CtlPublic(), now.Add(time.Second))
	for _, bad := range []*member.Cert{newWG, newCtl} {
		if ok, err := st.Apply(member.KindCert, bad.Marshal(), now); ok || err == nil {
			t.Fatalf("key change accepted: %v %v", ok, err)
		}
	}
	// A friend's user key cannot claim the node either.
	st.AddDoc(signedDoc(alice, member.KindFriends, 1, member.FormatFriends([]member.Friend{{Name: "bob", Key: [32]byte(bob.Public())}})))
	if ok, err := st.Apply(member.KindCert, rekey(bob, c.WG, c.Ctl, now.Add(time.Second)).Marshal(), now); ok || err == nil {
		t.Fatalf("another user's certificate for the node accepted: %v %v", ok, err)
	}
	if n := st.Rejected[member.RejectKeyChange]; n != 3 {
		t.Fatalf("key-change refusals counted %d, want 3", n)
	}
	if !bytes.Equal(st.Cert(c.Node).Marshal(), c.Marshal()) {
		t.Fatal("the held certificate changed")
	}
	// A renewal with the same keys is fine.
	renewed := rekey(alice, c.WG, c.Ctl, now.Add(2*time.Second))
	if ok, err := st.Apply(member.KindCert, renewed.Marshal(), now); !ok || err != nil {
		t.Fatalf("renewal: %v %v", ok, err)
	}
	// Revoked, the id takes no certificate; once the revocation is lifted by
	// a newer list, it takes one with new keys.
	st.AddDoc(signedDoc(alice, member.KindRevoked, 1, member.FormatRevoked([]wire.NodeID{c.Node})))
	if ok, err := st.Apply(member.KindCert, newWG.Marshal(), now); ok || err == nil || st.Rejected[member.RejectRevoked] != 1 {
		t.Fatalf("certificate of a revoked node: %v %v", ok, err)
	}
	st.AddDoc(signedDoc(alice, member.KindRevoked, 2, nil))
	if ok, err := st.Apply(member.KindCert, newWG.Marshal(), now); !ok || err != nil {
		t.Fatalf("new keys after a revocation: %v %v", ok, err)
	}
}
