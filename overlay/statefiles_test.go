package overlay

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"glow/internal/leaktest"
	"glow/overlay/member"
)

// The state directory may hold anything (a damaged disk, another program,
// a hostile local user): every parser of its files gives a clear error
// naming the file, or a value that is safe to use, and never panics.

func TestInviteUsesBounded(t *testing.T) {
	n := testNode(t, "a", func(c *Config) { c.UserName = "alice" })
	if _, err := n.Invite(time.Hour, member.MaxInviteUses+1); err == nil {
		t.Fatal("a code with more uses than the invites file may hold was issued")
	}
}

func TestBootstrapFileBounded(t *testing.T) {
	var b bytes.Buffer
	for i := range 1000 {
		b.WriteString("192.0.2.1:")
		b.WriteString(string(rune('1' + i%9)))
		b.WriteString("000\n")
		b.WriteString("garbage [::1]:0 1.2.3.4\n")
	}
	for range 300 {
		b.WriteString("10.0.0.1: host:47470 [fe80::1%eth0]:x\n")
	}
	aps := parseBootstrap(b.Bytes())
	if len(aps) != 9 {
		t.Fatalf("got %d addresses, want the 9 distinct valid ones: %v", len(aps), aps)
	}
}

// TestAttackFriendInviteSaveFails: a friend code whose use cannot be saved
// makes no friend, so a restart cannot make a used code good again (the
// same rule as for join codes, TestAttackInviteSaveFails).
func TestAttackFriendInviteSaveFails(t *testing.T) {
	nas := testNode(t, "nas", func(c *Config) { c.UserName = "alice" })
	laptop := testNode(t, "laptop", func(c *Config) { c.UserName = "bob" })
	fcode, err := nas.FriendInvite(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	st := nas.state
	os.Remove(st.Path("invites"))
	if err := os.Mkdir(st.Path("invites"), 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = laptop.FriendAdd(ctx, fcode)
	friends := len(nas.Friends())
	t.Logf("friend add while the code's use cannot be saved: err=%v, alice's friends: %d", err, friends)
	if err == nil || friends != 0 {
		t.Fatalf("a friend code whose use was not saved made a friend (err %v, %d friends)", err, friends)
	}
}

// TestStartRefusesDamagedState: Start refuses a state directory whose
// certificate is damaged, names the file, and leaves nothing running.
func TestStartRefusesDamagedState(t *testing.T) {
	leaktest.Check(t)
	st := member.State{Dir: t.TempDir()}
	k, _ := member.NewNodeKeys()
	if err := st.SaveNodeKeys(k); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(st.Path("cert"), []byte("not a cert"), 0o644)
	_, err := Start(Config{StateDir: st.Dir, NodeName: "x", Random: true, Userspace: true, OpenUserspace: openUserspace, NoDiscovery: true, NoPortMap: true})
	if err == nil || !strings.Contains(err.Error(), "cert") {
		t.Fatalf("start on damaged state: %v", err)
	}
}

// FuzzBootstrapFile feeds arbitrary bytes to the bootstrap file's parser
// (member's FuzzStateFiles: the key and invites files).
func FuzzBootstrapFile(f *testing.F) {
	f.Add([]byte("192.0.2.1:47470\n[2001:db8::1]:47470\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if aps := parseBootstrap(data); len(aps) > maxBootstrap {
			t.Fatalf("bootstrap gave %d addresses", len(aps))
		}
	})
}
