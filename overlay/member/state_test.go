package member_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"glow/overlay/member"
	"glow/overlay/member/membertest"
)

// The state directory may hold anything (a damaged disk, another program,
// a hostile local user): every parser of its files gives a clear error
// naming the file, or a value that is safe to use, and never panics.

func TestStateFiles(t *testing.T) {
	st := member.State{Dir: t.TempDir()}
	if _, err := st.LoadNodeKeys(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing keys: %v", err)
	}
	k, _ := member.NewNodeKeys()
	if err := st.SaveNodeKeys(k); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(st.Path("node.key"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("node.key mode %v", fi.Mode())
	}
	k2, err := st.LoadNodeKeys()
	if err != nil || k2.ID() != k.ID() || k2.WG != k.WG || k2.Ctl != k.Ctl {
		t.Fatalf("reload: %v", err)
	}
	other, _ := member.NewNodeKeys()
	if err := st.SaveNodeKeys(other); err == nil {
		t.Fatal("keys overwritten")
	}
	if k3, _ := st.LoadNodeKeys(); k3.ID() != k.ID() {
		t.Fatal("keys replaced")
	}
	// Damaged files name themselves and are left alone.
	orig, _ := os.ReadFile(st.Path("node.key"))
	for _, bad := range []string{"", "nonsense", "glow node key v1\nsign AAAA\n", strings.Replace(string(orig), "wg ", "wg x", 1)} {
		os.WriteFile(st.Path("node.key"), []byte(bad), 0o600)
		_, err := st.LoadNodeKeys()
		var de *member.DamagedError
		if !errors.As(err, &de) || !errors.Is(err, member.ErrDamaged) || !strings.Contains(err.Error(), st.Path("node.key")) {
			t.Fatalf("damaged %q: %v", bad, err)
		}
		if got, _ := os.ReadFile(st.Path("node.key")); string(got) != bad {
			t.Fatal("damaged key file was rewritten")
		}
	}
	os.WriteFile(st.Path("node.key"), orig, 0o600)
	os.WriteFile(st.Path("cert"), []byte("not a cert"), 0o644)
	if _, err := st.LoadCert(); !errors.Is(err, member.ErrDamaged) {
		t.Fatalf("damaged cert: %v", err)
	}
	// A damaged records cache is not fatal.
	os.WriteFile(st.Path("records"), []byte{1, 2}, 0o600)
	if err := st.LoadRecords(member.NewStore(nil), func(member.RecordKind, []byte) error { return nil }); !errors.Is(err, member.ErrDamaged) {
		t.Fatalf("damaged records: %v", err)
	}
}

// FuzzStateFiles feeds arbitrary bytes to the parsers of the key files
// and the invites file (overlay's FuzzBootstrapFile: the bootstrap file).
func FuzzStateFiles(f *testing.F) {
	f.Add([]byte(member.NodeKeyHeader + "\nsign AAAA\nwg AAAA\nctl AAAA\n"))
	f.Add([]byte(member.UserKeyHeader + "\nname alice\nkey AAAA\n"))
	f.Add([]byte(`[{"secret":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"uses":1,"used_by":[],"certs":[]}]`))
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
	})
}

