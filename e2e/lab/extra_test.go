package lab

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestExtras checks the helpers of extra.go: Do runs in the host's
// namespace, CutUDP/RestoreUDP cut exactly one pair, NoRouteOut leaves only
// the LAN, RemapPorts moves an easy NAT's public port.
func TestExtras(t *testing.T) {
	t.Parallel()
	l := New(t)
	inet := l.Internet()
	s1, s2, s3 := l.Host("s1"), l.Host("s2"), l.Host("s3")
	inet.Attach(s1)
	inet.Attach(s2)
	inet.Attach(s3)
	startEcho(t, s1, 3478)
	srv := s1.IP().String() + ":3478"

	// Do: a socket made inside s2 is s2's (s1 sees s2's address).
	var seen string
	if err := s2.Do(func() error {
		c, err := net.Dial("udp4", srv)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("hi")); err != nil {
			return err
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		seen = string(buf[:n])
		return err
	}); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if host, _, _ := net.SplitHostPort(seen); host != s2.IP().String() {
		t.Errorf("Do: s1 saw the socket at %q, want %s", seen, s2.IP())
	}

	// CutUDP: s2 <-> s1 UDP lost, s3 <-> s1 fine, ping s2 -> s1 fine.
	inet.CutUDP(s1, s2)
	if got := askMap(t, s2, 40000, srv)[srv]; got != "timeout" {
		t.Errorf("after CutUDP(s1, s2): s2 got an answer from s1: %q", got)
	}
	if got := askMap(t, s3, 40000, srv)[srv]; got != s3.IP().String()+":40000" {
		t.Errorf("after CutUDP(s1, s2): s3 got %q from s1", got)
	}
	if err := ping(s2, s1.IP().String()); err != nil {
		t.Errorf("after CutUDP(s1, s2): ICMP s2 -> s1: %v", err)
	}
	inet.RestoreUDP()
	if got := askMap(t, s2, 40000, srv)[srv]; got != s2.IP().String()+":40000" {
		t.Errorf("after RestoreUDP: s2 got %q from s1", got)
	}

	// NoRouteOut and RemapPorts behind an easy NAT.
	lan := l.Bridge("lan")
	h, h2 := l.Host("h"), l.Host("h2")
	lan.Attach(h)
	lan.Attach(h2)
	r := l.Router("r", lan, EasyNAT)
	if got := askMap(t, h, 40000, srv)[srv]; got != r.WAN.String()+":40000" {
		t.Errorf("easy NAT: mapped to %q, want %s:40000", got, r.WAN)
	}
	r.RemapPorts(45000, 45099)
	got := askMap(t, h, 40000, srv)[srv]
	host, port, _ := net.SplitHostPort(got)
	if p, _ := strconv.Atoi(port); host != r.WAN.String() || p < 45000 || p > 45099 {
		t.Errorf("after RemapPorts(45000, 45099): mapped to %q", got)
	}
	h2.NoRouteOut()
	if err := ping(h2, s1.IP().String()); err == nil {
		t.Errorf("after NoRouteOut: h2 still reaches %s", s1.IP())
	}
	if err := ping(h2, h.IP().String()); err != nil {
		t.Errorf("after NoRouteOut: h2 cannot reach its LAN: %v", err)
	}
	if out := h2.MustRun("ip", "route"); strings.Contains(out, "default") {
		t.Errorf("after NoRouteOut: %q", out)
	}
}
