package overlay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"glow/overlay/member"
	"os"
	"testing"
	"time"
)

// The state directory may hold anything (a damaged disk, another program,
// a hostile local user): every parser of its files gives a clear error
// naming the file, or a value that is safe to use, and never panics.

func TestInvitesFileDamaged(t *testing.T) {
	for name, data := range map[string]string{
		"not json":            `{`,
		"null entry":          `[null]`,
		"negative uses":       `[{"uses":-1}]`,
		"certs missing":       `[{"uses":1,"used_by":[[` + zeros(32) + `]],"certs":[]}]`,
		"more certs than ids": `[{"uses":1,"used_by":[],"certs":["AA=="]}]`,
	} {
		_, err := member.ParseInvites("/state/invites", []byte(data))
		var de *member.DamagedError
		if !errors.As(err, &de) || de.Path != "/state/invites" {
			t.Errorf("%s: got %v, want a DamagedError naming the file", name, err)
		}
	}
	good, _ := json.Marshal([]*member.PendingInvite{{Uses: 1, Expires: time.Unix(1, 0)}})
	if byID, err := member.ParseInvites("x", good); err != nil || len(byID) != 1 {
		t.Fatalf("a good file: %v, %d entries", err, len(byID))
	}
}

func zeros(n int) string {
	var b bytes.Buffer
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('0')
	}
	return b.String()
}

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

// FuzzStateFiles feeds arbitrary bytes to the parsers of the key files,
// the invites file and the bootstrap file.
func FuzzStateFiles(f *testing.F) {
	f.Add([]byte(member.NodeKeyHeader + "\nsign AAAA\nwg AAAA\nctl AAAA\n"))
	f.Add([]byte(member.UserKeyHeader + "\nname alice\nkey AAAA\n"))
	f.Add([]byte(`[{"secret":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"uses":1,"used_by":[],"certs":[]}]`))
	f.Add([]byte("192.0.2.1:47470\n[2001:db8::1]:47470\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if k, err := member.ParseNodeKeys("node.key", data); err == nil && (k == nil || len(k.Sign) == 0) {
			t.Fatal("node.key parsed to no key")
		}
		if u, err := member.ParseUserKey("user.key", data); err == nil && (u == nil || !member.ValidName(u.Name)) {
			t.Fatal("user.key parsed to a bad user")
		}
		if byID, err := member.ParseInvites("invites", data); err == nil {
			for _, p := range byID {
				if p == nil || len(p.UsedBy) != len(p.Certs) || p.Uses < 0 {
					t.Fatalf("invites parsed to an unusable entry: %+v", p)
				}
			}
		}
		if aps := parseBootstrap(data); len(aps) > maxBootstrap {
			t.Fatalf("bootstrap gave %d addresses", len(aps))
		}
	})
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
