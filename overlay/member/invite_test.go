package member_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

func TestInviteCodes(t *testing.T) {
	alice := membertest.NewUser(t, "alice")
	k, _ := member.NewNodeKeys()
	inv := &member.Invite{UserHash: member.UserHash(alice.Public()), Inviter: k.CtlPublic(),
		Expires: time.Unix(1900000000, 0), Endpoints: []netip.AddrPort{
			netip.MustParseAddrPort("10.0.0.1:47470"), netip.MustParseAddrPort("[2001:db8::1]:47470")}}
	copy(inv.Secret[:], "0123456789abcdef")
	code := inv.Code()
	if !strings.HasPrefix(code, "glow-") || strings.ContainsAny(code, " \n") {
		t.Fatalf("code %q", code)
	}
	got, err := member.ParseInvite(code)
	if err != nil {
		t.Fatal(err)
	}
	if got.Secret != inv.Secret || got.Inviter != inv.Inviter || len(got.Endpoints) != 2 || got.Endpoints[1] != inv.Endpoints[1] || !got.Expires.Equal(inv.Expires) {
		t.Fatalf("round trip: %+v", got)
	}
	if _, err := member.ParseInvite(strings.ToUpper(code[:5]) + code[5:]); err == nil {
		t.Fatal("wrong prefix accepted")
	}
	flip := "z" // one character changed: another letter than the one the random keys put there
	if code[20] == 'z' {
		flip = "a"
	}
	bad := []string{"", "glow-", "glow-abc", code[:len(code)-1], code[:20] + flip + code[21:], code + "a", "tskey-abc"}
	for _, b := range bad {
		if _, err := member.ParseInvite(b); err == nil {
			t.Errorf("malformed code %q accepted", b)
		}
	}
}

func FuzzParseInvite(f *testing.F) {
	inv := &member.Invite{Expires: time.Unix(1, 0), Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:1")}}
	f.Add(inv.Code())
	inv.Streams = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:443")}
	f.Add(inv.Code())
	f.Add("glow-")
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := member.ParseInvite(s)
		if err == nil {
			again, err := member.ParseInvite(inv.Code())
			if err != nil {
				t.Fatalf("re-encoded code does not parse: %v", err)
			}
			if !slices.Equal(again.Streams, inv.Streams) || len(inv.Streams) > member.MaxInviteStreams {
				t.Fatalf("stream addresses %v, re-read as %v", inv.Streams, again.Streams)
			}
		}
	})
}

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
