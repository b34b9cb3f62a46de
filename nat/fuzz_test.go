package nat

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/pion/stun"
)

// seeds are valid messages of the kinds this package parses.
func seeds(f *testing.F) {
	from := netip.MustParseAddrPort("203.0.113.5:41641")
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	f.Add(req.Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	resp, _ := Respond(req.Raw, from)
	f.Add(resp)
	resp6, _ := Respond(req.Raw, netip.MustParseAddrPort("[2001:db8::1]:1"))
	f.Add(resp6)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingError, stun.CodeBadRequest).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.MappedAddress{IP: from.Addr().AsSlice(), Port: 1}).Raw)
	f.Add([]byte{1, 0, 0, 0})
	f.Add([]byte("GLC\x01"))
}

// cookie makes fuzzed input get past the magic cookie check, so that the
// fuzzer spends its time in the decoder (as pion's own fuzz test does).
func cookie(b []byte) []byte {
	if len(b) >= 8 {
		binary.BigEndian.PutUint32(b[4:8], stunMagicCookie)
	}
	if len(b) >= 4 && len(b) <= 0xFFFF+stunHeaderLen {
		binary.BigEndian.PutUint16(b[2:4], uint16(len(b)-stunHeaderLen))
	}
	return b
}

func FuzzRespond(f *testing.F) {
	seeds(f)
	from := netip.MustParseAddrPort("198.51.100.7:3478")
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, cookie(append([]byte(nil), b...))} {
			resp, ok := Respond(in, from)
			if !ok {
				continue
			}
			// Whatever we answer must be a response we parse back.
			_, mapped, isErr, _, pok := parseResponse(resp)
			if !pok || isErr || mapped != from {
				t.Fatalf("Respond(%x) = %x, which parses as %v %v %v", in, resp, mapped, isErr, pok)
			}
		}
	})
}

func FuzzHandleResponse(f *testing.F) {
	seeds(f)
	server := netip.MustParseAddrPort("198.51.100.7:3478")
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := NewClient(ClientConfig{Send: func([]byte, netip.AddrPort) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		in := cookie(append([]byte(nil), b...))
		// Make the input one of the client's transactions, so that the
		// whole path runs.
		done := make(chan answer, 1)
		if len(in) >= stunHeaderLen {
			var id [stun.TransactionIDSize]byte
			copy(id[:], in[8:stunHeaderLen])
			c.pending[id] = &attempt{server: server, done: done}
		}
		c.HandleResponse(b, server)
		c.HandleResponse(in, server)
	})
}
