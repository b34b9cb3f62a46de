package pkttest

import (
	"bytes"
	"encoding/binary"
	"go/parser"
	"go/token"
	"net/netip"
	"strings"
	"testing"
)

var (
	a4 = netip.MustParseAddrPort("100.64.0.2:40000")
	b4 = netip.MustParseAddrPort("100.64.0.1:8080")
	a6 = netip.MustParseAddrPort("[fd7a::2]:40000")
	b6 = netip.MustParseAddrPort("[fd7a::1]:8080")
)

func TestIPv4Checksums(t *testing.T) {
	for _, p := range [][]byte{
		TCP(a4, b4, SYN|ACK, []byte("x")),
		UDP(a4, b4, []byte("hello")),
		Echo(a4.Addr(), b4.Addr(), false, 1, 2),
	} {
		if p[0] != 0x45 || int(binary.BigEndian.Uint16(p[2:])) != len(p) {
			t.Fatalf("bad header % x", p[:20])
		}
		if Checksum(p[:20], 0) != 0 {
			t.Errorf("IPv4 header checksum wrong")
		}
		if p[9] == ProtoICMP && Checksum(p[20:], 0) != 0 {
			t.Errorf("ICMP checksum wrong")
		}
		if p[9] == ProtoTCP || p[9] == ProtoUDP {
			if transportChecksum(a4.Addr(), b4.Addr(), p[9], p[20:]) != 0 {
				t.Errorf("proto %d checksum wrong", p[9])
			}
		}
	}
}

func TestIPv6(t *testing.T) {
	p := TCP(a6, b6, SYN, nil)
	if p[0]>>4 != 6 || p[6] != ProtoTCP || len(p) != 60 || binary.BigEndian.Uint16(p[4:]) != 20 {
		t.Fatalf("bad IPv6 TCP % x", p)
	}
	if transportChecksum(a6.Addr(), b6.Addr(), ProtoTCP, p[40:]) != 0 {
		t.Error("TCP checksum wrong")
	}
	e := Echo(a6.Addr(), b6.Addr(), true, 1, 1)
	if e[6] != ProtoICMPv6 || e[40] != ICMPv6EchoReply || transportChecksum(a6.Addr(), b6.Addr(), ProtoICMPv6, e[40:]) != 0 {
		t.Error("bad echo reply")
	}
	x := InsertIPv6Ext(p, HopByHop)
	if x[6] != HopByHop || x[40] != ProtoTCP || !bytes.Equal(x[48:], p[40:]) || binary.BigEndian.Uint16(x[4:]) != 28 {
		t.Errorf("bad extension header % x", x)
	}
}

func TestUnreachable(t *testing.T) {
	orig := UDP(b4, a4, []byte("hi"))
	u := Unreachable(a4.Addr(), b4.Addr(), orig)
	if u[20] != ICMPv4Unreachable || !bytes.Equal(u[28:], orig) {
		t.Errorf("bad error % x", u)
	}
	big := UDP(b6, a6, make([]byte, 2000))
	u6 := Unreachable(a6.Addr(), b6.Addr(), big)
	if len(u6) != 1280 {
		t.Errorf("ICMPv6 error is %d bytes, want 1280", len(u6))
	}
}

func TestFragments(t *testing.T) {
	payload := make([]byte, 3000)
	for i := range payload {
		payload[i] = byte(i)
	}
	p := UDP(a4, b4, payload)
	fs := FragmentIPv4(p, 1203, 9)
	var got []byte
	for i, f := range fs {
		fo := binary.BigEndian.Uint16(f[6:])
		if int(fo&0x1fff)*8 != len(got) || (fo&0x2000 != 0) != (i < len(fs)-1) || binary.BigEndian.Uint16(f[4:]) != 9 {
			t.Fatalf("fragment %d: flags/offset %#x", i, fo)
		}
		if Checksum(f[:20], 0) != 0 {
			t.Fatalf("fragment %d: header checksum", i)
		}
		got = append(got, f[20:]...)
	}
	if !bytes.Equal(got, p[20:]) {
		t.Fatal("IPv4 fragments do not reassemble")
	}
	p6 := UDP(a6, b6, payload)
	got = got[:0]
	fs = FragmentIPv6(p6, 1000, 77)
	for i, f := range fs {
		fo := binary.BigEndian.Uint16(f[42:])
		if f[6] != Fragment || f[40] != ProtoUDP || int(fo>>3)*8 != len(got) || (fo&1 != 0) != (i < len(fs)-1) || binary.BigEndian.Uint32(f[44:]) != 77 {
			t.Fatalf("v6 fragment %d bad", i)
		}
		got = append(got, f[48:]...)
	}
	if !bytes.Equal(got, p6[40:]) {
		t.Fatal("IPv6 fragments do not reassemble")
	}
}

func TestMixedFamiliesPanic(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	UDP(a4, b6, nil)
}

func TestPackageDoc(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "pkttest.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	if f.Doc == nil || !strings.HasPrefix(f.Doc.Text(), "Package pkttest ") {
		t.Error("package doc missing")
	}
}
