package overlay

// Attack tests (issue 12): an outsider that knows a node's UDP port, and
// nothing else, sends what it likes; the tests measure what that costs the
// node and what the node sends back.

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun"
)

// TestAttackSTUNAmplification sends the smallest STUN Binding requests
// (a bare header, and a header with FINGERPRINT) from one source, over IPv4
// and IPv6 loopback, and counts the bytes the node sends back: no more than
// it received.
func TestAttackSTUNAmplification(t *testing.T) {
	n := testNode(t, "n1", func(c *Config) { c.UserName = "alice" })
	bare, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	// What glow's client sends: padded with SOFTWARE to the answer's size.
	padded, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("glow (reply <= request)"), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"127.0.0.1", "::1"} {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
		if err != nil {
			t.Logf("no %s: %v", ip, err)
			continue
		}
		to := netip.AddrPortFrom(netip.MustParseAddr(ip), n.Port())
		for _, tc := range []struct {
			name       string
			reqs       [][]byte
			wantAnswer bool
		}{
			// Padded first: the per-source rate limit would eat into
			// them after 200 others.
			{"glow's padded requests", [][]byte{padded.Raw}, true},
			{"bare and fingerprinted requests", [][]byte{bare.Raw, fp.Raw}, false},
		} {
			in, out, answers := stunExchange(t, c, to, tc.reqs, 100)
			ratio := float64(out) / float64(in)
			t.Logf("STUN from %s, %s: %d bytes in, %d answers, %d bytes out, ratio %.2f", ip, tc.name, in, answers, out, ratio)
			if out > in {
				t.Errorf("STUN from %s, %s: the node sent %d bytes for %d received (ratio %.2f > 1)", ip, tc.name, out, in, ratio)
			}
			if tc.wantAnswer && answers == 0 {
				t.Errorf("STUN from %s: no answer to glow's own requests", ip)
			}
			if !tc.wantAnswer && answers != 0 {
				t.Errorf("STUN from %s, %s: %d answered, want none (each shorter than its answer)", ip, tc.name, answers)
			}
		}
		c.Close()
	}
}

// stunExchange sends rounds requests (cycling through reqs) from c to to,
// slowly enough for the control queue, and counts the bytes both ways.
// It counts until the answer to a last request of glow's own (padded, so
// answered) comes: the node takes a source's datagrams in order, so it
// has handled every request before, not merely gone quiet for a while.
// That request and its answer are not counted.
func stunExchange(t *testing.T, c *net.UDPConn, to netip.AddrPort, reqs [][]byte, rounds int) (in, out, answers int) {
	t.Helper()
	for i := range rounds {
		k, err := c.WriteToUDPAddrPort(reqs[i%len(reqs)], to)
		if err != nil {
			t.Fatal(err)
		}
		in += k
		if i%20 == 19 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	last, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("glow (reply <= request)"), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(10 * time.Second); ; {
		// Again every 100 ms: the per-source rate limit may refuse it.
		if _, err := c.WriteToUDPAddrPort(last.Raw, to); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			k, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			m := &stun.Message{Raw: append([]byte(nil), buf[:k]...)}
			if m.Decode() == nil && m.TransactionID == last.TransactionID {
				c.SetReadDeadline(time.Time{})
				return in, out, answers
			}
			out += k
			answers++
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer to a last padded request to %v", to)
		}
	}
}
