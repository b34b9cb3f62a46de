package overlay

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"glow/internal/leaktest"
	"glow/internal/wire"
	"glow/link"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// TestAttackJoinReach: strangers on a joiner's link port (joinreach.go).
// A node that presents a certificate of the code's user for another node
// key, one of another user, or an expired one, is refused and gets no
// request; a member of the user gets one. Idle connections are held at
// most joinReachPerSource from one address and joinReachConns in all.
func TestAttackJoinReach(t *testing.T) {
	leaktest.Check(t)
	now := time.Now()
	alice, bob := membertest.NewUser(t, "alice"), membertest.NewUser(t, "bob")
	jk, err := member.NewNodeKeys()
	if err != nil {
		t.Fatal(err)
	}
	inviter, _ := membertest.NewCert(t, alice, "nas", now)
	j := &joiner{
		inv: &member.Invite{UserHash: member.UserHash(alice.Public()), Inviter: inviter.CtlPublic()},
		ctl: jk.Ctl, ctlPub: jk.CtlPublic(), id: link.Identity{Sign: jk.Sign}, logf: t.Logf,
	}
	j.shared = sharedKey(j.ctl, j.inv.Inviter)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan joinDatagram, 64)
	done, served := make(chan struct{}), make(chan struct{})
	go func() {
		j.serveReach(ln, in, done)
		close(served)
	}()
	defer func() {
		close(done)
		<-served
	}()
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// reach links to the joiner as id and reports whether a join-via
	// packet came down the link within d.
	reach := func(id link.Identity, d time.Duration) bool {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		s, err := link.Handshake(ctx, dial("127.0.0.5"), id, func(wire.NodeID, []byte) error { return nil })
		if err != nil {
			return false
		}
		defer s.Close()
		stop := context.AfterFunc(ctx, func() { s.Close() })
		defer stop()
		buf := make([]byte, maxJoinStreamPacket)
		sz, err := s.ReadDatagram(buf)
		return err == nil && wire.Classify(buf[:sz]) == wire.KindJoin
	}
	otherKeys, _ := membertest.NewCert(t, alice, "x", now)
	_, stolen := membertest.NewCert(t, alice, "desk", now) // a member's certificate, not its key
	bobKeys, bobCert := membertest.NewCert(t, bob, "bobnode", now)
	oldKeys, oldCert := membertest.NewCert(t, alice, "old", now.Add(-2*time.Hour)) // expired an hour ago
	for _, tc := range []struct {
		name string
		id   link.Identity
	}{
		{"another node's certificate", link.Identity{Sign: otherKeys.Sign, Cert: stolen.Marshal()}},
		{"another user's node", link.Identity{Sign: bobKeys.Sign, Cert: bobCert.Marshal()}},
		{"an expired certificate", link.Identity{Sign: oldKeys.Sign, Cert: oldCert.Marshal()}},
		{"no certificate", link.Identity{Sign: otherKeys.Sign}},
	} {
		if reach(tc.id, 3*time.Second) {
			t.Errorf("%s: the joiner sent its request", tc.name)
		} else {
			t.Logf("%s: refused", tc.name)
		}
	}
	memberKeys, memberCert := membertest.NewCert(t, alice, "desk", now)
	if !reach(link.Identity{Sign: memberKeys.Sign, Cert: memberCert.Marshal()}, 10*time.Second) {
		t.Fatalf("a member of the user got no request")
	}

	// closed reports whether the joiner closes c within d.
	closed := func(c net.Conn, d time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(d))
		_, err := io.ReadAll(c)
		ne, ok := err.(net.Error)
		return !ok || !ne.Timeout()
	}
	var cs []net.Conn
	for range 12 {
		cs = append(cs, dial("127.0.0.2"))
	}
	for _, src := range []string{"127.0.0.3", "127.0.0.4"} {
		for range joinReachPerSource {
			cs = append(cs, dial(src))
		}
	}
	shut := make([]chan bool, len(cs))
	for i, c := range cs {
		shut[i] = make(chan bool, 1)
		go func() { shut[i] <- closed(c, 2*time.Second) }()
	}
	held, heldOne := 0, 0
	for i := range cs {
		if !<-shut[i] {
			held++
			if i < 12 {
				heldOne++
			}
		}
	}
	t.Logf("idle connections: %d of %d held, %d of the 12 from one address", held, len(cs), heldOne)
	if held > joinReachConns || heldOne > joinReachPerSource {
		t.Errorf("%d idle connections held (%d from one address), want at most %d (%d)", held, heldOne, joinReachConns, joinReachPerSource)
	}
	for _, c := range cs {
		c.Close()
	}
}

// TestAttackJoinerLink: a link a member dialled ends at a node without a
// certificate that sends anything but join-via packets, or too many: the
// member closes it; the node stays up.
func TestAttackJoinerLink(t *testing.T) {
	n := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	k, err := member.NewNodeKeys()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.AddLink("tcp://" + ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	defer n.RemoveLink("tcp://" + ln.Addr().String())
	jh, ch := wire.Header(wire.KindJoin), wire.Header(wire.KindControl)
	for _, tc := range []struct {
		name   string
		frames [][]byte
	}{
		{"a control packet", [][]byte{append(ch[:], make([]byte, 100)...)}},
		{"200 garbage join-via packets", func() (fs [][]byte) {
			for range 200 {
				fs = append(fs, append(jh[:], make([]byte, 100)...))
			}
			return fs
		}()},
	} {
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("%s: the node did not dial: %v", tc.name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := link.Handshake(ctx, c, link.Identity{Sign: k.Sign}, func(wire.NodeID, []byte) error { return nil })
		cancel()
		if err != nil {
			t.Fatalf("%s: handshake: %v", tc.name, err)
		}
		go s.WriteDatagrams(tc.frames)
		ended := make(chan error, 1)
		go func() {
			buf := make([]byte, link.MaxDatagram)
			for {
				if _, err := s.ReadDatagram(buf); err != nil {
					ended <- err
					return
				}
			}
		}()
		select {
		case <-ended:
			t.Logf("%s: the node closed the link", tc.name)
		case <-time.After(joinTimeout + 5*time.Second):
			t.Errorf("%s: the link stays open", tc.name)
		}
		s.Close()
	}
	if _, err := n.Invite(time.Minute, 1); err != nil {
		t.Fatalf("the node after the attack: %v", err)
	}
}
