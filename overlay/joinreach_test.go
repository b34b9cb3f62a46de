package overlay

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"glow/nat/natlab"
)

// TestJoinReachOut: a joiner that can reach no member (every datagram it
// sends or gets is dropped, and the code names no stream address it can
// dial) joins once a member reaches out to it with 'glow link add
// tcp://JOINER:PORT' or ws://: the inviter itself, and another member that
// passes the request on to the inviter. A node of another user that
// reaches out is refused by the joiner. Once joined, the new node reaches
// the inviter over the link, which the member redials as an ordinary link.
// Before joinreach.go the member's dial failed ("link ... refused": the
// joiner had no certificate, nor a listener) and the join failed after 30 s.
func TestJoinReachOut(t *testing.T) {
	in := natlab.NewInternet()
	nas := labNode(t, in.NewHost(netip.MustParseAddr("203.0.113.2")), nil, "nas", func(c *Config) { c.UserName = "alice" })
	code, err := nas.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	desk := labNode(t, in.NewHost(netip.MustParseAddr("203.0.113.3")), nil, "desk", func(c *Config) { c.JoinCode = code })
	waitFor(t, 20*time.Second, "desk to reach the nas", func() bool { return directPeers(desk) == 1 })
	bob := labNode(t, in.NewHost(netip.MustParseAddr("203.0.113.4")), nil, "bob", func(c *Config) { c.UserName = "bob" })

	blocked := &links{allowed: map[[2]netip.Addr]bool{}}
	var mu sync.Mutex
	var logs strings.Builder
	defer func() {
		if t.Failed() {
			mu.Lock()
			t.Log("joiners' logs:\n" + logs.String())
			mu.Unlock()
		}
	}()
	for i, tc := range []struct {
		via    *Node
		scheme string
	}{{nas, "tcp"}, {desk, "ws"}, {desk, "tcp"}} {
		code, err := nas.Invite(time.Minute, 1)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("vps%d", i+1)
		h := in.NewHost(netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}))
		// A loopback address of its own, so that parallel tests do not meet.
		listen := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(1 + rand.IntN(250)), byte(rand.IntN(250)), byte(2 + rand.IntN(250))}), DefaultPort)
		start := time.Now()
		res := startJoin(t, h, name, code, &logs, &mu, func(c *Config) {
			c.LinkListen = listen.String()
			c.ListenPacket = func(port uint16) (net.PacketConn, error) {
				pc, err := h.ListenPacket(port)
				if err != nil {
					return nil, err
				}
				return &linkConn{PacketConn: pc, self: h.Addr(), links: blocked}, nil
			}
		})
		waitFor(t, 5*time.Second, name+" to listen", func() bool {
			c, err := net.Dial("tcp", listen.String())
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		url := tc.scheme + "://" + listen.String()
		if i == 0 { // another user's node reaches out first: refused
			if err := bob.AddLink(url); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, name+" to refuse bob", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return strings.Contains(logs.String(), name+": glow: join: link from") && strings.Contains(logs.String(), "a node of another user")
			})
			if err := bob.RemoveLink(url); err != nil {
				t.Fatal(err)
			}
		}
		if err := tc.via.AddLink(url); err != nil {
			t.Fatal(err)
		}
		var n *Node
		switch r := (<-res).(type) {
		case error:
			t.Fatalf("%s: %v", name, r)
		case *Node:
			n = r
		}
		t.Logf("JOIN %s after %s on %s: %v", name, url, tc.via.cfg.NodeName, time.Since(start).Round(time.Millisecond))
		if c := n.Cert(); c.UserName != "alice" {
			t.Fatalf("%s joined %q", name, c.UserName)
		}
		mu.Lock()
		reached := strings.Contains(logs.String(), name+": glow: join: "+tc.via.cfg.NodeName+".alice reached out to this machine over "+tc.scheme)
		mu.Unlock()
		if !reached {
			t.Errorf("%s: no log of %s reaching out over %s", name, tc.via.cfg.NodeName, tc.scheme)
		}
		waitFor(t, 20*time.Second, name+" to reach the nas over the link", func() bool {
			for _, p := range n.Status().Peers {
				if p.Name == "nas" && p.Online {
					return true
				}
			}
			return false
		})
		if err := tc.via.RemoveLink(url); err != nil {
			t.Fatal(err)
		}
		n.Close()
	}
}
