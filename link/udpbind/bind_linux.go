//go:build linux && (amd64 || arm64)

package udpbind

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// batchSize is the most datagrams one receive or one sendmmsg handles.
const batchSize = conn.IdealBatchSize

// socketBuffer is each socket's send and receive buffer, as wireguard-go
// asks for: room for bursts at Gbit/s while a goroutine waits for a CPU.
const socketBuffer = 7 << 20

// Control message space on 64-bit Linux (a 16-byte header, data padded to
// 8): a UDP_GRO message (an int) on receive, with room for one more; a
// UDP_SEGMENT message (a uint16) on send.
const (
	cmsgHdrLen = 16
	oobRecv    = 2 * (cmsgHdrLen + 8)
	oobSend    = cmsgHdrLen + 8
)

// Bind is the batch UDP conn.Bind. Send is safe for concurrent use; each
// ReceiveFunc is for one goroutine, as wireguard-go calls them.
type Bind struct {
	mu     sync.Mutex // guards v4, v6
	v4, v6 *socket

	senders sync.Pool     // *sender
	drops   atomic.Uint64 // datagrams lost in receive (truncated, unknown family, no room to split)
}

// New returns a closed Bind; wireguard-go opens it.
func New() conn.Bind { return &Bind{} }

// Drops counts received datagrams this Bind could not hand on.
func (b *Bind) Drops() uint64 { return b.drops.Load() }

// socket is one UDP socket of the Bind.
type socket struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	max  int         // largest payload
	gso  atomic.Bool // UDP_SEGMENT works (off for good after EIO)
	gro  bool        // UDP_GRO is on
}

// Open listens on port (0: any free port) with an IPv4 and an IPv6 socket on
// the same port; a host without one of the families gets the other.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.v4 != nil || b.v6 != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	for tries := 0; ; tries++ {
		v4, p, err := listen("udp4", port)
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
			return nil, 0, err
		}
		if v4 == nil {
			p = port
		}
		v6, p6, err := listen("udp6", p)
		if err != nil && port == 0 && v4 != nil && errors.Is(err, syscall.EADDRINUSE) && tries < 100 {
			v4.conn.Close() // the IPv4 socket got a port taken for IPv6: another
			continue
		}
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
			if v4 != nil {
				v4.conn.Close()
			}
			return nil, 0, err
		}
		if v4 == nil && v6 == nil {
			return nil, 0, syscall.EAFNOSUPPORT
		}
		if v4 == nil {
			p = p6
		}
		b.v4, b.v6 = v4, v6
		var fns []conn.ReceiveFunc
		for _, s := range []*socket{v4, v6} {
			if s != nil {
				fns = append(fns, newReceiver(b, s).receive)
			}
		}
		return fns, p, nil
	}
}

// listen opens one socket with the options the packet path needs.
func listen(network string, port uint16) (*socket, uint16, error) {
	lc := net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = setOptions(int(fd), network == "udp6") }); cerr != nil {
			return cerr
		}
		return err
	}}
	pc, err := lc.ListenPacket(context.Background(), network, ":"+strconv.Itoa(int(port)))
	if err != nil {
		return nil, 0, err
	}
	uc := pc.(*net.UDPConn)
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, 0, err
	}
	s := &socket{conn: uc, rc: rc, max: maxPayload4}
	if network == "udp6" {
		s.max = maxPayload6
	}
	rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		s.gso.Store(err == nil)
		on, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO)
		s.gro = err == nil && on == 1
	})
	return s, uint16(uc.LocalAddr().(*net.UDPAddr).Port), nil
}

// setOptions sets a new socket's buffers (FORCE where we may: root ignores
// net.core.rmem_max), IPv6 only on the IPv6 socket, and GRO.
func setOptions(fd int, v6 bool) error {
	for _, opt := range []int{unix.SO_RCVBUF, unix.SO_SNDBUF, unix.SO_RCVBUFFORCE, unix.SO_SNDBUFFORCE} {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, socketBuffer)
	}
	if v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
	}
	if groKernel() {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) // best effort: without it, one datagram per message
	}
	return nil
}

