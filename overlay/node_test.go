package overlay

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"glow/internal/leaktest"
	"glow/nat/natlab"
)

func loopback() []netip.Addr { return []netip.Addr{netip.MustParseAddr("127.0.0.1")} }

// testNode starts a userspace node on loopback with no LAN discovery or
// port mapping, closed at the end of tb. It is the one node builder of
// this package's tests and benchmarks (labNode puts it on a natlab host).
// A test that builds a node fails if goroutines it started are left after
// its cleanups (leaktest; call leaktest.Check first in a test that starts
// goroutines of its own before its first node). Tests log through tb;
// benchmarks log only with GLOW_BENCH_LOG set (see benchLogf).
func testNode(tb testing.TB, name string, mod func(*Config)) *Node {
	tb.Helper()
	cfg := Config{
		StateDir: tb.TempDir(), NodeName: name, Random: true, Userspace: true, OpenUserspace: openUserspace,
		NoDiscovery: true, NoPortMap: true, HostAddrs: loopback,
		Logf: func(f string, a ...any) { tb.Logf(time.Now().Format("05.000")+" "+name+": "+f, a...) },
	}
	if _, bench := tb.(*testing.B); bench {
		quiet(tb, name)(&cfg)
	} else {
		leaktest.Check(tb)
	}
	if mod != nil {
		mod(&cfg)
	}
	n, err := Start(cfg)
	if err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	tb.Cleanup(func() { n.Close() })
	return n
}

// labNode is testNode on a natlab host, whose datagrams pass only over
// the links lk allows (nil: all).
func labNode(tb testing.TB, h *natlab.Host, lk *links, name string, mod func(*Config)) *Node {
	tb.Helper()
	return testNode(tb, name, func(c *Config) {
		c.Random, c.Port = false, DefaultPort
		c.HostAddrs = func() []netip.Addr { return []netip.Addr{h.Addr()} }
		self := h.Addr()
		c.ListenPacket = func(port uint16) (net.PacketConn, error) {
			pc, err := h.ListenPacket(port)
			if err != nil || lk == nil {
				return pc, err
			}
			return &linkConn{PacketConn: pc, self: self, links: lk}, nil
		}
		if mod != nil {
			mod(c)
		}
	})
}

// quiet is a Config change for benchmarks and tests that start many nodes
// (scale): no logs unless GLOW_BENCH_LOG is set, and no DNS server.
func quiet(tb testing.TB, name string) func(*Config) {
	return func(c *Config) { c.Logf, c.NoDNS = benchLogf(tb, name), true }
}

// waitFor polls cond, more slowly as time passes, until it holds or d
// passes. d is a bound on a failing test, not a timed assertion: make it
// generous. It is the one polling helper of this package's tests.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for pause := 5 * time.Millisecond; !cond(); pause = min(2*pause, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(pause)
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

// joinedNet starts an admin node and k-1 nodes that join it with invite
// codes, and waits until every node has every other direct.
func joinedNet(t *testing.T, k int) []*Node { return joinedNetMod(t, k, nil) }

// joinedNetMod is joinedNet with node i's Config changed by mod (i is 0
// for the admin, n1).
func joinedNetMod(t *testing.T, k int, mod func(i int, c *Config)) []*Node {
	t.Helper()
	admin := testNode(t, "n1", func(c *Config) {
		c.UserName = "alice"
		if mod != nil {
			mod(0, c)
		}
	})
	nodes := []*Node{admin}
	for i := 2; i <= k; i++ {
		code, err := admin.Invite(time.Minute, 1)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, testNode(t, fmt.Sprintf("n%d", i), func(c *Config) {
			c.JoinCode = code
			if mod != nil {
				mod(i-1, c)
			}
		}))
	}
	for _, n := range nodes {
		waitFor(t, 20*time.Second, n.Cert().Name+" sees every peer direct", func() bool { return directPeers(n) == k-1 })
	}
	return nodes
}

// TestThreeNodesTCP: three userspace nodes, joined by invite codes, reach
// each other over TCP on IPv4 and IPv6 overlay addresses, all pairs.
//
// Every goroutine the nodes and the test started must be gone after Close
// (leaktest).
func TestThreeNodesTCP(t *testing.T) {
	leaktest.Check(t)
	{
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
				ln, err := stackNet(srv).ListenTCPAddrPort(netip.AddrPortFrom(ip, 7000))
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
					c, err := cli.Userspace().DialContext(ctx, "tcp", netip.AddrPortFrom(ip, 7000).String())
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
	}
}
