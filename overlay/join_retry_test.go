package overlay

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// dropFirstConn loses the first datagram written to it.
type dropFirstConn struct {
	net.PacketConn
	dropped atomic.Bool
}

func (c *dropFirstConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.dropped.CompareAndSwap(false, true) {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

// TestJoinAnswerLost: the inviter's answer to a join request is lost (the
// first datagram the inviter sends). The joiner asks again, and the
// inviter, which already admitted it and counts it as a peer, answers again
// with the same certificate.
func TestJoinAnswerLost(t *testing.T) {
	var lossy *dropFirstConn
	admin := testNode(t, "n1", func(c *Config) {
		c.UserName = "alice"
		c.ListenPacket = func(port uint16) (net.PacketConn, error) {
			pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			lossy = &dropFirstConn{PacketConn: pc}
			return lossy, nil
		}
	})
	code, err := admin.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n2 := testNode(t, "n2", func(c *Config) { c.JoinCode = code })
	if !lossy.dropped.Load() {
		t.Fatal("the inviter sent nothing, so no answer was lost")
	}
	t.Logf("joined after a lost answer in %v", time.Since(start).Round(time.Millisecond))
	if n2.Cert().UserName != "alice" {
		t.Fatalf("n2 is in user %q", n2.Cert().UserName)
	}
}
