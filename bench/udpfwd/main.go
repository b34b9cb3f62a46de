// Command udpfwd is make bench's reference relay: the least a userspace
// relay can do. It listens on two UDP ports and sends every datagram that
// arrives on one port out of the other, to that side's fixed destination:
//
//	udpfwd PORT_A DEST_A PORT_B DEST_B
//
// A datagram to PORT_A leaves from PORT_B to DEST_B; one to PORT_B leaves
// from PORT_A to DEST_A. Two wireguard-go ends that name the forwarder's
// ports as each other's endpoints talk through it, as glow's ends talk
// through a relay node. It does nothing else: no frame header, no check of
// who sent what, no crypto, no copy of its own. Its socket I/O is
// wireguard-go's conn.StdNetBind (recvmmsg with UDP GRO, sendmmsg with UDP
// GSO, through Go's ordinary system calls), the same as the wireguard-go
// ends', so the wireguard-go columns through it measure what relaying
// through a wireguard-go-style userspace process costs on this machine.
// Glow's relays use link/udpbind, which makes the same calls raw and costs
// less than this forwarder per GB.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// side is one of the two ports and the destination of what leaves from it.
type side struct {
	bind conn.Bind
	dest conn.Endpoint
	recv []conn.ReceiveFunc
	port uint16 // the port it listens on
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: udpfwd PORT_A DEST_A PORT_B DEST_B")
		os.Exit(2)
	}
	f, err := start(os.Args[1], os.Args[2], os.Args[3], os.Args[4])
	if err != nil {
		fmt.Fprintln(os.Stderr, "udpfwd:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
	case err := <-f.errs:
		fmt.Fprintln(os.Stderr, "udpfwd:", err)
		os.Exit(1)
	}
	f.close()
}

// forwarder is the two sides, piped into each other.
type forwarder struct {
	a, b *side
	errs chan error // the first error that stopped a pipe
}

// start opens both ports (0: any free port) and starts piping.
func start(portA, destA, portB, destB string) (*forwarder, error) {
	a, err := open(portA, destA)
	if err != nil {
		return nil, err
	}
	b, err := open(portB, destB)
	if err != nil {
		a.bind.Close()
		return nil, err
	}
	f := &forwarder{a: a, b: b, errs: make(chan error, len(a.recv)+len(b.recv))}
	for _, fn := range a.recv {
		go pipe(fn, a.bind.BatchSize(), b, f.errs)
	}
	for _, fn := range b.recv {
		go pipe(fn, b.bind.BatchSize(), a, f.errs)
	}
	return f, nil
}

func (f *forwarder) close() {
	f.a.bind.Close()
	f.b.bind.Close()
}

func open(port, dest string) (*side, error) {
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %v", port, err)
	}
	bind := conn.NewStdNetBind()
	ep, err := bind.ParseEndpoint(dest)
	if err != nil {
		return nil, fmt.Errorf("destination %q: %v", dest, err)
	}
	fns, actual, err := bind.Open(uint16(p))
	if err != nil {
		return nil, fmt.Errorf("port %d: %v", p, err)
	}
	return &side{bind: bind, dest: ep, recv: fns, port: actual}, nil
}

// pipe receives batches with fn and sends each out of the other side. The
// buffers are as large as wireguard-go's own (a GRO batch is split into
// them) and reused for every batch.
func pipe(fn conn.ReceiveFunc, batch int, out *side, errs chan<- error) {
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	sizes := make([]int, batch)
	eps := make([]conn.Endpoint, batch)
	send := make([][]byte, 0, batch)
	for {
		n, err := fn(bufs, sizes, eps)
		if errors.Is(err, net.ErrClosed) {
			errs <- err
			return
		}
		if err != nil {
			time.Sleep(time.Millisecond) // a passing error (ICMP from a restarting end)
			continue
		}
		send = send[:0]
		for i := range n {
			if sizes[i] > 0 {
				send = append(send, bufs[i][:sizes[i]])
			}
		}
		if len(send) > 0 {
			// A failed send (the destination gone for a moment) drops the
			// batch, as a relay would; the ends' TCP resends.
			_ = out.bind.Send(send, out.dest)
		}
	}
}
