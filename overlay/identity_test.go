package overlay

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// TestJoinSingleUse: a code admits one node; reuse and forged proofs fail.
func TestJoinSingleUse(t *testing.T) {
	admin := testNode(t, "n1", func(c *Config) { c.UserName = "alice" })
	code, err := admin.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	testNode(t, "n2", func(c *Config) { c.JoinCode = code })
	cfg := Config{StateDir: t.TempDir(), NodeName: "n3", Random: true, Userspace: true, OpenUserspace: openUserspace, NoDiscovery: true, NoPortMap: true, HostAddrs: loopback, JoinCode: code}
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

func FuzzParseCtl(f *testing.F) {
	f.Add(pingMsg{}.marshal())
	f.Add(pongMsg{Seen: netip.MustParseAddrPort("1.2.3.4:5")}.marshal())
	f.Add(marshalDigests([]member.DigestEntry{{RecordKey: member.RecordKey{Kind: member.KindCert, Node: wire.NodeID{1}}, Version: 7}})[0])
	f.Add(marshalSummary(member.Summary{1, 2}))
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
	u := membertest.NewUser(f, "alice")
	k, c := membertest.NewCert(f, u, "nas", time.Now())
	bn := &Node{keys: k, mem: membership{cert: c}}
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
		return n2.mem.store.Rejected[member.RejectRevoked]
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
