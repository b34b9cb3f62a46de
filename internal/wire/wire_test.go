package wire

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	stun := make([]byte, 20)
	copy(stun[4:], []byte{0x21, 0x12, 0xA4, 0x42})
	h := Header(KindControl)
	b := Header(KindBeacon)
	r := make([]byte, RelayHeaderLen)
	PutRelayHeader(r, 3, ShortID{1}, ShortID{2})
	cases := []struct {
		b    []byte
		want Kind
	}{
		{[]byte{1, 0, 0, 0, 9}, KindWireGuard},
		{[]byte{4, 0, 0, 0}, KindWireGuard},
		{[]byte{5, 0, 0, 0}, KindUnknown},
		{[]byte{1, 0, 1, 0}, KindUnknown},
		{h[:], KindControl},
		{b[:], KindBeacon},
		{r, KindRelay},
		{[]byte{'G', 'L', 'C', 9}, KindUnknown},
		{stun, KindSTUN},
		{[]byte{1}, KindUnknown},
		{nil, KindUnknown},
	}
	for _, c := range cases {
		if got := Classify(c.b); got != c.want {
			t.Errorf("Classify(%x) = %v, want %v", c.b, got, c.want)
		}
	}
}

func TestRelayHeader(t *testing.T) {
	b := make([]byte, RelayHeaderLen+3)
	PutRelayHeader(b, 7, ShortID{1, 2}, ShortID{3, 4})
	hops, src, dst, ok := ParseRelayHeader(b)
	if !ok || hops != 7 || src != (ShortID{1, 2}) || dst != (ShortID{3, 4}) {
		t.Fatal(hops, src, dst, ok)
	}
	if _, _, _, ok := ParseRelayHeader(b[:RelayHeaderLen-1]); ok {
		t.Fatal("short header accepted")
	}
}

func TestCodec(t *testing.T) {
	var w Writer
	w.U8(1)
	w.U16(2)
	w.U64(3)
	w.Str("abc")
	w.Bytes16([]byte{9, 9})
	w.AddrPort(netip.MustParseAddrPort("1.2.3.4:5"))
	w.AddrPort(netip.MustParseAddrPort("[2001:db8::1]:6"))
	w.AddrPort(netip.AddrPort{})
	r := Reader{B: w.B}
	if r.U8() != 1 || r.U16() != 2 || r.U64() != 3 || r.Str(10) != "abc" || !bytes.Equal(r.Bytes16(10), []byte{9, 9}) {
		t.Fatal("round trip")
	}
	if a := r.AddrPort(); a != netip.MustParseAddrPort("1.2.3.4:5") {
		t.Fatal(a)
	}
	if a := r.AddrPort(); a != netip.MustParseAddrPort("[2001:db8::1]:6") {
		t.Fatal(a)
	}
	if a := r.AddrPort(); a.IsValid() {
		t.Fatal(a)
	}
	if err := r.Done(); err != nil {
		t.Fatal(err)
	}
	r = Reader{B: w.B[:3]}
	r.U8()
	r.U64()
	if r.Err == nil || r.U16() != 0 {
		t.Fatal("short read not sticky")
	}
	r = Reader{B: []byte{5, 'a'}}
	if r.Str(3); r.Err == nil {
		t.Fatal("over-long string accepted")
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte{4, 1, 2, 3, 4, 0, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := Reader{B: b}
		r.AddrPort()
		r.Str(10)
		r.Bytes16(100)
		r.U64()
		Classify(b)
		ParseRelayHeader(b)
		r.Done()
	})
}
