package member

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"glow/internal/wire"
)

// KindDevices is the user document listing the user's plain WireGuard
// devices (glow device add): signed by the user key on an admin node,
// versioned and gossiped to the user's own nodes like the policy. A device
// exists while the newest list names it; glow device remove signs a list
// without it, and every node drops its name and route.
const KindDevices RecordKind = 8

// A Device is a host that runs only WireGuard: a peer of one node of the
// user (Via), its gateway into the overlay. Its IPv6 address is derived
// from its key as a node's is from its id; its IPv4 address is allocated
// by the admin node from the same range as nodes'.
type Device struct {
	Name string
	WG   wire.Key // its WireGuard public key
	IPv4 netip.Addr
	IPv6 netip.Addr
	Via  wire.NodeID
}

// ID is the device's identity where one is needed (its IPv6 address, the
// via node's Bind): its WireGuard public key.
func (d *Device) ID() wire.NodeID { return wire.NodeID(d.WG) }

// MaxDevices bounds a device list (about 130 bytes a device, the list
// also fits MaxDocBody).
const MaxDevices = 400

// FormatDevices returns the body of a KindDevices document: one device a line,
// "NAME KEY IPV4 VIA" (key in base64 as WireGuard writes it, the via node's
// id in hex), ordered by name.
func FormatDevices(ds []Device) []byte {
	ds = slices.Clone(ds)
	slices.SortFunc(ds, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "%s %s %s %s\n", d.Name, base64.StdEncoding.EncodeToString(d.WG[:]), d.IPv4, d.Via.Hex())
	}
	return []byte(b.String())
}

// ParseDevices decodes the body of user's KindDevices document. Every line
// must be well formed, and names, keys and addresses unique in the list.
func ParseDevices(user [32]byte, body []byte) ([]Device, error) {
	var out []Device
	names, keys, v4s := map[string]bool{}, map[wire.Key]bool{}, map[netip.Addr]bool{}
	for i, line := range strings.Split(string(body), "\n") {
		if line == "" {
			continue
		}
		if len(out) == MaxDevices {
			return nil, fmt.Errorf("device list: %w: more than %d devices", ErrMalformed, MaxDevices)
		}
		f := strings.Split(line, " ")
		if len(f) != 4 {
			return nil, fmt.Errorf("device list line %d: %w: %d fields", i+1, ErrMalformed, len(f))
		}
		var d Device
		d.Name = f[0]
		k, kerr := base64.StdEncoding.DecodeString(f[1])
		v4, aerr := netip.ParseAddr(f[2])
		via, verr := wire.ParseNodeID(f[3])
		switch {
		case !ValidName(d.Name):
			return nil, fmt.Errorf("device list line %d: %w: bad name", i+1, ErrMalformed)
		case kerr != nil || len(k) != len(d.WG) || [32]byte(k) == [32]byte{}:
			return nil, fmt.Errorf("device list line %d: %w: bad key", i+1, ErrMalformed)
		case aerr != nil || !v4.Is4() || !IPv4Range.Contains(v4) || ReservedV4[v4] || v4.String() != f[2]:
			return nil, fmt.Errorf("device list line %d: %w: IPv4 %q outside %v", i+1, ErrMalformed, f[2], IPv4Range)
		case verr != nil || via.IsZero():
			return nil, fmt.Errorf("device list line %d: %w: bad via node", i+1, ErrMalformed)
		}
		d.WG, d.IPv4, d.Via = wire.Key(k), v4, via
		d.IPv6 = NodeAddr6(user[:], d.ID())
		if names[d.Name] || keys[d.WG] || v4s[d.IPv4] {
			return nil, fmt.Errorf("device list line %d: %w: %s repeats a name, key or address", i+1, ErrMalformed, d.Name)
		}
		names[d.Name], keys[d.WG], v4s[d.IPv4] = true, true, true
		out = append(out, d)
	}
	return out, nil
}
