package overlay

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// splitRecord cuts raw into fragments as the sender does.
func splitRecord(key member.RecordKey, version uint64, raw []byte) []fragMsg {
	sum := sha256.Sum256(raw)
	var out []fragMsg
	for off := 0; off < len(raw); off += fragData {
		end := min(off+fragData, len(raw))
		out = append(out, fragMsg{Key: key, Version: version, Total: len(raw), Sum: sum, Off: off, Data: raw[off:end]})
	}
	return out
}

// A fragment, sealed, fits the minimum-MTU control packet that also
// travels inside relay frames; it parses back as it was.
func TestFragmentFitsPacket(t *testing.T) {
	raw := make([]byte, maxFragRecord)
	rand.Read(raw)
	fs := splitRecord(member.RecordKey{Kind: member.KindPolicy}, 3, raw)
	var shared [32]byte
	for _, f := range fs {
		m := f.marshal()
		if pkt := sealCtl(nil, wire.Key{}, &shared, m); len(pkt) > maxCtlPacket {
			t.Fatalf("fragment packet of %d bytes, over %d", len(pkt), maxCtlPacket)
		}
		got, err := parseCtl(m)
		if err != nil {
			t.Fatal(err)
		}
		g := got.(fragMsg)
		if g.Key != f.Key || g.Version != f.Version || g.Total != f.Total || g.Sum != f.Sum || g.Off != f.Off || !bytes.Equal(g.Data, f.Data) {
			t.Fatalf("fragment at %d does not parse back", f.Off)
		}
	}
	t.Logf("a %d-byte record travels in %d fragments", len(raw), len(fs))
}

// Reassembly: out of order and with duplicates it completes once; a hash
// mismatch, a sender's fifth assembly and the memory bound are drops.
func TestFragmentAssembly(t *testing.T) {
	now := time.Now()
	raw := make([]byte, 5000)
	rand.Read(raw)
	key := member.RecordKey{Kind: member.KindPolicy}
	parts := splitRecord(key, 1, raw)
	var fs fragments
	from := wire.NodeID{1}
	for i := len(parts) - 1; i >= 1; i-- { // backwards, the first last
		if got, drop := fs.add(from, parts[i], now); got != nil || drop != "" {
			t.Fatalf("fragment %d: got %d bytes, drop %q", i, len(got), drop)
		}
		fs.add(from, parts[i], now) // a duplicate changes nothing
	}
	got, drop := fs.add(from, parts[0], now)
	if !bytes.Equal(got, raw) || drop != "" {
		t.Fatalf("complete: %d bytes, drop %q", len(got), drop)
	}
	if len(fs.in) != 0 || fs.bytes != 0 {
		t.Fatalf("%d assemblies, %d bytes held after completion", len(fs.in), fs.bytes)
	}

	// Bytes that do not match the hash.
	bad := splitRecord(key, 2, raw)
	bad[1].Data = bytes.Repeat([]byte{0}, len(bad[1].Data))
	for i, f := range bad {
		got, drop = fs.add(from, f, now)
		if i < len(bad)-1 && drop != "" {
			t.Fatalf("fragment %d: drop %q", i, drop)
		}
	}
	if got != nil || drop != "frag-hash" {
		t.Fatalf("forged bytes: got %d bytes, drop %q", len(got), drop)
	}

	// One sender holds at most fragPerPeer assemblies.
	for v := range uint64(fragPerPeer + 1) {
		_, drop = fs.add(from, splitRecord(key, 10+v, raw)[0], now.Add(time.Duration(v)))
	}
	if drop != "frag-evicted" || len(fs.in) != fragPerPeer {
		t.Fatalf("after %d assemblies of one sender: %d held, drop %q", fragPerPeer+1, len(fs.in), drop)
	}
	// All senders together hold at most fragMaxBytes.
	big := make([]byte, maxFragRecord)
	refused := 0
	for i := range 64 {
		if _, drop := fs.add(wire.NodeID{byte(i + 2)}, splitRecord(key, 1, big)[0], now); drop == "frag-no-room" {
			refused++
		}
	}
	if fs.bytes > fragMaxBytes || refused == 0 {
		t.Fatalf("%d bytes held (max %d), %d refused", fs.bytes, fragMaxBytes, refused)
	}
	if n := fs.expire(now.Add(fragTimeout + time.Second)); n == 0 || len(fs.in) != 0 || fs.bytes != 0 {
		t.Fatalf("expire: %d dropped, %d left, %d bytes", n, len(fs.in), fs.bytes)
	}
}

