package overlay

import (
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

func docVersion(n *Node, k member.RecordKind) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if d := n.mem.store.Doc(k); d != nil {
		return d.Version
	}
	return 0
}

// TestAttackLargeDocsSpread: on a line a-b-c-d-e (c, d and e reach the
// admin a only through relays), a 40 KiB policy and a revocation list of
// 1,000 nodes, both far over one control packet, reach every node.
func TestAttackLargeDocsSpread(t *testing.T) {
	nodes, _, _ := lineNet(t, []string{"a", "b", "c", "d", "e"})
	a := nodes[0]
	for _, n := range nodes {
		waitFor(t, 60*time.Second, n.Cert().Name+" to know all five nodes", func() bool {
			n.mu.Lock()
			defer n.mu.Unlock()
			return len(n.mem.store.Certs()) == len(nodes)
		})
	}
	text := membertest.BigPolicy(40 << 10)
	pi, err := a.ApplyPolicy(text)
	if err != nil {
		t.Fatalf("apply a %d-byte policy: %v", len(text), err)
	}
	ids := make([]wire.NodeID, 1000)
	for i := range ids {
		rand.Read(ids[i][:])
	}
	a.mu.Lock()
	rd, err := a.signDocLocked(member.KindRevoked, member.FormatRevoked(ids), time.Now())
	a.mu.Unlock()
	if err != nil {
		t.Fatalf("sign a revocation list of %d nodes: %v", len(ids), err)
	}
	t.Logf("policy %d bytes (version %d), revocation list %d bytes (version %d)",
		len(text), pi.Version, len(rd.Body), rd.Version)

	count := func() (pol, rev int) {
		for _, n := range nodes {
			if docVersion(n, member.KindPolicy) == pi.Version {
				pol++
			}
			if docVersion(n, member.KindRevoked) == rd.Version {
				rev++
			}
		}
		return pol, rev
	}
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	pol, rev := count()
	for (pol < len(nodes) || rev < len(nodes)) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		pol, rev = count()
	}
	t.Logf("policy reached %d/%d nodes, revocation list %d/%d, after %v", pol, len(nodes), rev, len(nodes), time.Since(start).Round(time.Millisecond))
	for _, n := range nodes {
		drops := map[string]uint64{}
		for k, v := range n.Status().Drops {
			if strings.HasPrefix(k, "frag-") || k == "record-too-big" {
				drops[k] = v
			}
		}
		t.Logf("%s: fragment drops %v", n.Cert().Name, drops)
	}
	if pol < len(nodes) || rev < len(nodes) {
		t.Fatalf("policy reached %d/%d nodes, revocation list %d/%d", pol, len(nodes), rev, len(nodes))
	}
	for _, n := range nodes {
		n.mu.Lock()
		revoked := n.mem.store.Revoked(ids[len(ids)-1])
		n.mu.Unlock()
		if !revoked {
			t.Errorf("%s does not hold the last node revoked", n.Cert().Name)
		}
	}
}

