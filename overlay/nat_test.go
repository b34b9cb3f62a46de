package overlay

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"glow/nat/natlab"
)

// siteKind is how a site reaches the Internet in the NAT lab.
type siteKind struct {
	name    string
	public  bool
	mapping natlab.Mapping
	filter  natlab.Filtering
}

var (
	sitePublic    = siteKind{name: "public", public: true}
	siteFullCone  = siteKind{"EIM-EIF", false, natlab.EndpointIndependent, natlab.EndpointIndependentFiltering}
	siteRestrict  = siteKind{"EIM-ADF", false, natlab.EndpointIndependent, natlab.AddressDependentFiltering}
	sitePortRestr = siteKind{"EIM-APDF", false, natlab.EndpointIndependent, natlab.AddressAndPortDependentFiltering}
	siteSymmetric = siteKind{"APDM-APDF", false, natlab.AddressAndPortDependent, natlab.AddressAndPortDependentFiltering}
)

func (k siteKind) host(in *natlab.Internet, i int) *natlab.Host {
	pub := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
	if k.public {
		return in.NewHost(pub)
	}
	gw := in.NewNAT(natlab.NATConfig{Public: pub, Mapping: k.mapping, Filtering: k.filter, Timeout: time.Minute})
	return gw.NewHost(netip.AddrFrom4([4]byte{192, 168, byte(i), 2}))
}

func peerStatus(n *Node, name string) (PeerStatus, bool) {
	for _, p := range n.Status().Peers {
		if p.Name == name {
			return p, true
		}
	}
	return PeerStatus{}, false
}

// tcpEcho checks one TCP exchange from a to b's IPv4 overlay address.
func tcpEcho(t *testing.T, a, b *Node, port uint16) {
	t.Helper()
	ap := netip.AddrPortFrom(b.Cert().IPv4, port)
	ln, err := stackNet(b).ListenTCPAddrPort(ap)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Userspace().DialContext(ctx, "tcp", ap.String())
	if err != nil {
		t.Fatalf("%s -> %s: %v", a.Cert().Name, b.Cert().Name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := strings.Repeat("glow", 5000)
	go io.WriteString(c, msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through %s -> %s: %v", a.Cert().Name, b.Cert().Name, err)
	}
}

// TestNATMatrix: two sites behind every pair of NAT kinds, and a public
// node they both joined through. Where a direct path can exist (in theory,
// RFC 4787) the two sites must find it by hole punching; where it cannot,
// they must reach each other through the public node. Either way TCP works.
func TestNATMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT matrix: not in -short")
	}
	kinds := []siteKind{sitePublic, siteFullCone, siteRestrict, sitePortRestr, siteSymmetric}
	direct := func(a, b siteKind) bool {
		hard := func(k siteKind) bool { return k.mapping == natlab.AddressAndPortDependent }
		portRestricted := func(k siteKind) bool {
			return !k.public && k.filter == natlab.AddressAndPortDependentFiltering
		}
		if hard(a) && (hard(b) || portRestricted(b)) || hard(b) && portRestricted(a) {
			return false
		}
		return true
	}
	for i, ka := range kinds {
		for _, kb := range kinds[i:] {
			want := direct(ka, kb)
			t.Run(ka.name+"_"+kb.name, func(t *testing.T) {
				t.Parallel()
				in := natlab.NewInternet()
				vps := in.NewHost(netip.MustParseAddr("198.51.100.10"))
				v := labNode(t, vps, nil, "vps", func(c *Config) { c.UserName = "alice" })
				join := func(h *natlab.Host, name string) *Node {
					code, err := v.Invite(time.Minute, 1)
					if err != nil {
						t.Fatal(err)
					}
					return labNode(t, h, nil, name, func(c *Config) { c.JoinCode = code })
				}
				a := join(ka.host(in, 1), "a")
				b := join(kb.host(in, 2), "b")
				start := time.Now()
				waitFor(t, 20*time.Second, "a to reach b", func() bool {
					p, ok := peerStatus(a, "b")
					if want {
						return ok && p.Path == "direct"
					}
					return ok && p.Path == "relay" && p.Online
				})
				p, _ := peerStatus(a, "b")
				t.Logf("MATRIX %-9s x %-9s -> %s after %v", ka.name, kb.name, p.Path, time.Since(start).Round(10*time.Millisecond))
				if !want && (p.Path != "relay" || len(p.Via) != 1 || p.Via[0] != "vps") {
					t.Fatalf("want relay via vps, got %+v", p)
				}
				tcpEcho(t, a, b, 7001)
				tcpEcho(t, b, a, 7002)
			})
		}
	}
}
