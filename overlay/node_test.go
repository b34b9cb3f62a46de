package overlay

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

func loopback() []netip.Addr { return []netip.Addr{netip.MustParseAddr("127.0.0.1")} }

// testNode starts a userspace node on loopback with no LAN discovery.
func testNode(t *testing.T, name string, mod func(*Config)) *Node {
	t.Helper()
	cfg := Config{
		StateDir: t.TempDir(), NodeName: name, Random: true, Userspace: true,
		NoDiscovery: true, NoPortMap: true, HostAddrs: loopback,
		Logf: func(f string, a ...any) { t.Logf(time.Now().Format("05.000")+" "+name+": "+f, a...) },
	}
	if mod != nil {
		mod(&cfg)
	}
	n, err := Start(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// waitFor polls cond every 20ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func directPeers(n *Node) int {
	c := 0
	for _, p := range n.Status().Peers {
		if p.Online && p.Path == "direct" {
			c++
		}
	}
	return c
}

// joinedNet starts an admin node and k-1 nodes that join it with invite codes.
func joinedNet(t *testing.T, k int) []*Node {
	admin := testNode(t, "n1", func(c *Config) { c.UserName = "alice" })
	nodes := []*Node{admin}
	for i := 2; i <= k; i++ {
		code, err := admin.Invite(time.Minute, 1)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, testNode(t, fmt.Sprintf("n%d", i), func(c *Config) { c.JoinCode = code }))
	}
	for _, n := range nodes {
		waitFor(t, 20*time.Second, n.Cert().Name+" sees every peer direct", func() bool { return directPeers(n) == k-1 })
	}
	return nodes
}

// TestThreeNodesTCP: three userspace nodes, joined by invite codes, reach
// each other over TCP on IPv4 and IPv6 overlay addresses, all pairs.
func TestThreeNodesTCP(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		nodes := joinedNet(t, 3)
		for _, n := range nodes {
			if n.Cert().UserName != "alice" {
				t.Fatalf("%s is in user %q", n.Cert().Name, n.Cert().UserName)
			}
			// The filter knows every peer's addresses, however the peer was found.
			for _, m := range nodes {
				for _, ip := range []netip.Addr{m.Cert().IPv4, m.Cert().IPv6} {
					if p, ok := n.dir.Lookup(ip); !ok || p.Node != m.Cert().Name {
						t.Fatalf("%s's filter does not know %v (%s): %+v", n.Cert().Name, ip, m.Cert().Name, p)
					}
				}
			}
		}
		for j, srv := range nodes {
			for _, ip := range []netip.Addr{srv.Cert().IPv4, srv.Cert().IPv6} {
				ln, err := srv.Netstack().Net().ListenTCPAddrPort(netip.AddrPortFrom(ip, 7000))
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						go func() { io.Copy(c, c); c.Close() }()
					}
				}()
				for i, cli := range nodes {
					if i == j {
						continue
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					c, err := cli.Netstack().DialContext(ctx, "tcp", netip.AddrPortFrom(ip, 7000).String())
					cancel()
					if err != nil {
						t.Fatalf("%s -> %s (%v): %v", cli.Cert().Name, srv.Cert().Name, ip, err)
					}
					msg := fmt.Sprintf("hello from %s to %v", cli.Cert().Name, ip)
					c.SetDeadline(time.Now().Add(10 * time.Second))
					io.WriteString(c, msg)
					got := make([]byte, len(msg))
					if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
						t.Fatalf("%s -> %v: echo %q, %v", cli.Cert().Name, ip, got, err)
					}
					c.Close()
				}
				ln.Close()
			}
		}
		for _, n := range nodes {
			n.Close()
		}
	}()
	// Every goroutine a node started must be gone after Close.
	waitFor(t, 5*time.Second, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before+2 })
}
