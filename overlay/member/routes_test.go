package member

import (
	"crypto/ed25519"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// TestInfoRoutes: the routes a node offers ride in its signed NodeInfo
// (version 2); an info without routes keeps version 1, and malformed route
// lists are refused even when signed.
func TestInfoRoutes(t *testing.T) {
	k, _ := NewNodeKeys()
	routes := []netip.Prefix{netip.MustParsePrefix("10.71.1.0/24"), netip.MustParsePrefix("fd12:3456::/64"), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	info := &NodeInfo{Node: k.ID(), Seq: 1, Routes: routes}
	SignInfo(k.Sign, info)
	got, err := ParseInfo(info.Marshal())
	if err != nil || !slices.Equal(got.Routes, routes) {
		t.Fatalf("ParseInfo = %v, %v; want routes %v", got, err, routes)
	}
	if info.Marshal()[0] != infoRoutes {
		t.Errorf("version byte %d, want %d", info.Marshal()[0], infoRoutes)
	}
	plain := &NodeInfo{Node: k.ID(), Seq: 1}
	SignInfo(k.Sign, plain)
	if plain.Marshal()[0] != infoVersion {
		t.Errorf("info without routes: version %d, want %d (older nodes parse it)", plain.Marshal()[0], infoVersion)
	}

	// signed re-signs a body as the node would, so that only the parser's
	// checks stand between it and the store.
	signed := func(body []byte) []byte {
		sig := ed25519.Sign(k.Sign, append(append([]byte{}, infoContext...), body...))
		return append(body, sig...)
	}
	one := &NodeInfo{Node: k.ID(), Seq: 1, Routes: []netip.Prefix{netip.MustParsePrefix("10.71.1.0/24")}}
	body := one.body()
	n := len(body)
	// The route is the last 8 bytes: count, family, 4 address bytes, 2 length bytes.
	for name, mutate := range map[string]func(b []byte){
		"host bits set":    func(b []byte) { b[n-3] = 7 },
		"length too long":  func(b []byte) { b[n-1] = 33 },
		"zero routes":      func(b []byte) { b[n-8] = 0 },
		"too many routes":  func(b []byte) { b[n-8] = MaxRoutes + 1 },
		"bad family":       func(b []byte) { b[n-7] = 5 },
		"routes in v1":     func(b []byte) { b[0] = infoVersion },
		"unknown version3": func(b []byte) { b[0] = 3 },
	} {
		b := slices.Clone(body)
		mutate(b)
		if _, err := ParseInfo(signed(b)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParseInfo = %v, want ErrMalformed", name, err)
		}
	}
	if _, err := ParseInfo(signed(body)); err != nil {
		t.Fatalf("unmutated body refused: %v", err)
	}
}
