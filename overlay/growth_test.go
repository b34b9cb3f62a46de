package overlay

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// TestAttackStateGrowth: 10,000 distinct source addresses (127.1.0.0/16 on
// loopback) each send one admin node a join request with a bogus code
// (sealed to the admin's control key: anyone can), a replay of a member's
// beacon, and a sealed ping of that member (a replay: refused since
// control packets and beacons are fresh; TestCandidateAndLearnedCaps
// covers the caps behind that). Every table they reach stays bounded, and
// the heap in use is reported before and after.
func TestAttackStateGrowth(t *testing.T) {
	const sources = 10000
	n1 := testNode(t, "n1", func(c *Config) { c.UserName = "alice" })
	code, err := n1.Invite(time.Hour, 1) // a live code: strangers' requests are opened
	if err != nil {
		t.Fatal(err)
	}
	n2 := testNode(t, "n2", func(c *Config) { c.JoinCode = code })
	for _, n := range []*Node{n1, n2} {
		waitFor(t, 20*time.Second, "a direct path", func() bool { return directPeers(n) == 1 })
	}
	if _, err := n1.Invite(time.Hour, 1); err != nil {
		t.Fatal(err)
	}
	n2.mu.Lock()
	beacon := n2.beaconLocked()
	n2.mu.Unlock()
	toN2 := sharedKey(n2.keys.Ctl, n1.ctlPub)
	heap0 := heapInUse()
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n1.Port()))
	for i := range sources {
		src := netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(1 + i%250)})
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		if err != nil {
			t.Fatal(err)
		}
		var key [32]byte
		rand.Read(key[:])
		stranger := member.NodeKeys{Ctl: key}
		req := joinReq{Name: "x"}
		rand.Read(req.CodeID[:])
		join := sealCtl(nil, stranger.CtlPublic(), sharedKey(key, n1.ctlPub), req.marshal())
		var ping pingMsg
		rand.Read(ping.TxID[:])
		ping.Boot = n2.boot
		for _, b := range [][]byte{join, beacon, sealCtl(nil, n2.ctlPub, toN2, ping.marshal())} {
			c.WriteTo(b, to)
		}
		c.Close()
		if i%25 == 24 {
			time.Sleep(10 * time.Millisecond) // the loop keeps up: no queue drops
		}
	}
	// Looked at once the loop has taken the whole flood: a marker sent after
	// it from one more source (a beacon cut short, counted as malformed) has
	// been taken, and the queue for unauthenticated senders is first in,
	// first out. A full queue may drop a marker: send another, from a fresh
	// source.
	marker := wire.Header(wire.KindBeacon)
	markers := 0
	waitFor(t, 60*time.Second, "a marker sent after the flood to be taken", func() bool {
		n1.mu.Lock()
		taken := n1.dropCtl["beacon-malformed"] > 0
		n1.mu.Unlock()
		if !taken {
			src := netip.AddrFrom4([4]byte{127, 2, byte(markers / 250), byte(1 + markers%250)})
			markers++
			if c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))); err == nil {
				c.WriteTo(marker[:], to)
				c.Close()
			}
		}
		return taken
	})
	heap1 := heapInUse()
	n1.mu.Lock()
	answers := len(n1.adm.joinAnswers)
	cands := len(n1.paths.peers[n2.id].cands)
	drops := fmt.Sprint(n1.dropCtl)
	n1.mu.Unlock()
	n1.bind.mu.Lock()
	learned := len(n1.bind.addrs)
	n1.bind.mu.Unlock()
	limiter := n1.ctlq.lim.sources()
	t.Logf("after %d sources: join answers remembered %d, candidates of n2 %d, learned addresses %d, rate-limiter sources %d; heap in use %.1f MiB -> %.1f MiB (two nodes in one process); queue full %d, rate limited %d; loop drops %s",
		sources, answers, cands, learned, limiter, float64(heap0)/(1<<20), float64(heap1)/(1<<20),
		n1.bind.dropCtlFull.Load(), n1.bind.dropCtlLimited.Load(), drops)
	for _, c := range []struct {
		what     string
		got, max int
	}{
		{"join answers remembered", answers, maxJoinAnswers},
		{"candidates of one peer", cands, maxCandidates},
		{"learned addresses", learned, maxLearnedAddrs},
		{"rate-limiter sources", limiter, maxSources},
	} {
		if c.got > c.max {
			t.Errorf("%s: %d after %d sources (cap %d)", c.what, c.got, sources, c.max)
		}
	}
}

