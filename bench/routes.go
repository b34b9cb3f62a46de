package main

import (
	"fmt"
	"time"
)

// setupGlowSubnet is a - r - h: a and r run glow on one veth
// (10.78.1.0/24); h runs none, on r's other veth (10.78.2.0/24), with r as
// its only neighbour and no route back to the overlay. r offers
// 10.78.2.0/24 (glow up --advertise-routes), so a reaches h through r's
// glow: forwarded and masqueraded there. iperf3's server runs in h.
func setupGlowSubnet(l *lab, bins binaries) (*instance, error) {
	return setupGlowThrough(l, bins, []string{"--advertise-routes", "10.78.2.0/24"}, nil)
}

// setupGlowExit is the same three hosts with r an exit node
// (--advertise-exit-node) and a using it (--exit-node r): h stands for the
// Internet, which a has no route to of its own.
func setupGlowExit(l *lab, bins binaries) (*instance, error) {
	return setupGlowThrough(l, bins, []string{"--advertise-exit-node"}, []string{"--exit-node", "r"})
}

func setupGlowThrough(l *lab, bins binaries, rFlags, aSet []string) (*instance, error) {
	var ns [3]string
	for i, name := range []string{"a", "r", "h"} {
		var err error
		if ns[i], err = l.ns(name); err != nil {
			return nil, err
		}
	}
	a, r, h := ns[0], ns[1], ns[2]
	if err := l.veth(a, "eth0", "10.78.1.2/24", r, "eth0", "10.78.1.1/24"); err != nil {
		return nil, err
	}
	if err := l.veth(r, "eth1", "10.78.2.1/24", h, "eth0", "10.78.2.2/24"); err != nil {
		return nil, err
	}
	ga, err := newGlowNode(l, bins, a, "a")
	if err != nil {
		return nil, err
	}
	gr, err := newGlowNode(l, bins, r, "r")
	if err != nil {
		return nil, err
	}
	if err := gr.up(append([]string{"--user", "bench"}, rFlags...)...); err != nil {
		return nil, err
	}
	if err := ga.join(gr); err != nil {
		return nil, err
	}
	if _, err := ga.waitPeer("r", 30*time.Second, "direct", func(p *peerStatus) bool { return p.is("direct", "") }); err != nil {
		return nil, err
	}
	if len(aSet) > 0 {
		if out, err := ga.glow(append([]string{"set"}, aSet...)...); err != nil {
			return nil, fmt.Errorf("glow set %v: %v: %s", aSet, err, out)
		}
	}
	// Up once a reaches h through r.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := l.exec(a, "ping", "-c1", "-W1", "10.78.2.2")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("a cannot reach h (10.78.2.2) through r: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var pids []int
	for _, g := range []*glowNode{ga, gr} {
		pid, err := g.pid()
		if err != nil {
			return nil, err
		}
		pids = append(pids, pid)
	}
	return &instance{client: a, server: h, target: "10.78.2.2", daemons: pids}, nil
}
