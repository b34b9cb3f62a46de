package lab

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Helpers added for the NAT and relay tests. Everything here is additive:
// the rest of the lab's API is unchanged.

// Do runs f on an OS thread that has entered the host's network namespace,
// and returns f's error. Sockets that f creates (net.Listen, net.Dial with
// IP literals, net.ListenPacket) belong to the host's namespace for their
// whole life, so the test process itself can serve and send traffic there;
// goroutines that f starts run in the test's own namespace (only sockets
// created inside f itself, on its thread, are in the host).
//
// When the thread cannot be put back into its original namespace it is left
// locked, so the Go runtime throws it away instead of reusing it.
func (h *Host) Do(f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: %s: %w", h.NS, err)
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + h.NS)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: %s: %w", h.NS, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: setns %s: %w", h.NS, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stay locked: the thread dies with this goroutine.
		return fmt.Errorf("lab: back from %s: %w (f: %v)", h.NS, err, ferr)
	}
	runtime.UnlockOSThread()
	return ferr
}

// NoRouteOut deletes the host's default routes (IPv4 and IPv6): it can then
// talk only to the subnets it is attached to.
func (h *Host) NoRouteOut() {
	h.lab.t.Helper()
	h.lab.must(h.NS, "ip", "-4", "route", "flush", "default")
	h.lab.must(h.NS, "ip", "-6", "route", "flush", "default")
}

// cutTag marks the rules of CutUDP so RestoreUDP finds them.
const cutTag = "lab-cut-udp"

// CutUDP makes the bridge drop every UDP packet between x and y, both
// directions, over every address family they share on it. The packets are
// lost in the network (the bridge's FORWARD chain, br_netfilter), so the
// senders see no error, as when a path dies on the way. Other traffic, and
// traffic with other hosts, still passes.
func (b *Bridge) CutUDP(x, y *Host) {
	b.lab.t.Helper()
	for _, xa := range x.Addrs() {
		for _, ya := range y.Addrs() {
			if xa.Is4() != ya.Is4() || !b.V4.Contains(xa) && !b.V6.Contains(xa) {
				continue
			}
			ipt := "iptables"
			if xa.Is6() {
				ipt = "ip6tables"
			}
			for _, d := range [][2]netip.Addr{{xa, ya}, {ya, xa}} {
				b.lab.must(b.NS, ipt, "-w", "5", "-I", "FORWARD", "-p", "udp",
					"-s", d[0].String(), "-d", d[1].String(),
					"-m", "comment", "--comment", cutTag, "-j", "DROP")
			}
		}
	}
}

// RestoreUDP removes every rule CutUDP added on the bridge.
func (b *Bridge) RestoreUDP() {
	b.lab.t.Helper()
	for _, ipt := range []string{"iptables", "ip6tables"} {
		out := b.lab.must(b.NS, ipt+"-save")
		for _, line := range strings.Split(out, "\n") {
			if !strings.HasPrefix(line, "-A ") || !strings.Contains(line, cutTag) {
				continue
			}
			args := strings.Fields(strings.Replace(line, "-A ", "-D ", 1))
			for i, a := range args { // iptables-save may quote the comment
				args[i] = strings.Trim(a, `"`)
			}
			b.lab.must(b.NS, append([]string{ipt, "-w", "5"}, args...)...)
		}
	}
}

// RemapPorts makes the router forget its mappings and hand out new public
// ports: it puts a MASQUERADE to ports lo-hi (UDP and TCP) ahead of its NAT
// rule and flushes conntrack. Unlike FlushConntrack alone on an EasyNAT
// (which hands back the same public port), every flow then leaves from a new
// port: what a home router's reboot or a CGNAT timeout looks like to peers.
// Calling it again with another range moves the ports again.
func (r *Router) RemapPorts(lo, hi int) {
	r.lab.t.Helper()
	for _, proto := range []string{"udp", "tcp"} {
		r.lab.must(r.NS, "iptables", "-w", "5", "-t", "nat", "-I", "POSTROUTING", "1", "-o", "wan0",
			"-p", proto, "-j", "MASQUERADE", "--to-ports", fmt.Sprintf("%d-%d", lo, hi))
	}
	r.FlushConntrack()
}
