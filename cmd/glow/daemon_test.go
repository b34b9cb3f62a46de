package main

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"glow/overlay"
	"glow/tun"
	"glow/tun/userspace"
)

// testDaemon starts an admin node of user "alice" in this process
// (userspace, loopback only, no DNS, no discovery) serving the local API on
// its state directory, for commands to run against; it is stopped at the
// end of the test. It returns the state directory.
func testDaemon(t *testing.T) string {
	t.Helper()
	state, _ := startTestDaemon(t)
	return state
}

// startTestDaemon is testDaemon, returning the node too.
func startTestDaemon(t *testing.T) (string, *overlay.Node) {
	t.Helper()
	state := t.TempDir()
	n, err := overlay.Start(overlay.Config{
		StateDir: state, UserName: "alice", NodeName: "n1", Random: true, Userspace: true,
		OpenUserspace: func(addrs []netip.Addr, mtu int) (tun.Userspace, error) {
			s, err := userspace.Open(addrs, mtu)
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		NoDiscovery: true, NoPortMap: true, NoDNS: true, NoFirewall: true,
		HostAddrs: func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("127.0.0.1")} },
		Logf:      func(f string, a ...any) { t.Logf(time.Now().Format("05.000")+" daemon: "+f, a...) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- n.ServeAPI(ctx, cancel) }()
	t.Cleanup(func() {
		cancel()
		<-served
		n.Close()
	})
	// Bounded: the socket is up once status answers.
	for i := 0; ; i++ {
		var out, errOut bytes.Buffer
		if run([]string{"--state", state, "status"}, &out, &errOut) == 0 {
			return state, n
		}
		if i == 200 {
			t.Fatalf("the test daemon's API does not answer: %s", errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