// TestLargeDocLossyLink: a-b-c where b loses every fourth large datagram to
// c. The fragments lost are brought again by anti-entropy (digest, want,
// the whole record again filling the gaps), and c gets the 40 KiB policy.
func TestLargeDocLossyLink(t *testing.T) {
	nodes, lk, ips := lineNet(t, []string{"a", "b", "c"})
	for _, n := range nodes {
		waitFor(t, 60*time.Second, n.Cert().Name+" to know all nodes", func() bool {
			n.mu.Lock()
			defer n.mu.Unlock()
			return len(n.mem.store.Certs()) == len(nodes)
		})
	}
	var seen, lost atomic.Int64
	lk.mu.Lock()
	lk.lose = func(a, b netip.Addr, pkt []byte) bool {
		if a != ips[1] || b != ips[2] || len(pkt) < 1000 {
			return false
		}
		if seen.Add(1)%4 == 0 {
			lost.Add(1)
			return true
		}
		return false
	}
	lk.mu.Unlock()
	pi, err := nodes[0].ApplyPolicy(membertest.BigPolicy(40 << 10))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "c to get the policy", func() bool { return docVersion(nodes[2], member.KindPolicy) == pi.Version })
	t.Logf("b -> c: %d large datagrams, %d lost; c's drops: %v", seen.Load(), lost.Load(), nodes[2].Status().Drops)
	if lost.Load() == 0 {
		t.Fatal("no datagram was lost: the test tested nothing")
	}
}

// FuzzParseFragment parses fragments and feeds the good ones to an
// assembly: no panic, memory within its bounds, and a record comes out
// only when it matches its hash.
func FuzzParseFragment(f *testing.F) {
	raw := bytes.Repeat([]byte("record "), 400)
	parts := splitRecord(member.RecordKey{Kind: member.KindRevoked, Node: wire.NodeID{9}}, 4, raw)
	f.Add(parts[0].marshal(), parts[1].marshal())
	f.Add(parts[2].marshal(), []byte{byte(msgRecordFrag)})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var fs fragments
		now := time.Now()
		for i, m := range [][]byte{a, b, a} {
			if len(m) == 0 || msgType(m[0]) != msgRecordFrag {
				continue
			}
			r := wire.Reader{B: m[1:]}
			fr, err := parseFragment(&r)
			if err != nil {
				continue
			}
			if fr.Total > maxFragRecord || fr.Off+len(fr.Data) > fr.Total {
				t.Fatalf("parsed fragment out of bounds: %d bytes at %d of %d", len(fr.Data), fr.Off, fr.Total)
			}
			got, _ := fs.add(wire.NodeID{byte(i % 2)}, fr, now)
			if got != nil && sha256.Sum256(got) != fr.Sum {
				t.Fatal("a record that does not match its hash came out")
			}
			if fs.bytes > fragMaxBytes || len(fs.in) > fragMaxAssemblies {
				t.Fatalf("%d assemblies, %d bytes held", len(fs.in), fs.bytes)
			}
		}
	})
}

// TestLargeDocOverRelay: a-b-c, a sends c a 60 KiB policy over its relay
// route (inside relay frames through b), as it answers a want that came
// relayed: every fragment fits a relay frame and passes b's limits.
func TestLargeDocOverRelay(t *testing.T) {
	nodes, _, _ := lineNet(t, []string{"a", "b", "c"})
	a, b, c := nodes[0], nodes[1], nodes[2]
	waitFor(t, 60*time.Second, "a to route to c over b", func() bool {
		path, via := routeOf(a, "c")
		return path == "relay" && len(via) == 1
	})
	fwd0 := b.Status().Drops["relay/forwarded"]
	a.mu.Lock()
	d := &member.UserDoc{Kind: member.KindPolicy, Version: 99, Body: []byte(membertest.BigPolicy(60 << 10))}
	if err := member.SignUserDoc(a.mem.user, d); err != nil {
		t.Fatal(err)
	}
	if _, err := a.mem.store.AddDoc(d); err != nil { // held, not flooded
		t.Fatal(err)
	}
	a.sendRecordsLocked(a.paths.peers[c.id], netip.AddrPort{}, []member.RecordKey{d.Key()})
	a.mu.Unlock()
	waitFor(t, 30*time.Second, "c to get the policy", func() bool { return docVersion(c, member.KindPolicy) == d.Version })
	fwd := b.Status().Drops["relay/forwarded"] - fwd0
	per := uint64((len(d.Marshal()) + fragData - 1) / fragData)
	t.Logf("b forwarded %d frames; the policy is %d fragments", fwd, per)
	if fwd < per {
		t.Fatalf("b forwarded %d frames, fewer than the %d fragments", fwd, per)
	}
}