// groKernel reports whether the kernel is 5.12 or later, from which on
// wireguard-go turns UDP GRO on; glow follows it.
var groKernel = sync.OnceValue(func() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	return kernelAtLeast(unix.ByteSliceToString(u.Release[:]), 5, 12)
})

// kernelAtLeast reports whether release ("6.8.0-45-generic") is major.minor
// or later.
func kernelAtLeast(release string, major, minor int) bool {
	var v [2]int
	for k, part := range strings.SplitN(release, ".", 3)[:min(2, strings.Count(release, ".")+1)] {
		digits := 0
		for digits < len(part) && part[digits] >= '0' && part[digits] <= '9' {
			v[k] = v[k]*10 + int(part[digits]-'0')
			digits++
		}
		if digits == 0 && k == 0 {
			return false
		}
		if digits < len(part) {
			break // "12-rc1": the minor ends here
		}
	}
	return v[0] > major || v[0] == major && v[1] >= minor
}

// Close closes both sockets; the ReceiveFuncs return net.ErrClosed.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, s := range []*socket{b.v4, b.v6} {
		if s != nil {
			errs = append(errs, s.conn.Close())
		}
	}
	b.v4, b.v6 = nil, nil
	return errors.Join(errs...)
}

// SetMark sets SO_MARK on both sockets (for policy routing).
func (b *Bind) SetMark(mark uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range []*socket{b.v4, b.v6} {
		if s == nil {
			continue
		}
		var err error
		if cerr := s.rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); cerr != nil {
			return cerr
		}
		if err != nil {
			return os.NewSyscallError("setsockopt SO_MARK", err)
		}
	}
	return nil
}

// BatchSize is the most datagrams a ReceiveFunc returns and Send takes at
// once (Send takes more, in several calls).
func (b *Bind) BatchSize() int { return batchSize }

// ParseEndpoint parses ip:port into an *Endpoint.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	return ParseEndpoint(s)
}

// mmsghdr is the kernel's struct mmsghdr.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// receiver is one socket's receive state, used by one goroutine at a time.
type receiver struct {
	b     *Bind
	s     *socket
	hdrs  [batchSize]mmsghdr
	iovs  [batchSize]unix.Iovec
	names [batchSize]unix.RawSockaddrInet6
	oob   []byte // oobRecv bytes per message
	segs  [batchSize]int
	orig  [batchSize]int
	last  *Endpoint // the last source: reused while it repeats

	// The read in progress (read is its RawConn callback).
	first, count, got int
	errno             syscall.Errno
	readFn            func(fd uintptr) bool
}

func newReceiver(b *Bind, s *socket) *receiver {
	r := &receiver{b: b, s: s, oob: make([]byte, batchSize*oobRecv)}
	r.readFn = r.read
	return r
}

// receive is the socket's conn.ReceiveFunc.
func (r *receiver) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	n := min(len(bufs), batchSize)
	if n == 0 {
		return 0, nil
	}
	at := 0
	if r.s.gro {
		at = n - max(1, n/maxSegments) // room to split: see split
	}
	for i := at; i < n; i++ {
		r.iovs[i].Base = unsafe.SliceData(bufs[i])
		r.iovs[i].SetLen(len(bufs[i]))
		h := &r.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		if r.s.gro {
			h.Control = &r.oob[i*oobRecv]
			h.SetControllen(oobRecv)
		} else {
			h.Control = nil
			h.SetControllen(0)
		}
		h.Flags = 0
	}
	r.first, r.count = at, n-at
	err := r.s.rc.Read(r.readFn)
	for i := at; i < n; i++ {
		r.iovs[i].Base = nil // hold no buffer of wireguard-go's
	}
	runtime.KeepAlive(bufs)
	if err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	got := r.got
	for i := at; i < at+got; i++ {
		h := &r.hdrs[i]
		sizes[i], r.segs[i] = int(h.n), 0
		if h.hdr.Flags&unix.MSG_TRUNC != 0 {
			sizes[i] = 0 // cut short: worthless
			r.b.drops.Add(1)
			continue
		}
		if r.s.gro {
			r.segs[i] = groSize(r.oob[i*oobRecv : i*oobRecv+min(int(h.hdr.Controllen), oobRecv)])
		}
	}
	var out int
	if r.s.gro {
		var dropped int
		out, dropped = split(bufs, sizes, r.segs[:], r.orig[:], at, got)
		if dropped > 0 {
			r.b.drops.Add(uint64(dropped))
		}
	} else {
		out = got
		for i := range got {
			r.orig[i] = i
		}
	}
	for i := range out {
		ap, ok := sockaddr(&r.names[r.orig[i]])
		if !ok {
			sizes[i] = 0 // not IPv4 or IPv6: cannot be
			r.b.drops.Add(1)
			eps[i] = &noEndpoint
			continue
		}
		if r.last == nil || r.last.AddrPort != ap {
			r.last = &Endpoint{ap}
		}
		eps[i] = r.last
	}
	return out, nil
}

