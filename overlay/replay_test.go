package overlay

import (
	"net/netip"
	"testing"
	"time"
)

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	e := newEpoch(time.Now())
	must := func(epoch, seq uint64, ok bool) {
		t.Helper()
		if err := w.accept(epoch, seq); (err == nil) != ok {
			t.Fatalf("accept(%d, %d) = %v, want ok %v", epoch-e, seq, err, ok)
		}
	}
	must(e, 1, true)
	must(e, 1, false) // replay
	must(e, 3, true)
	must(e, 2, true) // reordered
	must(e, 2, false)
	must(e, 0, false)
	must(e, 3+replayBits, true)
	must(e, 3, false) // below the window
	must(e, 4, true)  // the oldest in the window, never seen
	must(e, 4, false)
	must(e, 3+replayBits-1, true)
	must(e+1, 1, true) // the sender restarted
	must(e, 5000, false)
	must(e+1, 1, false)
	if e2 := newEpoch(time.Unix(0, 0)); e2 <= e {
		t.Fatalf("epochs go back: %d after %d", e2, e)
	}
}

// TestHandshakeAfterClockStep: epochs handed out for a time ahead of the
// wall clock (a clock stepped back by NTP; in tests, a synthetic clock run
// forward) must not make the next join, friend or renewal request look
// sealed in the future. Before sealCtl took the wall clock, the request
// below was refused (errHandshakeTime) and a join in a later test of the
// same process failed after 30 s.
func TestHandshakeAfterClockStep(t *testing.T) {
	newEpoch(time.Now().Add(24 * time.Hour))
	k := sharedKey([32]byte{1}, [32]byte{2})
	pkt := sealCtl(nil, [32]byte{3}, k, []byte{byte(msgJoinReq)})
	var h handshakeNonces
	if err := h.fresh(joinReq{}, pkt, time.Now()); err != nil {
		t.Fatalf("a request sealed now, after an epoch a day ahead: %v", err)
	}
	if err := h.fresh(joinReq{}, pkt, time.Now()); err != errReplay {
		t.Fatalf("the same request again: %v, want %v", err, errReplay)
	}
}

func TestEndpointOK(t *testing.T) {
	for _, c := range []struct {
		ep       string
		lab, off bool // taken in a lab (loopback hosts), taken otherwise
	}{
		{"203.0.113.7:47470", true, true},
		{"[2001:db8::1]:47470", true, true},
		{"192.168.1.2:47470", true, true},
		{"127.0.0.1:47470", true, false},
		{"[::1]:47470", true, false},
		{"169.254.1.1:47470", false, false},
		{"[fe80::1]:47470", false, false},
		{"224.0.0.251:47470", false, false},
		{"[ff02::1]:47470", false, false},
		{"0.0.0.0:47470", false, false},
		{"[::]:47470", false, false},
		{"255.255.255.255:47470", false, false},
		{"100.64.0.9:47470", false, false},
		{"203.0.113.7:0", false, false},
		{"[::ffff:127.0.0.1]:47470", true, false},
	} {
		ep := netip.MustParseAddrPort(c.ep)
		if got := endpointOK(ep, true); got != c.lab {
			t.Errorf("endpointOK(%v, lab) = %v", ep, got)
		}
		if got := endpointOK(ep, false); got != c.off {
			t.Errorf("endpointOK(%v) = %v", ep, got)
		}
	}
}
