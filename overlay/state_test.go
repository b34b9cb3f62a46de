package overlay

import (
	"bytes"
	"glow/overlay/member"
	"testing"
	"time"
)

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
	u := newTestUser(t, "alice")
	_, c := newTestCert(t, u, "nas", time.Now())
	for _, size := range []int{60 << 10, 1<<16 - 1} {
		s := member.NewStore(u.Public())
		text := bigPolicy(size)[:size]
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
	u := newTestUser(t, "alice")
	_, c := newTestCert(t, u, "nas", time.Now())
	d := &member.UserDoc{Kind: member.KindPolicy, Version: 2, Body: []byte(defaultPolicy)}
	member.SignUserDoc(u, d)
	var v1 []byte
	for _, r := range []recordMsg{{member.KindCert, c.Marshal()}, {member.KindPolicy, d.Marshal()}} {
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
	u := newTestUser(f, "alice")
	s := member.NewStore(u.Public())
	_, c := newTestCert(f, u, "nas", time.Now())
	s.AddCert(c, time.Now())
	d := &member.UserDoc{Kind: member.KindPolicy, Version: 1, Body: []byte(defaultPolicy)}
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