// noEndpoint stands in the place of a datagram that is dropped.
var noEndpoint Endpoint

// read is the RawConn callback: one recvmmsg, raw (see the package doc).
// It returns false to wait for the socket to be readable.
func (r *receiver) read(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[r.first])), uintptr(r.count), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.got, r.errno = int(n), e
		if e != 0 {
			r.got = 0
		}
		return true
	}
}

// groSize returns the segment size in a received message's control data
// (UDP_GRO), or 0 when there is none: the message is one datagram.
func groSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 4 {
			return int(int32(binary.NativeEndian.Uint32(data)))
		}
		oob = rest
	}
	return 0
}

// sockaddr decodes a source address the kernel wrote.
func sockaddr(sa *unix.RawSockaddrInet6) (netip.AddrPort, bool) {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port), true
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			a = a.WithZone(zoneName(int(sa.Scope_id)))
		}
		return netip.AddrPortFrom(a, port), true
	}
	return netip.AddrPort{}, false
}

// zoneName names interface index i, as package net does for a link-local
// address's zone.
func zoneName(i int) string {
	if ifi, err := net.InterfaceByIndex(i); err == nil {
		return ifi.Name
	}
	return strconv.Itoa(i)
}

// zoneIndex is zoneName's inverse.
func zoneIndex(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	i, _ := strconv.ParseUint(zone, 10, 32)
	return uint32(i)
}

// sender is one Send's state; Binds pool them.
type sender struct {
	hdrs   [batchSize]mmsghdr
	iovs   [2 * batchSize]unix.Iovec // a datagram's, or its prefix's and its
	oob    [batchSize * oobSend]byte
	groups []group
	name   unix.RawSockaddrInet6

	// The write in progress (write is its RawConn callback).
	start, count int
	errno        syscall.Errno
	writeFn      func(fd uintptr) bool
}

func (b *Bind) getSender() *sender {
	if s, ok := b.senders.Get().(*sender); ok {
		return s
	}
	s := &sender{groups: make([]group, 0, batchSize)}
	s.writeFn = s.write
	return s
}

// Send sends bufs, in order, to ep (an *Endpoint, or any conn.Endpoint
// whose DstToString is ip:port).
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error { return b.SendPrefixed(nil, bufs, ep) }

// SendPrefixed sends each of bufs behind prefix, as Send sends
// prefix+buf, without copying either: the kernel gathers each datagram
// from two pieces (the relay path's header and a WireGuard packet), and
// datagrams of one size still leave in one message with UDP GSO.
func (b *Bind) SendPrefixed(prefix []byte, bufs [][]byte, ep conn.Endpoint) error {
	var dst netip.AddrPort
	if e, ok := ep.(*Endpoint); ok {
		dst = netip.AddrPortFrom(e.Addr().Unmap(), e.Port()) // one made by hand may be mapped
	} else {
		e, err := ParseEndpoint(ep.DstToString())
		if err != nil {
			return conn.ErrWrongEndpointType
		}
		dst = e.AddrPort
	}
	b.mu.Lock()
	s := b.v4
	if dst.Addr().Is6() {
		s = b.v6
	}
	b.mu.Unlock()
	if s == nil {
		return syscall.EAFNOSUPPORT
	}
	x := b.getSender()
	defer b.senders.Put(x)
	x.setName(dst)
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), batchSize)]
		bufs = bufs[len(chunk):]
		if err := x.send(s, prefix, chunk); err != nil {
			return err
		}
	}
	return nil
}

