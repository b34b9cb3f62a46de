package member_test

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

func testDevices(user [32]byte) []member.Device {
	var ds []member.Device
	for i, name := range []string{"tv", "phone", "printer-2"} {
		d := member.Device{Name: name, WG: wire.Key{byte(i + 1), 7}, IPv4: netip.AddrFrom4([4]byte{100, 64, 9, byte(i + 1)}), Via: wire.NodeID{byte(9 - i)}}
		d.IPv6 = member.NodeAddr6(user[:], d.ID())
		ds = append(ds, d)
	}
	return ds
}

// TestDeviceListFormat: a device list survives its encoding (sorted by
// name, IPv6 derived from the key), and every malformed line is refused.
func TestDeviceListFormat(t *testing.T) {
	user := [32]byte{42}
	ds := testDevices(user)
	got, err := member.ParseDevices(user, member.FormatDevices(ds))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Name != "phone" || got[1].Name != "printer-2" || got[2].Name != "tv" {
		t.Fatalf("parsed %+v", got)
	}
	for _, g := range got {
		for _, d := range ds {
			if d.Name == g.Name && d != g {
				t.Fatalf("%s: got %+v, want %+v", d.Name, g, d)
			}
		}
	}
	key := base64.StdEncoding.EncodeToString(make([]byte, 31)) // a 31-byte key
	good := member.FormatDevices(ds[:1])
	line := strings.TrimSpace(string(good))
	f := strings.Fields(line)
	for _, bad := range []string{
		"TV " + strings.Join(f[1:], " "),                                            // not a DNS label
		f[0] + " " + key + " " + f[2] + " " + f[3],                                  // short key
		f[0] + " " + f[1] + " 10.1.2.3 " + f[3],                                     // outside 100.64/10
		f[0] + " " + f[1] + " 100.100.100.53 " + f[3],                               // the resolver's address
		f[0] + " " + f[1] + " 100.64.009.1 " + f[3],                                 // not canonical
		f[0] + " " + f[1] + " " + f[2] + " " + f[3][:10],                            // short via id
		f[0] + " " + f[1] + " " + f[2],                                              // three fields
		line + " extra",                                                             // five
		f[0] + "  " + strings.Join(f[1:], " "),                                      // two spaces
		f[0] + " " + f[1] + " " + f[2] + " " + hex.EncodeToString(make([]byte, 32)), // zero via
		line + "\n" + line,                                                          // a repeat
		f[0] + " " + base64.StdEncoding.EncodeToString(make([]byte, 32)) + " " + f[2] + " " + f[3], // zero key
	} {
		if _, err := member.ParseDevices(user, []byte(bad+"\n")); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	var many strings.Builder
	for i := range member.MaxDevices + 1 {
		d := member.Device{Name: fmt.Sprintf("d%d", i), WG: wire.Key{byte(i), byte(i >> 8), 1}, IPv4: netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)}), Via: wire.NodeID{1}}
		many.Write(member.FormatDevices([]member.Device{d}))
	}
	if _, err := member.ParseDevices(user, []byte(many.String())); err == nil {
		t.Errorf("accepted %d devices", member.MaxDevices+1)
	}
}

// TestDeviceListStore: the Store keeps a well-formed device list and
// refuses (and counts) a signed but malformed one.
func TestDeviceListStore(t *testing.T) {
	u := membertest.NewUser(t, "alice")
	s := member.NewStore(u.Public())
	ok := membertest.SignedDoc(u, member.KindDevices, 1, member.FormatDevices(testDevices([32]byte(u.Public()))))
	if added, err := s.Apply(member.KindDevices, ok.Marshal(), time.Now()); !added || err != nil {
		t.Fatalf("a good list: %v, %v", added, err)
	}
	bad := membertest.SignedDoc(u, member.KindDevices, 2, []byte("tv nokey 100.64.0.1 00\n"))
	if added, err := s.Apply(member.KindDevices, bad.Marshal(), time.Now()); added || err == nil || s.Rejected[member.RejectMalformed] != 1 {
		t.Fatalf("a malformed list: %v, %v, rejected %v", added, err, s.Rejected)
	}
	if s.Doc(member.KindDevices).Version != 1 {
		t.Fatal("the malformed list replaced the good one")
	}
}

// FuzzParseDevices feeds the device list parser: what it accepts survives
// a round trip.
func FuzzParseDevices(f *testing.F) {
	user := [32]byte{42}
	f.Add(member.FormatDevices(testDevices(user)))
	f.Add([]byte("tv AAAA 100.64.0.1 00\n"))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := member.ParseDevices(user, b)
		if err != nil {
			return
		}
		again, err := member.ParseDevices(user, member.FormatDevices(ds))
		if err != nil || len(again) != len(ds) {
			t.Fatalf("device list does not survive a round trip: %v", err)
		}
	})
}
