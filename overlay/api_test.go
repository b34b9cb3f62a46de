package overlay

import (
	"context"
	"testing"
	"time"

	"glow/overlay/api"
)

// serveAPI serves n's local API until the test ends and returns a client
// of it, once the socket answers.
func serveAPI(t *testing.T, n *Node) *api.Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.ServeAPI(ctx, func() {}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeAPI: %v", err)
		}
	})
	c := api.NewClient(n.state.Dir)
	waitFor(t, 10*time.Second, "the API socket", func() bool { _, err := c.Status(); return err == nil })
	return c
}

// TestAPIRoundTrip: the client in overlay/api reads what the node's server
// writes.
func TestAPIRoundTrip(t *testing.T) {
	n := testNode(t, "n1", func(c *Config) { c.UserName = "alice" })
	c := serveAPI(t, n)
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Self.Name != "n1" || st.Self.User != "alice" || !st.Self.Admin || st.Self.IPv4 != n.Cert().IPv4.String() {
		t.Errorf("status self %+v, want n1 of alice, admin, %v", st.Self, n.Cert().IPv4)
	}
	addrs, err := c.IP("")
	if err != nil || len(addrs) != 2 || addrs[0] != n.Cert().IPv4 || addrs[1] != n.Cert().IPv6 {
		t.Errorf("IP(\"\") = %v, %v; want [%v %v]", addrs, err, n.Cert().IPv4, n.Cert().IPv6)
	}
	code, err := c.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseInvite(code); err != nil {
		t.Errorf("invite code %q: %v", code, err)
	}
}
