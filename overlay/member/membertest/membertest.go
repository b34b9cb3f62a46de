// Package membertest makes users, certificates and documents for tests of
// package member and of the node (overlay): one set of helpers for both.
package membertest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"glow/overlay/member"
)

// NewUser makes a user key named name.
func NewUser(tb testing.TB, name string) *member.UserKey {
	tb.Helper()
	u, err := member.NewUserKey(name)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// NewCert makes node keys and a certificate for them named name, signed by
// u, valid for an hour from now.
func NewCert(tb testing.TB, u *member.UserKey, name string, now time.Time) (*member.NodeKeys, *member.Cert) {
	tb.Helper()
	k, err := member.NewNodeKeys()
	if err != nil {
		tb.Fatal(err)
	}
	v4, _ := member.AllocIPv4(k.ID(), nil)
	c := &member.Cert{Node: k.ID(), Name: name, WG: k.WGPublic(), Ctl: k.CtlPublic(), IPv4: v4,
		IPv6: member.NodeAddr6(u.Public(), k.ID()), NotBefore: now, NotAfter: now.Add(time.Hour)}
	member.SignCert(u, c)
	return k, c
}

// SignedDoc signs a document of kind with body for user u.
func SignedDoc(u *member.UserKey, kind member.RecordKind, version uint64, body []byte) *member.UserDoc {
	d := &member.UserDoc{Kind: kind, Version: version, Body: body}
	member.SignUserDoc(u, d)
	return d
}

// FriendsStore is alice's store with bob and carol as her friends.
func FriendsStore(t testing.TB) (alice, bob, carol *member.UserKey, s *member.Store) {
	t.Helper()
	alice, bob, carol = NewUser(t, "alice"), NewUser(t, "bob"), NewUser(t, "carol")
	s = member.NewStore(alice.Public())
	friends := []member.Friend{{Name: "bob", Key: [32]byte(bob.Public())}, {Name: "carol", Key: [32]byte(carol.Public())}}
	if _, err := s.AddDoc(SignedDoc(alice, member.KindFriends, 1, member.FormatFriends(friends))); err != nil {
		t.Fatal(err)
	}
	return alice, bob, carol, s
}

// BigPolicy returns a valid policy document of about size bytes.
func BigPolicy(size int) string {
	var b strings.Builder
	b.WriteString("# a large policy: comments make up its bulk\nallow bob -> a:8080/tcp\n")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "# line %05d: the quick brown fox jumps over the lazy dog again and again\n", i)
	}
	return b.String()
}