// TestAttackOversizeDocRefused: a policy over the maximum document size is
// refused with a clear error, by ApplyPolicy and by a Share that would push
// the policy over it; a change that cannot be stored is refused too, and
// the policy in force stays.
func TestAttackOversizeDocRefused(t *testing.T) {
	n := testNode(t, "n1", func(c *Config) { c.UserName = "alice" })
	over := membertest.BigPolicy(member.MaxDocBody + 1000)
	if _, err := n.ApplyPolicy(over); !errors.Is(err, member.ErrDocTooLarge) {
		t.Errorf("apply a %d-byte policy: %v, want ErrDocTooLarge", len(over), err)
	} else {
		t.Logf("apply a %d-byte policy: %v", len(over), err)
	}
	near := membertest.BigPolicy(member.MaxDocBody)
	near = near[:strings.LastIndexByte(near[:member.MaxDocBody-100], '\n')+1]
	near += "#" + strings.Repeat("x", member.MaxDocBody-10-len(near)-2) + "\n" // 10 bytes short of the maximum
	pi, err := n.ApplyPolicy(near)
	if err != nil {
		t.Fatalf("apply a %d-byte policy: %v", len(near), err)
	}
	_, _, err = n.Share("n1:8081", "carol", true)
	if !errors.Is(err, member.ErrDocTooLarge) {
		t.Errorf("share that makes the policy too large: %v, want ErrDocTooLarge", err)
	} else {
		t.Logf("share that makes the policy too large: %v", err)
	}
	if v := n.Policy().Version; v != pi.Version {
		t.Errorf("policy version %d after a refused share, want %d", v, pi.Version)
	}

	// The list of removed nodes is full at 1,008: the next removal fails,
	// and the node stays.
	now := time.Now()
	n.mu.Lock()
	_, c := membertest.NewCert(t, n.mem.user, "old", now)
	if _, err := n.mem.store.AddCert(c, now); err != nil {
		t.Fatal(err)
	}
	ids := make([]wire.NodeID, member.MaxDocBody/65)
	for i := range ids {
		rand.Read(ids[i][:])
	}
	_, err = n.signDocLocked(member.KindRevoked, member.FormatRevoked(ids), now)
	n.mu.Unlock()
	if err != nil {
		t.Fatalf("sign a list of %d removed nodes: %v", len(ids), err)
	}
	if err := n.RemoveNode("old"); !errors.Is(err, member.ErrDocTooLarge) {
		t.Errorf("removal number %d: %v, want ErrDocTooLarge", len(ids)+1, err)
	} else {
		t.Logf("removal number %d: %v", len(ids)+1, err)
	}
	n.mu.Lock()
	kept := n.mem.store.Cert(c.Node) != nil
	n.mu.Unlock()
	if !kept {
		t.Error("the node whose removal failed is gone")
	}

	// A records cache that cannot be written: share and unshare fail and
	// the policy in force stays.
	if _, err := n.ApplyPolicy(defaultPolicy); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.Share("n1:8082", "carol", true); err != nil {
		t.Fatal(err)
	}
	v := n.Policy().Version
	os.Remove(n.state.Path("records"))
	if err := os.Mkdir(n.state.Path("records"), 0o700); err != nil { // a rename onto it fails, even for root
		t.Fatal(err)
	}
	for _, c := range []struct {
		target string
		share  bool
	}{{"n1:8082", false}, {"n1:8083", true}} {
		info, changed, err := n.Share(c.target, "carol", c.share)
		if err == nil || changed {
			t.Errorf("share=%v %s with a records cache that cannot be written: changed %v, version %d, no error", c.share, c.target, changed, info.Version)
		} else {
			t.Logf("share=%v %s with a records cache that cannot be written: %v", c.share, c.target, err)
		}
		if got := n.Policy().Version; got != v {
			t.Errorf("policy version %d after a change that could not be stored, want %d", got, v)
		}
	}
	if !strings.Contains(n.Policy().Text, "n1:8082") {
		t.Error("the share taken back without being stored is gone from the policy in force")
	}
}

// TestLargeDocMeshOnce: in a full mesh of 6 nodes, a 40 KiB policy crosses
// to each node about once, not from every neighbour: a large record is
// announced (a digest entry) and pulled, not pushed.
func TestLargeDocMeshOnce(t *testing.T) {
	nodes := joinedNet(t, 6)
	pi, err := nodes[0].ApplyPolicy(membertest.BigPolicy(40 << 10))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitFor(t, 30*time.Second, n.Cert().Name+" to get the policy", func() bool { return docVersion(n, member.KindPolicy) == pi.Version })
	}
	// Fragments still queued go out before they are counted.
	waitFor(t, 30*time.Second, "every node's fragment queues to drain", func() bool {
		for _, n := range nodes {
			n.mu.Lock()
			queued := 0
			for _, q := range n.mem.frags.out {
				queued += len(q.recs)
			}
			n.mu.Unlock()
			if queued > 0 {
				return false
			}
		}
		return true
	})
	var sent uint64
	for _, n := range nodes {
		n.mu.Lock()
		sent += n.mem.frags.sent
		n.mu.Unlock()
	}
	per := uint64((len(nodes[0].Policy().Text) + 120 + fragData - 1) / fragData)
	transfers := float64(sent) / float64(per)
	t.Logf("%d fragments sent, %.1f transfers of the policy (%d fragments each) for %d nodes", sent, transfers, per, len(nodes)-1)
	if transfers > 2*float64(len(nodes)-1) {
		t.Fatalf("%.1f transfers of the policy to %d nodes", transfers, len(nodes)-1)
	}
}
