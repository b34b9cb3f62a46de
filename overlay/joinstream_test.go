package overlay

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/link"
	"glow/nat/natlab"
	"glow/overlay/member"
)

// TestJoinOverTCP: a joiner whose UDP to every member is dropped joins over
// a TCP connection to a member's link port: to the inviter itself (whose
// link address the code carries), and to another member, which passes the
// request on to the inviter and the answer back down the connection.
// Before joinstream.go such a joiner had only UDP and failed after 30 s.
func TestJoinOverTCP(t *testing.T) {
	in := natlab.NewInternet()
	nas := labNode(t, in.NewHost(netip.MustParseAddr("203.0.113.2")), nil, "nas", func(c *Config) {
		c.UserName, c.LinkListen = "alice", "127.0.0.1:0"
	})
	code, err := nas.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	desk := labNode(t, in.NewHost(netip.MustParseAddr("203.0.113.3")), nil, "desk", func(c *Config) {
		c.JoinCode, c.LinkListen = code, "127.0.0.1:0"
	})
	waitFor(t, 20*time.Second, "desk to reach the nas", func() bool { return directPeers(desk) == 1 })

	blocked := &links{allowed: map[[2]netip.Addr]bool{}} // every datagram of the joiners dropped
	for i, via := range []*Node{nas, desk} {
		code, err := nas.Invite(time.Minute, 1)
		if err != nil {
			t.Fatal(err)
		}
		inv, err := member.ParseInvite(code)
		if err != nil {
			t.Fatal(err)
		}
		if want := netip.MustParseAddrPort(nas.LinkAddr()); len(inv.Streams) != 1 || inv.Streams[0] != want {
			t.Fatalf("the code carries stream addresses %v, want [%v]", inv.Streams, want)
		}
		if via == desk {
			inv.Streams = []netip.AddrPort{netip.MustParseAddrPort(desk.LinkAddr())}
			code = inv.Code()
		}
		start := time.Now()
		name := []string{"lap1", "lap2"}[i]
		lap := labNode(t, in.NewHost(netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})), blocked, name, func(c *Config) { c.JoinCode = code })
		t.Logf("JOIN %s over tcp to %s: %v", name, via.cfg.NodeName, time.Since(start).Round(time.Millisecond))
		if c := lap.Cert(); c.UserName != "alice" {
			t.Fatalf("%s joined %q", name, c.UserName)
		}
	}
	desk.mu.Lock()
	var streamed int
	for _, p := range desk.adm.joinRelay.passed {
		if p.stream {
			streamed++
		}
	}
	desk.mu.Unlock()
	if streamed != 1 {
		t.Errorf("desk passed on requests from %d stream joiners, want 1", streamed)
	}
}

// TestAttackJoinStream: a stranger on the link port pretends to join. Idle
// connections from one address are held at most link.MaxPendingPerSource
// at once; a frame that is not a join-via packet, or more than
// joinStreamFrames frames, ends the connection; the node stays up.
func TestAttackJoinStream(t *testing.T) {
	n := testNode(t, "nas", func(c *Config) { c.UserName, c.LinkListen = "alice", "127.0.0.1:0" })
	dial := func(src string) net.Conn { // from 127.0.0.src: each check its own source address
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", n.LinkAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closed reports whether the server closes c within d.
	closed := func(c net.Conn, d time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(d))
		_, err := io.ReadAll(c)
		ne, ok := err.(net.Error)
		return !ok || !ne.Timeout()
	}
	const conns = 12
	var cs []net.Conn
	for range conns {
		c := dial("127.0.0.2")
		c.Write(joinStreamMagic[:])
		cs = append(cs, c)
	}
	shut := make(chan bool, conns)
	for _, c := range cs {
		go func() { shut <- closed(c, 5*time.Second) }()
	}
	var held int
	for range conns {
		if !<-shut {
			held++
		}
	}
	t.Logf("idle join connections from one address: %d of %d held", held, conns)
	if held > link.MaxPendingPerSource {
		t.Errorf("%d idle join connections held from one address, want at most %d", held, link.MaxPendingPerSource)
	}

	// A control packet is not a join-via packet: the connection ends.
	c := dial("127.0.0.3")
	h := wire.Header(wire.KindControl)
	c.Write(link.AppendFrame(joinStreamMagic[:], append(h[:], make([]byte, 100)...)))
	if !closed(c, 20*time.Second) {
		t.Errorf("a connection that sent a control packet stays open")
	}
	// Garbage join-via packets: at most joinStreamFrames are read.
	c = dial("127.0.0.4")
	jh := wire.Header(wire.KindJoin)
	b := joinStreamMagic[:]
	const frames = 200
	for range frames {
		b = link.AppendFrame(b, append(jh[:], make([]byte, 100)...))
	}
	c.Write(b)
	if !closed(c, 20*time.Second) {
		t.Errorf("a connection that sent %d frames stays open", frames)
	} else {
		t.Logf("%d garbage join-via frames on one connection: closed (at most %d read)", frames, joinStreamFrames)
	}
	if _, err := n.Invite(time.Minute, 1); err != nil {
		t.Fatalf("the node after the attack: %v", err)
	}
}

// FuzzJoinFrames feeds arbitrary bytes to the reader of a joiner's frames:
// no panic, only join-via packets handed on, at most joinStreamFrames.
func FuzzJoinFrames(f *testing.F) {
	jh := wire.Header(wire.KindJoin)
	f.Add(link.AppendFrame(nil, append(jh[:], 1, 2, 3)))
	f.Add([]byte{0xff, 0xff, 'G', 'L'})
	f.Add([]byte{0, 3, 'G', 'L', 'J'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var got int
		readJoinFrames(bufio.NewReader(bytesReader(b)), func(p []byte) {
			got++
			if wire.Classify(p) != wire.KindJoin || len(p) > maxJoinStreamPacket {
				t.Fatalf("handed on %x", p)
			}
		})
		if got > joinStreamFrames {
			t.Fatalf("%d frames handed on", got)
		}
	})
}

func bytesReader(b []byte) io.Reader { return &sliceReader{b} }

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
