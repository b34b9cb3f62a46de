// Package udpbind is glow's UDP socket under WireGuard: a conn.Bind that
// moves datagrams in batches (recvmmsg and sendmmsg, with UDP GRO and GSO),
// as wireguard-go's conn.StdNetBind does, but makes those system calls raw.
//
// Why raw. Go's syscall.Syscall enters the scheduler (entersyscall), and when
// every P of the process was idle that entry wakes the runtime's monitor
// thread, sysmon, which then polls every 20 µs for a while. A relay or a
// WireGuard end goes idle between bursts thousands of times a second, so on a
// machine where a context switch is dear (a VM) the wake-ups cost more than the
// I/O: on the 2-core lab VM, sysmon was a quarter of a relay node's CPU. The
// sockets are non-blocking, so recvmmsg and sendmmsg never wait in the kernel
// (EAGAIN goes back to Go's netpoller through syscall.RawConn), and
// unix.RawSyscall6 is correct for them: it skips the scheduler entry and the
// wake-up with it. Measured on that VM: a relay node's CPU per GB -35%, its
// context switches per GB -60%, relayed throughput +30%.
//
// What it does, per socket (one IPv4 and one IPv6, on one port):
//
//	receive: recvmmsg into wireguard-go's buffers; with GRO on, into the last
//	         len/64 of them, each read message then cut at its segment size
//	         (the UDP_GRO control message) into the buffers from the first
//	         on (split); one Endpoint per source address, reused while the
//	         source repeats, so a steady flow allocates nothing
//	send:    runs of same-size datagrams (a shorter one may end a run, at
//	         most 64) become one message with UDP_SEGMENT, one iovec per
//	         datagram, so nothing is copied (coalesce); one sendmmsg for all
//
// What it does not do: sticky sources (IP_PKTINFO). Glow never sends to an
// endpoint a packet came from; every destination comes from ParseEndpoint, so
// the kernel's routing picks the source address, and the control messages
// are not worth their bytes on every datagram.
//
// On platforms other than Linux on amd64 and arm64, New returns
// conn.StdNetBind.
package udpbind
