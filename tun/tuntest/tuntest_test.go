package tuntest

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

func TestChannelCountsAndPipe(t *testing.T) {
	a, b := NewChannel(), NewChannel()
	wait := Pipe(a.TUN(), b.TUN())
	pkt := Ping(netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.1"))

	a.Outbound <- pkt // a's device reads it, Pipe writes it into b
	select {
	case got := <-b.Inbound:
		if !bytes.Equal(got, pkt) {
			t.Fatalf("got %x, want %x", got, pkt)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("packet not forwarded")
	}
	for deadline := time.Now().Add(5 * time.Second); b.Writes.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // Pipe counts after the write returns
	}
	if a.Reads.Load() != 1 || b.Writes.Load() != 1 || a.Writes.Load() != 0 || b.Reads.Load() != 0 {
		t.Fatalf("counters: a r%d w%d, b r%d w%d", a.Reads.Load(), a.Writes.Load(), b.Reads.Load(), b.Writes.Load())
	}
	a.TUN().Close()
	b.TUN().Close()
	wait()
}