// recordsRoundTrip saves st's records and loads them into a fresh store.
func recordsRoundTrip(t *testing.T, st member.State, s *member.Store, user []byte) *member.Store {
	t.Helper()
	if err := st.SaveRecords(s); err != nil {
		t.Fatal(err)
	}
	got := member.NewStore(user)
	if err := st.LoadRecords(got, func(k member.RecordKind, raw []byte) error {
		_, err := got.Apply(k, raw, time.Now())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestRecordsCacheLargeDoc: a 60 KiB policy and one of the maximum size
// survive the records cache, and so does a certificate saved beside them.
func TestRecordsCacheLargeDoc(t *testing.T) {
	u := membertest.NewUser(t, "alice")
	_, c := membertest.NewCert(t, u, "nas", time.Now())
	for _, size := range []int{60 << 10, 1<<16 - 1} {
		s := member.NewStore(u.Public())
		text := membertest.BigPolicy(size)[:size]
		d := &member.UserDoc{Kind: member.KindPolicy, Version: 7, Body: []byte(text)}
		member.SignUserDoc(u, d)
		if _, err := s.AddDoc(d); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddCert(c, time.Now()); err != nil {
			t.Fatal(err)
		}
		got := recordsRoundTrip(t, member.State{Dir: t.TempDir()}, s, u.Public())
		if gd := got.Doc(member.KindPolicy); gd == nil || gd.Version != 7 || !bytes.Equal(gd.Body, d.Body) {
			t.Errorf("the %d-byte policy did not survive the records cache", len(d.Body))
		}
		if got.Cert(c.Node) == nil {
			t.Errorf("the certificate saved beside the %d-byte policy did not survive", len(d.Body))
		}
	}
}

// A records cache of the first version (2-byte lengths) is still read.
func TestRecordsCacheV1(t *testing.T) {
	u := membertest.NewUser(t, "alice")
	_, c := membertest.NewCert(t, u, "nas", time.Now())
	d := &member.UserDoc{Kind: member.KindPolicy, Version: 2, Body: []byte(testPolicy)}
	member.SignUserDoc(u, d)
	var v1 []byte
	for _, r := range []struct {
		Kind member.RecordKind
		Raw  []byte
	}{{member.KindCert, c.Marshal()}, {member.KindPolicy, d.Marshal()}} {
		v1 = append(v1, byte(r.Kind), byte(len(r.Raw)>>8), byte(len(r.Raw)))
		v1 = append(v1, r.Raw...)
	}
	st := member.State{Dir: t.TempDir()}
	if err := st.WriteFile("records", v1, 0o600); err != nil {
		t.Fatal(err)
	}
	got := member.NewStore(u.Public())
	if err := st.LoadRecords(got, func(k member.RecordKind, raw []byte) error {
		_, err := got.Apply(k, raw, time.Now())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got.Cert(c.Node) == nil || got.Doc(member.KindPolicy) == nil || got.Doc(member.KindPolicy).Version != 2 {
		t.Fatal("a version-1 records cache was not read")
	}
	// Saved again, it is version 2 and holds the same.
	again := recordsRoundTrip(t, st, got, u.Public())
	if data, _ := st.ReadFile("records"); !bytes.HasPrefix(data, []byte(member.RecordsMagic)) {
		t.Fatal("the records cache was not rewritten as version 2")
	}
	if again.Cert(c.Node) == nil || again.Doc(member.KindPolicy) == nil {
		t.Fatal("records lost in the rewrite")
	}
}

// FuzzParseRecordsCache: any state file gives records or an error, never a
// panic, and every record handed out lies within the file.
func FuzzParseRecordsCache(f *testing.F) {
	u := membertest.NewUser(f, "alice")
	s := member.NewStore(u.Public())
	_, c := membertest.NewCert(f, u, "nas", time.Now())
	s.AddCert(c, time.Now())
	d := &member.UserDoc{Kind: member.KindPolicy, Version: 1, Body: []byte(testPolicy)}
	member.SignUserDoc(u, d)
	s.AddDoc(d)
	f.Add(member.MarshalRecordsCache(s, nil))
	f.Add([]byte{1, 0, 3, 'a', 'b', 'c'})
	f.Add([]byte(member.RecordsMagic + "\x04\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		total := 0
		member.ParseRecordsCache(b, func(k member.RecordKind, raw []byte) error {
			total += len(raw)
			if len(raw) > member.MaxCachedRecord {
				t.Fatalf("a record of %d bytes", len(raw))
			}
			return nil
		})
		if total > len(b) {
			t.Fatalf("records of %d bytes out of a %d-byte file", total, len(b))
		}
	})
}

// testPolicy is a policy document's body of a few lines.
const testPolicy = `# a test policy
allow alice -> *:*
allow bob -> nas:22,443
`
