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
		inv, err := ParseInvite(code)
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
	for _, p := range desk.joinRelay.passed {
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
	dial := func() net.Conn {
		c, err := net.Dial("tcp", n.LinkAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	open := func(c net.Conn) bool { // the server has not closed c
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		ne, ok := err.(net.Error)
		return ok && ne.Timeout()
	}
	const conns = 12
	var held int
	var cs []net.Conn
	for range conns {
		c := dial()
		c.Write(joinStreamMagic[:])
		cs = append(cs, c)
	}
	for _, c := range cs {
		if open(c) {
			held++
		}
	}
	t.Logf("idle join connections from one address: %d of %d held", held, conns)
	if held > link.MaxPendingPerSource {
		t.Errorf("%d idle join connections held from one address, want at most %d", held, link.MaxPendingPerSource)
	}
	for _, c := range cs {
		c.Close()
	}
	waitFor(t, 10*time.Second, "the slots to be given back", func() bool {
		c := dial()
		defer c.Close()
		c.Write(joinStreamMagic[:])
		return open(c)
	})

	// A control packet is not a join-via packet: the connection ends.
	c := dial()
	h := wire.Header(wire.KindControl)
	c.Write(link.AppendFrame(joinStreamMagic[:], append(h[:], make([]byte, 100)...)))
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("a connection that sent a control packet stays open")
		}
	}
	// Garbage join-via packets: at most joinStreamFrames are read.
	c = dial()
	jh := wire.Header(wire.KindJoin)
	b := joinStreamMagic[:]
	const frames = 200
	for range frames {
		b = link.AppendFrame(b, append(jh[:], make([]byte, 100)...))
	}
	c.Write(b)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.ReadAll(c)
	t.Logf("%d garbage join-via frames on one connection: closed after at most %d (%v)", frames, joinStreamFrames, err)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("a connection that sent %d frames stays open", frames)
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
