package e2e

import (
	"fmt"
	"testing"
	"time"

	"glow/e2e/lab"
)

// TestRoamIdle (issue 14): an idle peer whose public port moves (its
// router forgets its mappings and hands out new ports) is followed by its
// peer without traffic, straight from the old direct path to the new one:
// its next heartbeat comes from the new port, and the VPS moves there once
// it proved the address and the old one left a heartbeat unanswered
// (overlay/roam.go). The path must never leave direct, and the move must
// come before the old path would have been declared dead (deadIdle, 25 s
// after its first unanswered heartbeat); the time is a metric.
func TestRoamIdle(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	rB, bH := siteHost(l, "b", lab.EasyNAT)
	vps, b := newNode(t, vpsH, "vps"), newNode(t, bH, "b")
	vps.up("--user", "alice", "--name", "vps")
	b.up("--name", "b", "--join", vps.invite())
	p, _, err := waitPeer(vps, "b", reachTimeout, directAt(rB.WAN))
	if err != nil {
		t.Fatalf("vps -> b: %v (last %+v)", err, p)
	}
	before := p.Endpoint
	time.Sleep(6 * time.Second) // no traffic: both ends idle (activeWindow 5 s)

	rB.RemapPorts(40000, 40999)
	moved := time.Now()
	var left []string // every view of b that was not direct
	p, took, err := waitPeer(vps, "b", 25*time.Second, func(p *peerStatus) error {
		if err := directAt(rB.WAN)(p); err != nil {
			left = append(left, fmt.Sprintf("%.1fs: %v", time.Since(moved).Seconds(), err))
			return err
		}
		if p.Endpoint == before {
			return fmt.Errorf("still direct at the old endpoint %s", before)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("vps: b's port moved from %s: not followed within 25 s: %v (last %+v)", before, err, p)
	}
	t.Logf("ROAM vps follows idle b from %s to %s after %v", before, p.Endpoint, took.Round(time.Millisecond))
	metric(t, "roam_idle.follow_s", fmt.Sprintf("%.3f", took.Seconds()))
	if len(left) > 0 {
		t.Errorf("the path left direct on the way: %v", left)
	}
}