// heapInUse is the heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestAttackFriendCertFlood: a friend holds its user key and can mint node
// certificates without end, and its nodes push them to ours (each would
// become a peer). The store keeps at most maxFriendCerts of one friend.
func TestAttackFriendCertFlood(t *testing.T) {
	const pushed = 1000
	alice, bob := membertest.NewUser(t, "alice"), membertest.NewUser(t, "bob")
	st := member.NewStore(alice.Public())
	if _, err := st.AddDoc(membertest.SignedDoc(alice, member.KindFriends, 1, member.FormatFriends([]member.Friend{{Name: "bob", Key: [32]byte(bob.Public())}}))); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	_, own := membertest.NewCert(t, alice, "nas", now)
	first := map[string]bool{}
	for i := range pushed {
		_, c := membertest.NewCert(t, bob, fmt.Sprintf("b%d", i), now)
		if ok, _ := st.Apply(member.KindCert, c.Marshal(), now); ok && len(first) < 3 {
			first[c.Name] = true
		}
	}
	held := 0
	for _, c := range st.Certs() {
		if c.User == [32]byte(bob.Public()) {
			held++
		}
	}
	t.Logf("a friend pushed %d node certificates; the store holds %d of them (refused as over the cap: %d)", pushed, held, st.Rejected[member.RejectFriendCap])
	if held > member.MaxFriendCerts {
		t.Errorf("the store holds %d certificates of one friend (cap %d)", held, member.MaxFriendCerts)
	}
	if len(first) == 0 {
		t.Error("no friend certificate was accepted at all")
	}
	if ok, err := st.Apply(member.KindCert, own.Marshal(), now); !ok || err != nil {
		t.Errorf("our own certificate after the flood: %v %v", ok, err)
	}
}

// TestCandidateAndLearnedCaps: replayed beacons and pings no longer reach
// the candidate and learned-address tables (control.go, beacon.go), but a
// peer's own records and fresh pings still can, from as many addresses as
// it likes: both tables stay bounded, and the current path stays in both.
func TestCandidateAndLearnedCaps(t *testing.T) {
	nodes := joinedNet(t, 2)
	n1, n2 := nodes[0], nodes[1]
	n1.mu.Lock()
	p := n1.paths.peers[n2.id]
	active := p.active
	now := time.Now()
	for i := range 1000 {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 47470)
		n1.addCandidatesLocked(p, []netip.AddrPort{ap}, now.Add(time.Duration(i)))
		n1.bind.Learn(n2.id, ap)
	}
	cands := len(p.cands)
	_, activeKept := p.cands[active]
	n1.mu.Unlock()
	n1.bind.mu.Lock()
	learned := len(n1.bind.addrs)
	activeLearned := n1.bind.addrs[active] != nil
	n1.bind.mu.Unlock()
	t.Logf("1000 addresses named and learned for one peer: %d candidates, %d learned addresses", cands, learned)
	if cands > maxCandidates || learned > maxLearnedAddrs {
		t.Errorf("%d candidates (cap %d), %d learned addresses (cap %d)", cands, maxCandidates, learned, maxLearnedAddrs)
	}
	if !activeKept || !activeLearned {
		t.Errorf("the current path %v was evicted: candidate %v, learned %v", active, activeKept, activeLearned)
	}
}
