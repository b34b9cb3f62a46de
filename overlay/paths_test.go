package overlay

import (
	"net/netip"
	"testing"

	"glow/internal/wire"
	"glow/link"
)

// TestChoosePath: direct > stream > relay > none, whatever else is set.
func TestChoosePath(t *testing.T) {
	addr := netip.MustParseAddrPort("192.0.2.7:47470")
	s := &link.Stream{}
	q := make(chan []byte)
	hop, peer := wire.NodeID{1}, wire.NodeID{2}
	route := []wire.NodeID{hop, peer}
	for _, tc := range []struct {
		name string
		in   pathInputs
		want pathChoice
	}{
		{"nothing", pathInputs{}, pathChoice{kind: pathNone}},
		{"direct", pathInputs{direct: addr}, pathChoice{kind: pathDirect, direct: addr}},
		{"stream", pathInputs{stream: s, streamQ: q}, pathChoice{kind: pathStream, stream: s, streamQ: q}},
		{"relay", pathInputs{route: route}, pathChoice{kind: pathRelay, via: hop}},
		{"relay, three hops", pathInputs{route: []wire.NodeID{hop, {3}, peer}}, pathChoice{kind: pathRelay, via: hop}},
		{"route of the peer alone", pathInputs{route: []wire.NodeID{peer}}, pathChoice{kind: pathNone}},
		{"empty route", pathInputs{route: []wire.NodeID{}}, pathChoice{kind: pathNone}},
		{"direct over stream", pathInputs{direct: addr, stream: s, streamQ: q}, pathChoice{kind: pathDirect, direct: addr}},
		{"direct over relay", pathInputs{direct: addr, route: route}, pathChoice{kind: pathDirect, direct: addr}},
		{"stream over relay", pathInputs{stream: s, streamQ: q, route: route}, pathChoice{kind: pathStream, stream: s, streamQ: q}},
		{"direct over all", pathInputs{direct: addr, stream: s, streamQ: q, route: route}, pathChoice{kind: pathDirect, direct: addr}},
		{"dead direct (cleared), stream", pathInputs{direct: netip.AddrPort{}, stream: s, streamQ: q}, pathChoice{kind: pathStream, stream: s, streamQ: q}},
		{"dead direct (cleared), relay", pathInputs{direct: netip.AddrPort{}, route: route}, pathChoice{kind: pathRelay, via: hop}},
	} {
		got := choosePath(tc.in)
		if got != tc.want {
			t.Errorf("%s: choosePath = %+v, want %+v", tc.name, got, tc.want)
		}
		if n := got.neighbour(); n != (tc.want.kind == pathDirect || tc.want.kind == pathStream) {
			t.Errorf("%s: neighbour = %v", tc.name, n)
		}
	}
	for k, want := range map[pathKind]string{pathNone: "none", pathRelay: "relay", pathStream: "direct", pathDirect: "direct"} {
		if k.String() != want {
			t.Errorf("pathKind(%d) = %q, want %q", k, k.String(), want)
		}
	}
}
