package overlay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"glow/link"
	"glow/nat/natlab"
	"glow/overlay/api"
	"glow/overlay/member/membertest"
)

// TestStreamLinks: three nodes where UDP works only between b and c. a
// reaches b over a TCP link, then over a WebSocket link, and c through b
// (relayed over the stream); then over an ssh-style stdio stream.
func TestStreamLinks(t *testing.T) {
	in := natlab.NewInternet()
	lk := &links{allowed: map[[2]netip.Addr]bool{}}
	u := membertest.NewUser(t, "alice")
	used := map[netip.Addr]bool{}
	ips := []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.3")}
	lk.set(ips[1], ips[2], true) // only b-c speak UDP
	var nodes []*Node
	for i, name := range []string{"a", "b", "c"} {
		h := in.NewHost(ips[i])
		dir := provision(t, u, name, used, i == 0)
		var peers []string
		if i == 2 {
			peers = []string{netip.AddrPortFrom(ips[1], DefaultPort).String()}
		}
		nodes = append(nodes, labNode(t, h, lk, name, func(c *Config) {
			c.StateDir, c.Peers = dir, peers
			if name == "b" {
				c.LinkListen = "127.0.0.1:0"
			}
		}))
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	// a knows b and c only from its certificate store once linked; give it
	// b's certificate by linking.
	for i, url := range []string{"tcp://" + b.LinkAddr(), "ws://" + b.LinkAddr() + "/glow/link"} {
		port := uint16(7200 + 10*i) // each round its own ports: netstack keeps closed ones a while
		if err := a.AddLink(url); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "a to reach b over "+url, func() bool {
			p, ok := peerStatus(a, "b")
			return ok && p.Online && p.Path == "direct" && p.Endpoint == url
		})
		tcpEcho(t, a, b, port)
		waitFor(t, 20*time.Second, "a to reach c through b", func() bool {
			p, ok := peerStatus(a, "c")
			return ok && p.Online && p.Path == "relay" && len(p.Via) == 1 && p.Via[0] == "b"
		})
		tcpEcho(t, a, c, port+1)
		tcpEcho(t, c, a, port+2)
		if err := a.RemoveLink(url); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "the link to go", func() bool {
			p, _ := peerStatus(a, "b")
			return p.Path != "direct"
		})
	}
	// An ssh-style link: the serving side runs over a byte stream (stdio).
	ca, cb := net.Pipe()
	go b.ServeStdio(context.Background(), cb)
	s, err := link.Handshake(context.Background(), ca, a.linkIdentity(), a.verifyLink)
	if err != nil {
		t.Fatal(err)
	}
	a.attachStream(s, "ssh://test")
	waitFor(t, 20*time.Second, "a to reach b over stdio", func() bool {
		p, ok := peerStatus(a, "b")
		return ok && p.Online && p.Endpoint == "ssh://test"
	})
	tcpEcho(t, a, b, 7250)
	tcpEcho(t, a, c, 7251)
	s.Close()
}

// TestUDPLinkAddRemove: a udp:// link (a bootstrap address) is listed,
// removed by the same URL and gone from the bootstrap file; before,
// `glow link remove udp://...` answered "no link" right after the add
// succeeded, and the address stayed for good.
func TestUDPLinkAddRemove(t *testing.T) {
	n := testNode(t, "n1", func(c *Config) { c.UserName = "alice" })
	const url = "udp://127.0.0.1:9"
	if err := n.AddLink(url); err != nil {
		t.Fatal(err)
	}
	listed := func() bool {
		for _, l := range n.Links() {
			if l.URL == url {
				return true
			}
		}
		return false
	}
	if !listed() {
		t.Fatalf("%s not in the link list: %+v", url, n.Links())
	}
	if err := n.RemoveLink(url); err != nil {
		t.Fatalf("remove %s: %v", url, err)
	}
	if listed() {
		t.Fatalf("%s still listed after its removal", url)
	}
	if b, _ := n.state.ReadFile("bootstrap"); strings.Contains(string(b), "127.0.0.1:9") {
		t.Fatalf("bootstrap file still holds it:\n%s", b)
	}
	err := n.RemoveLink(url)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNotFound {
		t.Fatalf("second remove: %v, want not-found", err)
	}
}
