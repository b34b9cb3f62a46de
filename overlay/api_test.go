package overlay

import (
	"context"
	"errors"
	"testing"
	"time"

	"glow/overlay/api"
	"glow/overlay/member"
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
	if _, err := member.ParseInvite(code); err != nil {
		t.Errorf("invite code %q: %v", code, err)
	}
}

// TestAPITypedErrors: the client gets an error of the right code for each
// kind of failure, so callers (the CLI) branch with errors.Is on the
// sentinel, not on the message.
func TestAPITypedErrors(t *testing.T) {
	nodes := joinedNet(t, 2)
	admin, member := serveAPI(t, nodes[0]), serveAPI(t, nodes[1])
	type call struct {
		what string
		err  error
		want error
	}
	var calls []call
	add := func(what string, err error, want error) { calls = append(calls, call{what, err, want}) }

	_, err := admin.Ping("nosuch")
	add("ping of an unknown peer", err, api.ErrNoSuchPeer)
	_, err = admin.IP("nosuch")
	add("ip of an unknown peer", err, api.ErrNoSuchPeer)
	_, err = member.Invite(time.Minute, 1)
	add("invite on a node without the user key", err, api.ErrNotAdmin)
	_, err = member.FriendInvite(time.Hour)
	add("friend invite on a node without the user key", err, api.ErrNotAdmin)
	_, err = member.ApplyPolicy([]byte(defaultPolicy))
	add("policy apply on a node without the user key", err, api.ErrNotAdmin)
	_, err = admin.ApplyPolicy([]byte("this is not a policy {"))
	add("policy apply of a bad document", err, api.ErrInvalidArgument)
	_, _, err = admin.Share("n2:http/tcp", "bob", false)
	add("share of a bad target", err, api.ErrInvalidArgument)
	_, err = admin.FriendAdd("not-a-code")
	add("friend add of a bad code", err, api.ErrInvalidArgument)
	err = admin.AddLink("gopher://x")
	add("link add of a bad URL", err, api.ErrInvalidArgument)
	_, err = admin.Invite(-time.Minute, 1)
	add("invite with a negative ttl", err, api.ErrInvalidArgument)
	_, err = admin.RollbackPolicy(999)
	add("rollback to an unknown version", err, api.ErrNotFound)
	err = admin.FriendRemove("nobody")
	add("friend remove of a stranger", err, api.ErrNotFound)
	err = admin.RemoveNode("n1")
	add("remove of the node itself", err, api.ErrConflict)
	err = admin.RemoveNode("nosuch")
	add("remove of an unknown node", err, api.ErrNotFound)
	err = admin.RemoveLink("tcp://127.0.0.1:9")
	add("link remove of a link not configured", err, api.ErrNotFound)
	_, _, err = admin.Share("nosuch:80/tcp", "bob", false)
	add("share with a stranger", err, api.ErrNotFound)

	typed := 0
	for _, c := range calls {
		var ae *api.Error
		switch {
		case c.err == nil:
			t.Errorf("%s: no error", c.what)
		case !errors.Is(c.err, c.want):
			t.Errorf("%s: %q (%T, code %q), want errors.Is %v", c.what, c.err, c.err, api.CodeOf(c.err), c.want)
		case !errors.As(c.err, &ae) || ae.Message == "":
			t.Errorf("%s: %q is not an *api.Error with a message", c.what, c.err)
		default:
			typed++
		}
	}
	t.Logf("%d of %d failures came back with the right code", typed, len(calls))
}
