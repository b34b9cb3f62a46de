package tun

import (
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestParseTunInfo decodes a TUN device's IFLA_INFO_DATA as the kernel
// writes it, and refuses a truncated one.
func TestParseTunInfo(t *testing.T) {
	enc := func(persist bool, typ, mq uint8, queues uint32) []byte {
		ae := netlink.NewAttributeEncoder()
		ae.Uint8(iflaTunType, typ)
		ae.Uint8(iflaTunPersist, map[bool]uint8{false: 0, true: 1}[persist])
		ae.Uint8(iflaTunMultiQueue, mq)
		ae.Uint32(iflaTunNumQueues, queues)
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		b    []byte
		want tunInfo
	}{
		{enc(false, unix.IFF_TUN, 0, 1), tunInfo{Type: unix.IFF_TUN, NonPersist: true, Queues: 1}},
		{enc(true, unix.IFF_TAP, 1, 2), tunInfo{Type: unix.IFF_TAP, MultiQueue: true, Queues: 2}},
		{nil, tunInfo{}}, // no IFLA_TUN_PERSIST: not known to be non-persistent
	} {
		got, err := parseTunInfo(tc.b)
		if err != nil || got != tc.want {
			t.Errorf("parseTunInfo(%x) = %+v, %v; want %+v", tc.b, got, err, tc.want)
		}
	}
	b := enc(true, unix.IFF_TUN, 0, 1)
	if got, err := parseTunInfo(b[:len(b)-2]); err == nil {
		t.Errorf("truncated info parsed: %+v", got)
	}
}
