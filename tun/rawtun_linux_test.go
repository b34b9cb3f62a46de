package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestRawTUNUDP drives the raw device with the kernel at the other end, in
// a namespace of its own: a UDP socket that sends with UDP_SEGMENT makes the
// kernel hand the TUN one super-packet, which Read must cut into the
// datagrams the socket meant; and datagrams written in one batch are merged
// into one, which the kernel must deliver to a plain socket as the
// datagrams they were. (TCP both ways, with TSO and GRO, is
// TestKernelToNetstack.)
func TestRawTUNUDP(t *testing.T) {
	enterNewNetns(t)
	k, err := OpenKernel(KernelConfig{Name: "glowtest0", Prefixes: []netip.Prefix{netip.MustParsePrefix("100.64.0.7/10")}})
	if err != nil {
		t.Fatalf("OpenKernel: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	dev, ok := k.Device().(*rawTUN)
	if !ok {
		t.Fatalf("kernel device is %T, not the raw device", k.Device())
	}
	if !dev.withUDP {
		t.Skip("SKIPPING: this kernel takes no UDP segmentation offload on TUN (TUN_F_USO4, Linux >= 6.2)")
	}
	local := netip.MustParseAddr("100.64.0.7")
	remote := netip.MustParseAddr("100.64.0.9")

	// Read: one send of 5000 bytes with UDP_SEGMENT 1200.
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := payload(5000, 9)
	oob := make([]byte, unix.CmsgSpace(2))
	cm := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	cm.Level, cm.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	cm.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], 1200)
	if _, _, err := c.WriteMsgUDPAddrPort(msg, oob, netip.AddrPortFrom(remote, 9)); err != nil {
		t.Fatalf("send with UDP_SEGMENT: %v", err)
	}
	const offset = 16
	bufs, sizes := newBufs(128, offset)
	var got []byte
	var segs, reads int
	// A read waits at most until the deadline (the file is in Go's poller).
	if err := dev.File().SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for len(got) < len(msg) {
		n, err := dev.Read(bufs, sizes, offset)
		if err != nil {
			t.Fatalf("Read after %d of %d bytes: %v", len(got), len(msg), err)
		}
		for i := range n {
			p := bufs[i][offset : offset+sizes[i]]
			if p[0]>>4 != 4 || p[9] != protoUDP || binary.BigEndian.Uint16(p[22:]) != 9 {
				continue // the kernel's own chatter
			}
			checkPacket(t, p)
			got = append(got, p[28:]...)
			if segs++; i == 0 {
				reads++
			}
		}
	}
	if !bytes.Equal(got, msg) || segs != 5 {
		t.Fatalf("read %d bytes in %d datagrams, want the 5000 sent in 5", len(got), segs)
	}
	if reads != 1 {
		t.Errorf("the datagrams came in %d reads, want 1 (a USO super-packet cut by Read)", reads)
	}
	if d := dev.Drops(); d != (KernelDrops{}) {
		t.Errorf("drops %+v", d)
	}

	// Write: three datagrams to the socket, merged into one by Write.
	port := c.LocalAddr().(*net.UDPAddr).Port
	var pkts [][]byte
	for i, n := range []int{1200, 1200, 800} {
		s := pktSpec{udp: true, id: uint16(i), payload: payload(n, byte(i))}
		p := s.build()
		// pktSpec's addresses are 100.64.0.1 -> .2; aim at the socket.
		copy(p[12:16], remote.AsSlice())
		copy(p[16:20], local.AsSlice())
		binary.BigEndian.PutUint16(p[22:], uint16(port))
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^csum(p[:20], 0))
		p[26], p[27] = 0, 0
		binary.BigEndian.PutUint16(p[26:], ^csum(p[20:], pseudoSum(p, false, protoUDP, len(p)-20)))
		pkts = append(pkts, p)
	}
	wb := batch(offset, pkts...)
	if _, err := dev.Write(wb, offset); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if len(dev.gro.items) != 1 || dev.gro.items[0].segs != 3 {
		t.Errorf("the three datagrams were not merged: %+v", dev.gro.items)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2000)
	for i, p := range pkts {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if from.Addr() != remote || !bytes.Equal(buf[:n], p[28:]) {
			t.Errorf("datagram %d: %d bytes from %v, want %d from %v", i, n, from, len(p)-28, remote)
		}
	}
	// A packet the kernel refuses (IP version 0: EINVAL) between two good
	// ones: the write reports it, counts it, and still delivers the others.
	bad := append([]byte{}, pkts[0]...)
	bad[0] = 0x05
	wb = batch(offset, pkts[2], bad, pkts[2])
	_, err = dev.Write(wb, offset)
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("Write with a refused packet: %v, want EINVAL", err)
	}
	if d := dev.Drops(); d.WriteFailed != 1 || d.Unsplittable != 0 {
		t.Errorf("drops %+v, want 1 failed write", d)
	}
	if d := k.Drops(); d.WriteFailed != 1 {
		t.Errorf("Kernel.Drops %+v, want 1 failed write", d)
	}
	for i := range 2 {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil || !bytes.Equal(buf[:n], pkts[2][28:]) {
			t.Errorf("good datagram %d beside the refused one: %d bytes, %v", i, n, err)
		}
	}
}
