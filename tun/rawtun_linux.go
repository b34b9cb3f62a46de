package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// rawTUN is the kernel TUN device as wireguard-go's tun.Device, with the
// same virtio-net offloads as wireguard-go's NativeTun (TSO and USO
// super-packets split on read, TCP and UDP segments merged on write:
// vnet.go), but whose reads and writes are raw system calls on the
// non-blocking descriptor, made through its syscall.RawConn (EAGAIN waits
// in Go's netpoller). Go's ordinary system call entry wakes the runtime's
// monitor thread (sysmon) whenever the process was idle, and a WireGuard
// end idles between bursts thousands of times a second; link/udpbind does
// the same for the UDP sockets, for the same reason.
//
// Read is called by one goroutine at a time (wireguard-go's TUN reader);
// Write by several (one per peer), serialised here.
type rawTUN struct {
	f       *os.File
	rc      syscall.RawConn
	name    string
	withUDP bool // the kernel takes UDP super-packets (TUN_F_USO4/6)
	events  chan tun.Event
	once    sync.Once

	// Read's; readFn is made once (no closure per call).
	rbuf   []byte
	rn     int
	rerr   syscall.Errno
	readFn func(fd uintptr) bool

	wmu     sync.Mutex // Write's
	gro     groTable
	toWrite []int
	wbuf    []byte
	werr    syscall.Errno
	writeFn func(fd uintptr) bool

	dropped     atomic.Uint64 // reads that were not a packet glow can pass on
	writeFailed atomic.Uint64 // packets (merged or not) the kernel refused
}

// TUNSETOFFLOAD flags (linux/if_tun.h).
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
	tunFUSO4 = 0x20
	tunFUSO6 = 0x40
)

// openRawTUN makes fd, a TUN device opened with IFF_TUN|IFF_NO_PI|
// IFF_VNET_HDR and attached to interface name, a rawTUN. It fails if the
// kernel takes no TCP segmentation offload; the caller then falls back to
// wireguard-go's own device. On success the descriptor belongs to it.
func openRawTUN(fd int, name string) (*rawTUN, error) {
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6); err != nil {
		return nil, fmt.Errorf("TUNSETOFFLOAD: %w", err)
	}
	withUDP := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6|tunFUSO4|tunFUSO6) == nil
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	t := &rawTUN{
		f: f, rc: rc, name: name, withUDP: withUDP,
		events:  make(chan tun.Event, 1),
		rbuf:    make([]byte, vnetHdrLen+maxPacket),
		toWrite: make([]int, 0, conn.IdealBatchSize),
	}
	t.readFn = func(fd uintptr) bool {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&t.rbuf[0])), uintptr(len(t.rbuf)))
		if e == unix.EAGAIN {
			return false
		}
		t.rn, t.rerr = int(n), e
		return true
	}
	t.writeFn = func(fd uintptr) bool {
		_, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&t.wbuf[0])), uintptr(len(t.wbuf)))
		if e == unix.EAGAIN {
			return false
		}
		t.werr = e
		return true
	}
	return t, nil
}

func (t *rawTUN) File() *os.File { return t.f }

func (t *rawTUN) Name() (string, error) { return t.name, nil }

func (t *rawTUN) Events() <-chan tun.Event { return t.events }

func (t *rawTUN) BatchSize() int { return conn.IdealBatchSize }

// MTU asks the kernel for the interface's MTU.
func (t *rawTUN) MTU() (int, error) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(t.name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, fmt.Errorf("tun: %s: get MTU: %w", t.name, err)
	}
	return int(ifr.Uint32()), nil
}

// Close closes the descriptor (which removes a non-persistent interface)
// and the event channel; a waiting Read returns os.ErrClosed.
func (t *rawTUN) Close() error {
	var err error
	t.once.Do(func() {
		err = t.f.Close()
		close(t.events)
	})
	return err
}

// Drops counts what the device dropped (see KernelDrops).
func (t *rawTUN) Drops() KernelDrops {
	return KernelDrops{Unsplittable: t.dropped.Load(), WriteFailed: t.writeFailed.Load()}
}

func closedErr(err error) error {
	if errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADFD) || errors.Is(err, unix.EBADF) {
		return os.ErrClosed
	}
	return err
}

// Read reads one packet or super-packet and hands it on in bufs (cut into
// segments), each at offset, with their lengths in sizes. A read that
// cannot be handed on is dropped, counted, and returns 0 packets (an error
// would stop wireguard-go's reader).
func (t *rawTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if err := t.rc.Read(t.readFn); err != nil {
		return 0, closedErr(err)
	}
	if t.rerr != 0 {
		return 0, closedErr(t.rerr)
	}
	if t.rn < vnetHdrLen {
		t.dropped.Add(1)
		return 0, nil
	}
	var h vnetHdr
	h.decode(t.rbuf)
	pkt := t.rbuf[vnetHdrLen:t.rn]
	if h.gsoType == gsoNone {
		if h.flags&vnetFlagNeedsCsum != 0 && !completeCsum(pkt, h.csumStart, h.csumOffset) ||
			len(pkt) > len(bufs[0])-offset {
			t.dropped.Add(1)
			return 0, nil
		}
		sizes[0] = copy(bufs[0][offset:], pkt)
		return 1, nil
	}
	n, err := gsoSplit(pkt, h, bufs, sizes, offset)
	if err != nil {
		t.dropped.Add(1)
		return 0, nil
	}
	return n, nil
}

// Write merges what it can of bufs (packets at offset, with room for the
// virtio-net header before them) and writes the result, one system call
// per (super-)packet. It returns len(bufs) and the errors of the writes
// that failed.
func (t *rawTUN) Write(bufs [][]byte, offset int) (int, error) {
	if offset < vnetHdrLen {
		return 0, fmt.Errorf("tun: write offset %d leaves no room for the virtio-net header", offset)
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.toWrite = t.gro.coalesce(bufs, offset, t.withUDP, t.toWrite[:0])
	var errs error
	for _, i := range t.toWrite {
		t.wbuf = bufs[i][offset-vnetHdrLen:]
		if err := t.rc.Write(t.writeFn); err != nil {
			return 0, closedErr(err)
		}
		if t.werr != 0 {
			if err := closedErr(t.werr); err == os.ErrClosed {
				return 0, err
			}
			t.writeFailed.Add(1)
			errs = errors.Join(errs, t.werr)
		}
	}
	t.wbuf = nil
	return len(bufs), errs
}
