package member

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"regexp"

	"golang.org/x/crypto/curve25519"

	"glow/internal/wire"
)

// Overlay address plan (see DESIGN.md, Addressing).
var (
	// IPv4Range holds every node's IPv4 address; one per node, unique within a user.
	IPv4Range = netip.MustParsePrefix("100.64.0.0/10")
	// ReservedV4 are addresses of IPv4Range never given to a node (the DNS service).
	ReservedV4 = map[netip.Addr]bool{
		netip.MustParseAddr("100.100.100.53"): true,
	}
)

// IPv6Bits is the prefix length of a user's IPv6 ULA prefix.
const IPv6Bits = 48

// UserPrefix6 returns the user's ULA /48: fd00::/8 plus 40 bits of the hash of the user key.
func UserPrefix6(user ed25519.PublicKey) netip.Prefix {
	h := sha256.Sum256(append([]byte("glow ula v1\x00"), user...))
	var a [16]byte
	a[0] = 0xfd
	copy(a[1:6], h[:5])
	return netip.PrefixFrom(netip.AddrFrom16(a), IPv6Bits)
}

// NodeAddr6 returns the node's IPv6 address: the user prefix plus 80 bits of the hash of the node key.
func NodeAddr6(user ed25519.PublicKey, node wire.NodeID) netip.Addr {
	a := UserPrefix6(user).Addr().As16()
	h := sha256.Sum256(append([]byte("glow node v1\x00"), node[:]...))
	copy(a[6:], h[:10])
	return netip.AddrFrom16(a)
}

// AllocIPv4 picks an IPv4 address for node that no address in used holds.
// It starts from a hash of the node key, so two admins rarely collide, and
// probes linearly from there.
func AllocIPv4(node wire.NodeID, used map[netip.Addr]bool) (netip.Addr, error) {
	const hostBits = 32 - 10
	base := binary.BigEndian.Uint32(IPv4Range.Addr().AsSlice())
	h := sha256.Sum256(append([]byte("glow v4 v1\x00"), node[:]...))
	start := binary.BigEndian.Uint32(h[:4]) % (1 << hostBits)
	for i := uint32(0); i < 1<<hostBits; i++ {
		host := (start + i) % (1 << hostBits)
		if host&0xff == 0 || host&0xff == 0xff {
			continue // avoid .0 and .255: some software mistrusts them
		}
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], base+host)
		a := netip.AddrFrom4(b)
		if !used[a] && !ReservedV4[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free IPv4 address left in %v", IPv4Range)
}

// nameRE is what user and node names may be: DNS labels, lower case.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidName reports whether s can name a user or a node (a DNS label).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// NodeKeys are a node's private keys. They never leave the state directory.
type NodeKeys struct {
	Sign ed25519.PrivateKey // identity; NodeID is its public half
	WG   [32]byte           // WireGuard static key (Curve25519)
	Ctl  [32]byte           // seals glow control packets (Curve25519), kept apart from WG
}

// NewNodeKeys makes fresh keys from crypto/rand.
func NewNodeKeys() (*NodeKeys, error) {
	_, sign, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	k := &NodeKeys{Sign: sign}
	if _, err := rand.Read(k.WG[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(k.Ctl[:]); err != nil {
		return nil, err
	}
	clamp(&k.WG)
	clamp(&k.Ctl)
	return k, nil
}

func clamp(k *[32]byte) {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// ID returns the node's identity.
func (k *NodeKeys) ID() wire.NodeID {
	var id wire.NodeID
	copy(id[:], k.Sign.Public().(ed25519.PublicKey))
	return id
}

// WGPublic returns the public WireGuard key.
func (k *NodeKeys) WGPublic() wire.Key { return pub(k.WG) }

// CtlPublic returns the public control key.
func (k *NodeKeys) CtlPublic() wire.Key { return pub(k.Ctl) }

func pub(priv [32]byte) wire.Key {
	var p wire.Key
	curve25519.ScalarBaseMult((*[32]byte)(&p), &priv)
	return p
}

// UserKey is a user's signing key, held by admin nodes only.
type UserKey struct {
	Name string
	Priv ed25519.PrivateKey
}

// Public returns the user's public key, the root of trust of its nodes.
func (u *UserKey) Public() ed25519.PublicKey { return u.Priv.Public().(ed25519.PublicKey) }
