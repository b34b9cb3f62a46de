package overlay

// The policy's place in the packet path: a tun.Device wrapper.
//
//	OS -> TUN Read  -> Filter.Outbound (records flows this node opens) -> wireguard-go encrypt
//	wireguard-go decrypt -> Filter.Inbound (the policy, stateful) -> TUN Write -> OS
//
// Inbound runs on decrypted packets, after WireGuard checked that the source
// address is one the sending peer is certified for (AllowedIPs), so the
// filter can trust the source address. Dropped packets are counted by
// reason in the Filter. Read runs in wireguard-go's one TUN reader
// goroutine; Write runs in each peer's receive goroutine, so its scratch
// comes from a pool.

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"glow/policy"
)

type filteredTUN struct {
	wgtun.Device
	f *policy.Filter
	// on is false while every peer belongs to this node's own user: then
	// WireGuard's AllowedIPs already guarantee that every source is one of
	// the user's nodes, which the policy always allows, and no reply state
	// is needed, so the filter is skipped (it costs ~0.3 µs a packet).
	on      atomic.Bool
	scratch sync.Pool // *[][]byte

	// out and in bound the packets inside wireguard-go (inflight.go): Read
	// waits on out, Write releases in.
	out, in *inflight
	timer   *time.Timer // Read's, for out.wait
	bind    *Bind       // configures lazy WireGuard peers (lazywg.go)
}

func newFilteredTUN(dev wgtun.Device, f *policy.Filter, b *Bind) *filteredTUN {
	return &filteredTUN{Device: dev, f: f, out: b.out, in: b.in, bind: b}
}

// Read reads packets the OS sends into the overlay; dropped ones get size 0.
func (t *filteredTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	t.out.wait(&t.timer)
	n, err := t.Device.Read(bufs, sizes, offset)
	if n <= 0 {
		return n, err
	}
	filter := t.on.Load()
	now := time.Time{}
	if filter {
		now = time.Now()
	}
	k := 0
	var last netip.Addr
	for i := 0; i < n; i++ {
		if sizes[i] <= 0 {
			continue
		}
		pkt := bufs[i][offset : offset+sizes[i]]
		if filter && !t.f.Outbound(pkt, now).Allow {
			sizes[i] = 0
			continue
		}
		if dst, ok := dstAddr(pkt); ok && dst != last {
			last = dst
			t.bind.wakeForDst(dst)
		}
		k++
	}
	t.out.add(k)
	return n, err
}

// Write hands the allowed packets of a decrypted batch to the OS.
func (t *filteredTUN) Write(bufs [][]byte, offset int) (int, error) {
	t.in.done(len(bufs))
	if !t.on.Load() {
		return t.Device.Write(bufs, offset)
	}
	now := time.Now()
	sp, _ := t.scratch.Get().(*[][]byte)
	if sp == nil {
		sp = new([][]byte)
	}
	keep := (*sp)[:0]
	for _, b := range bufs {
		if t.f.Inbound(b[offset:], now).Allow {
			keep = append(keep, b)
		}
	}
	var err error
	if len(keep) > 0 {
		_, err = t.Device.Write(keep, offset)
	}
	clear(keep)
	*sp = keep[:0]
	t.scratch.Put(sp)
	return len(bufs), err
}