// setName writes dst as the kernel's sockaddr.
func (x *sender) setName(dst netip.AddrPort) {
	x.name = unix.RawSockaddrInet6{}
	port := (*[2]byte)(unsafe.Pointer(&x.name.Port))
	binary.BigEndian.PutUint16(port[:], dst.Port())
	if dst.Addr().Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&x.name))
		sa4.Family = unix.AF_INET
		sa4.Addr = dst.Addr().As4()
		return
	}
	x.name.Family = unix.AF_INET6
	x.name.Addr = dst.Addr().As16()
	x.name.Scope_id = zoneIndex(dst.Addr().Zone())
}

// send sends at most batchSize datagrams to x.name on s, with GSO while
// the socket takes it.
func (x *sender) send(s *socket, prefix []byte, bufs [][]byte) error {
	gso := s.gso.Load()
	err := x.write1(s, prefix, bufs, gso)
	if err != nil && gso && errors.Is(err, unix.EIO) {
		// EIO: the device cannot checksum for UDP_SEGMENT. Without it, for good.
		s.gso.Store(false)
		return conn.ErrUDPGSODisabled{RetryErr: x.write1(s, prefix, bufs, false)}
	}
	return err
}

// write1 builds the messages for bufs, each behind prefix, and writes them
// with sendmmsg.
func (x *sender) write1(s *socket, prefix []byte, bufs [][]byte, gso bool) error {
	namelen := uint32(unix.SizeofSockaddrInet4)
	if x.name.Family == unix.AF_INET6 {
		namelen = unix.SizeofSockaddrInet6
	}
	// A datagram is iovs[per*i : per*i+per]: its prefix (if any), then it.
	per := 1
	if len(prefix) > 0 {
		per = 2
	}
	for i, b := range bufs {
		if per == 2 {
			x.iovs[2*i].Base = unsafe.SliceData(prefix)
			x.iovs[2*i].SetLen(len(prefix))
		}
		x.iovs[per*i+per-1].Base = unsafe.SliceData(b)
		x.iovs[per*i+per-1].SetLen(len(b))
	}
	x.groups = x.groups[:0]
	if gso {
		x.groups = coalesce(x.groups, bufs, len(prefix), s.max)
	} else {
		for i, b := range bufs {
			l := len(prefix) + len(b)
			x.groups = append(x.groups, group{first: i, count: 1, seg: l, bytes: l})
		}
	}
	for m, g := range x.groups {
		h := &x.hdrs[m].hdr
		h.Name = (*byte)(unsafe.Pointer(&x.name))
		h.Namelen = namelen
		h.Iov = &x.iovs[per*g.first]
		h.SetIovlen(per * g.count)
		h.Control = nil
		h.SetControllen(0)
		h.Flags = 0
		if g.count > 1 {
			c := x.oob[m*oobSend : (m+1)*oobSend]
			binary.NativeEndian.PutUint64(c, uint64(unix.CmsgLen(2)))
			binary.NativeEndian.PutUint32(c[8:], uint32(unix.SOL_UDP))
			binary.NativeEndian.PutUint32(c[12:], uint32(unix.UDP_SEGMENT))
			binary.NativeEndian.PutUint16(c[16:], uint16(g.seg))
			h.Control = &c[0]
			h.SetControllen(oobSend)
		}
	}
	x.start, x.count, x.errno = 0, len(x.groups), 0
	err := s.rc.Write(x.writeFn)
	for i := range per * len(bufs) {
		x.iovs[i].Base = nil // hold no caller's buffer
	}
	runtime.KeepAlive(bufs)
	runtime.KeepAlive(prefix)
	if err != nil {
		return err
	}
	if x.errno != 0 {
		return os.NewSyscallError("sendmmsg", x.errno)
	}
	return nil
}

// write is the RawConn callback: sendmmsg, raw (see the package doc), until
// every message is sent or one fails. It returns false to wait for room in
// the socket's buffer.
func (x *sender) write(fd uintptr) bool {
	for x.start < x.count {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&x.hdrs[x.start])), uintptr(x.count-x.start), 0, 0, 0)
		switch e {
		case 0:
			x.start += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			x.errno = e
			return true
		}
	}
	return true
}
