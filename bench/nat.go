package main

// The NAT rows: glow only, on a topology of its own built once per round.
// Two homes, each a host behind an easy-NAT router, and one public node,
// all on a fake Internet (a Linux bridge), as e2e/nat_test.go builds them:
//
//	ha 10.80.1.10 - gwa (MASQUERADE) 198.51.100.11 ─┐
//	hb 10.80.2.10 - gwb (MASQUERADE) 198.51.100.12 ─┼─ inet (br0)
//	pub 198.51.100.10 ──────────────────────────────┘
//
// The routers filter statefully like home routers: from the WAN only
// packets of known flows pass, forwarded or to the router itself. pub
// creates user bench and invites both homes. Measured, in this order:
// first packet to the first reply and to the first reply over a direct
// path; then, while a paced TCP transfer and a ping run from ha to hb, UDP
// between the two routers' public addresses is dropped on the bridge (pub
// stays reachable) once both ends show a second path through pub proven
// (status "standby"): the failover to the relay pub, the longest stall of
// the transfer and the longest gap between ping replies; then the cut is
// lifted: the time until the path is direct again. Then with no second path
// proven: the transfer pauses until both ends are idle (an idle peer keeps
// no standby), UDP is cut again and the transfer resumes at once: its
// longest stall from the resumption. The transfer is checked end to end
// (byte count and SHA-256).

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	natPubIP = "198.51.100.10"
	// The paced transfer across the cut: 2 MiB/s in 16 KiB writes.
	natRate   = 2 << 20
	natChunk  = 16 << 10
	natPort   = 5202
	natSettle = 3 * time.Second // steady transfer before the cut
	natHold   = 6 * time.Second // the cut lasts at least this long
)

// natSummary is the one-line log of a NAT round.
func natSummary(m map[string]float64) string {
	return fmt.Sprintf("direct after %.2f s, failover stall %.2f s (no second path proven: %.2f s), %g bytes lost, back to direct %.2f s",
		m["nat_direct"], m["nat_stall"], m["nat_coldstall"], m["nat_lost"], m["nat_back"])
}

// runNAT builds the topology, brings glow up and measures the NAT rows.
// It returns what it measured even when a later step fails.
func runNAT(l *lab, bins binaries, o options) (map[string]float64, error) {
	m := map[string]float64{}
	t := &natLab{lab: l}
	if err := t.build(); err != nil {
		return nil, err
	}
	nodes := map[string]*glowNode{}
	for _, x := range [][2]string{{t.pub, "pub"}, {t.ha, "a"}, {t.hb, "b"}} {
		g, err := newGlowNode(l, bins, x[0], x[1])
		if err != nil {
			return nil, err
		}
		nodes[x[1]] = g
	}
	gp, ga, gb := nodes["pub"], nodes["a"], nodes["b"]
	t0 := time.Now()
	if err := gp.up("--user", "bench"); err != nil {
		return nil, err
	}
	if err := ga.join(gp); err != nil {
		return nil, err
	}
	if err := gb.join(gp); err != nil {
		return nil, err
	}
	target, err := gb.ip()
	if err != nil {
		return nil, err
	}
	// a must know b (its record came through pub) before the first packet,
	// so that the figure is the path set-up, not the join's gossip.
	if _, err := ga.waitPeer("b", 30*time.Second, "listed", func(p *peerStatus) bool { return p != nil }); err != nil {
		return nil, err
	}
	m["nat_setup"] = time.Since(t0).Seconds()
	if p, err := ga.peer("b"); err == nil && p.is("direct", "") {
		l.log("nat: a already has a direct path to b before the first packet (%s)", p)
	}

	if err := t.firstPacket(m, ga, target); err != nil {
		return m, err
	}
	return m, t.failover(m, ga, gb, target)
}

type natLab struct {
	*lab
	inet, pub, gwa, gwb, ha, hb string
	wanA, wanB                  string
	ports                       int
}

func (t *natLab) build() error {
	var err error
	names := []*string{&t.inet, &t.pub, &t.gwa, &t.gwb, &t.ha, &t.hb}
	for i, name := range []string{"inet", "pub", "gwa", "gwb", "ha", "hb"} {
		if *names[i], err = t.ns(name); err != nil {
			return err
		}
	}
	ip := func(args ...string) error {
		_, err := run(t.ctx, cmdTimeout, "ip", args...)
		return err
	}
	if err := ip("-n", t.inet, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"); err != nil {
		return err
	}
	if err := ip("-n", t.inet, "link", "set", "br0", "up"); err != nil {
		return err
	}
	// The cut is an iptables rule on bridged traffic (br_netfilter).
	if err := t.sysctl(t.inet, "net.bridge.bridge-nf-call-iptables", "1"); err != nil {
		return fmt.Errorf("br_netfilter is needed to cut UDP on the bridge: %w", err)
	}
	t.wanA, t.wanB = "198.51.100.11", "198.51.100.12"
	if err := t.attach(t.pub, "eth0", natPubIP); err != nil {
		return err
	}
	for i, h := range []struct{ gw, home, wan string }{{t.gwa, t.ha, t.wanA}, {t.gwb, t.hb, t.wanB}} {
		lan := fmt.Sprintf("10.80.%d", i+1)
		if err := t.attach(h.gw, "wan0", h.wan); err != nil {
			return err
		}
		if err := t.veth(h.home, "eth0", lan+".10/24", h.gw, "lan0", lan+".1/24"); err != nil {
			return err
		}
		if err := ip("-n", h.home, "route", "add", "default", "via", lan+".1"); err != nil {
			return err
		}
		if err := t.sysctl(h.gw, "net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
		for _, rule := range [][]string{
			{"-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"},
			{"-A", "FORWARD", "-i", "wan0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED,DNAT", "-j", "ACCEPT"},
			{"-A", "FORWARD", "-i", "wan0", "-j", "DROP"},
			{"-A", "INPUT", "-i", "wan0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
			{"-A", "INPUT", "-i", "wan0", "-j", "DROP"},
		} {
			if _, err := t.exec(h.gw, append([]string{"iptables", "-w", "5"}, rule...)...); err != nil {
				return err
			}
		}
	}
	return nil
}

// attach plugs ns into the Internet bridge as ifname with addr/24.
func (t *natLab) attach(ns, ifname, addr string) error {
	port := "p" + strconv.Itoa(t.ports)
	t.ports++
	if err := t.veth(ns, ifname, addr+"/24", t.inet, port, ""); err != nil {
		return err
	}
	_, err := run(t.ctx, cmdTimeout, "ip", "-n", t.inet, "link", "set", port, "master", "br0")
	return err
}

// cutUDP adds (add) or removes the bridge rules that drop UDP between the
// two routers' public addresses, both ways.
func (t *natLab) cutUDP(add bool) error {
	op := "-I"
	if !add {
		op = "-D"
	}
	for _, d := range [][2]string{{t.wanA, t.wanB}, {t.wanB, t.wanA}} {
		if _, err := t.exec(t.inet, "iptables", "-w", "5", op, "FORWARD", "-p", "udp", "-s", d[0], "-d", d[1], "-j", "DROP"); err != nil {
			return err
		}
	}
	return nil
}

// firstPacket: ping b every 50 ms from a; the first reply, and the first
// reply after a's status shows b direct at b's router.
func (t *natLab) firstPacket(m map[string]float64, ga *glowNode, target string) error {
	start := time.Now()
	p, err := t.startPing("ping-first.log", target)
	if err != nil {
		return err
	}
	directAt, werr := ga.waitPeer("b", 30*time.Second, "direct at "+t.wanB, func(p *peerStatus) bool { return p.is("direct", t.wanB) })
	var replies []pingReply
	if werr == nil {
		// A reply sent over the direct path: one that arrived after the
		// status showed it (at most one status poll late).
		waitFor(t.ctx, 5*time.Second, 50*time.Millisecond, "ping reply over the direct path", func() (bool, error) {
			replies = parsePingLog(p.log)
			return len(replies) > 0 && replies[len(replies)-1].at.After(directAt), nil
		})
	}
	stopProcess(p.cmd)
	replies = parsePingLog(p.log)
	if len(replies) > 0 {
		m["nat_first"] = replies[0].at.Sub(start).Seconds()
	}
	if werr != nil {
		return werr
	}
	for _, r := range replies {
		if !r.at.Before(directAt) {
			m["nat_direct"] = r.at.Sub(start).Seconds()
			return nil
		}
	}
	return fmt.Errorf("no ping reply from b over the direct path within 5 s of a's status showing it")
}

// failover runs the transfer and the ping across the cut and its repair.
func (t *natLab) failover(m map[string]float64, ga, gb *glowNode, target string) error {
	tr, err := startTransfer(t.lab, t.ha, t.hb, target)
	if err != nil {
		return err
	}
	defer tr.abort()
	p, err := t.startPing("ping-failover.log", target)
	if err != nil {
		return err
	}
	defer stopProcess(p.cmd)
	if !sleepCtx(t, natSettle) {
		return t.ctx.Err()
	}
	if tr.received.Load() == 0 {
		return fmt.Errorf("nat: no byte of the transfer arrived in %v", natSettle)
	}
	// Both ends keep a second path through pub warm for the busy peer.
	for _, x := range []struct {
		g    *glowNode
		peer string
	}{{ga, "b"}, {gb, "a"}} {
		if _, err := x.g.waitPeer(x.peer, 20*time.Second, "direct with a standby via [pub]", func(p *peerStatus) bool {
			return p.is("direct", "") && len(p.Standby) == 1 && shortName(p.Standby[0]) == "pub"
		}); err != nil {
			return err
		}
	}

	cut := time.Now()
	if err := t.cutUDP(true); err != nil {
		return err
	}
	relayAt, ferr := ga.waitPeer("b", 20*time.Second, "relay via [pub]", func(p *peerStatus) bool { return p.is("relay", "", "pub") })
	if ferr == nil {
		m["nat_failstatus"] = relayAt.Sub(cut).Seconds()
	}
	// Hold the cut until the transfer has moved again for a while.
	waitFor(t.ctx, 20*time.Second, 50*time.Millisecond, "transfer moving after the cut", func() (bool, error) {
		last := tr.lastRead()
		return time.Since(cut) >= natHold && last.After(cut) && time.Since(last) < time.Second, nil
	})
	restored := time.Now()
	if err := t.cutUDP(false); err != nil {
		return err
	}
	m["nat_stall"] = tr.longestGap(cut, restored).Seconds()
	directAt, berr := ga.waitPeer("b", 40*time.Second, "direct at "+t.wanB+" again", func(p *peerStatus) bool { return p.is("direct", t.wanB) })
	if berr == nil {
		m["nat_back"] = directAt.Sub(restored).Seconds()
	}
	sleepCtx(t, 2*time.Second)
	end := time.Now()
	m["nat_backstall"] = tr.longestGap(restored, end).Seconds()
	stopProcess(p.cmd)
	m["nat_pinggap"] = longestReplyGap(parsePingLog(p.log), cut, restored).Seconds()
	if ferr == nil && berr == nil {
		berr = t.coldFailover(m, ga, gb, tr)
	}

	lost, terr := tr.finish()
	if terr == nil {
		m["nat_lost"] = float64(lost)
	}
	if ferr != nil {
		return ferr
	}
	if berr != nil {
		return berr
	}
	return terr
}

// coldFailover measures the stall with no second path proven: the
// transfer pauses until neither end keeps a standby (idle peers keep none),
// UDP is cut and the transfer resumes at once; its longest stall from then
// until the cut is lifted, once it has moved again for a while.
func (t *natLab) coldFailover(m map[string]float64, ga, gb *glowNode, tr *transfer) error {
	tr.paused.Store(true)
	for _, x := range []struct {
		g    *glowNode
		peer string
	}{{ga, "b"}, {gb, "a"}} {
		if _, err := x.g.waitPeer(x.peer, 40*time.Second, "direct, idle, without a standby", func(p *peerStatus) bool {
			return p.is("direct", "") && len(p.Standby) == 0
		}); err != nil {
			return err
		}
	}
	if err := t.cutUDP(true); err != nil {
		return err
	}
	resumed := time.Now()
	tr.paused.Store(false)
	waitFor(t.ctx, 20*time.Second, 50*time.Millisecond, "transfer moving after the second cut", func() (bool, error) {
		last := tr.lastRead()
		return time.Since(resumed) >= natHold && last.After(resumed) && time.Since(last) < time.Second, nil
	})
	restored := time.Now()
	if err := t.cutUDP(false); err != nil {
		return err
	}
	m["nat_coldstall"] = tr.longestGap(resumed, restored).Seconds()
	_, err := ga.waitPeer("b", 40*time.Second, "direct at "+t.wanB+" after the second cut", func(p *peerStatus) bool { return p.is("direct", t.wanB) })
	return err
}

// pingProc is a background ping whose output goes to log.
type pingProc struct {
	cmd *exec.Cmd
	log string
}

// startPing starts `ping -D -i 0.05` from ha to target; stopProcess
// (SIGTERM) ends it, and its output is in the lab's directory.
func (t *natLab) startPing(logName, target string) (*pingProc, error) {
	cmd, err := t.start(t.ha, logName, nil, "ping", "-n", "-D", "-i", "0.05", "-W", "1", target)
	if err != nil {
		return nil, err
	}
	return &pingProc{cmd: cmd, log: filepath.Join(t.dir, logName)}, nil
}

func sleepCtx(t *natLab, d time.Duration) bool {
	select {
	case <-t.ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

type pingReply struct {
	seq int
	at  time.Time
}

var pingReplyRE = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from .*icmp_seq=(\d+)`)

// parsePingLog reads the replies of a `ping -n -D` log, in order.
func parsePingLog(path string) []pingReply {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []pingReply
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		mm := pingReplyRE.FindStringSubmatch(sc.Text())
		if mm == nil {
			continue
		}
		sec, _ := strconv.ParseInt(mm[1], 10, 64)
		us, _ := strconv.ParseInt((mm[2] + "000000")[:6], 10, 64)
		seq, _ := strconv.Atoi(mm[3])
		out = append(out, pingReply{seq: seq, at: time.Unix(sec, us*1000)})
	}
	return out
}

// longestReplyGap is the longest time without a reply within [from, to],
// counting from from.
func longestReplyGap(replies []pingReply, from, to time.Time) time.Duration {
	var times []time.Time
	for _, r := range replies {
		times = append(times, r.at)
	}
	return longestGap(times, from, to)
}

// longestGap is the longest interval within [from, to] that holds none of
// the (sorted) times, from's own start and to's end included.
func longestGap(times []time.Time, from, to time.Time) time.Duration {
	var gap time.Duration
	prev := from
	for _, at := range times {
		if at.Before(from) {
			continue
		}
		if at.After(to) {
			break
		}
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	return max(gap, to.Sub(prev))
}

// transfer is a paced TCP stream from one namespace to a listener in
// another, hashed at both ends; the receiver notes when each read returned.
type transfer struct {
	ln       net.Listener
	conn     net.Conn
	stop     chan struct{}
	sent     atomic.Int64
	received atomic.Int64
	paused   atomic.Bool // the sender writes nothing while set
	sendDone chan struct{}
	recvDone chan struct{}

	mu      sync.Mutex
	reads   []time.Time
	sendSum []byte
	recvSum []byte
	sendErr error
	recvErr error
}

func startTransfer(l *lab, from, to, target string) (*transfer, error) {
	tr := &transfer{stop: make(chan struct{}), sendDone: make(chan struct{}), recvDone: make(chan struct{})}
	addr := net.JoinHostPort(target, strconv.Itoa(natPort))
	if err := inNS(to, func() error {
		var err error
		tr.ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, to, err)
	}
	go tr.receive()
	if err := inNS(from, func() error {
		var err error
		tr.conn, err = net.DialTimeout("tcp4", addr, 10*time.Second)
		return err
	}); err != nil {
		tr.ln.Close()
		return nil, fmt.Errorf("connect to %s from %s: %w", addr, from, err)
	}
	go tr.send()
	return tr, nil
}

func (tr *transfer) receive() {
	defer close(tr.recvDone)
	tr.ln.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Second))
	c, err := tr.ln.Accept()
	if err != nil {
		tr.mu.Lock()
		tr.recvErr = err
		tr.mu.Unlock()
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	c.(*net.TCPConn).SetKeepAlive(false) // an idle pause stays idle
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			tr.received.Add(int64(n))
			tr.mu.Lock()
			tr.reads = append(tr.reads, time.Now())
			tr.mu.Unlock()
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			tr.mu.Lock()
			tr.recvErr = err
			tr.mu.Unlock()
			return
		}
	}
	tr.mu.Lock()
	tr.recvSum = h.Sum(nil)
	tr.mu.Unlock()
}

func (tr *transfer) send() {
	defer close(tr.sendDone)
	tr.conn.SetDeadline(time.Now().Add(3 * time.Minute))
	tr.conn.(*net.TCPConn).SetKeepAlive(false) // an idle pause stays idle
	rng := rand.NewChaCha8([32]byte{'g', 'l', 'o', 'w'})
	h := sha256.New()
	buf := make([]byte, natChunk)
	start, paced := time.Now(), int64(0)
	for sent := int64(0); ; sent += natChunk {
		select {
		case <-tr.stop:
			tr.mu.Lock()
			tr.sendSum = h.Sum(nil)
			tr.mu.Unlock()
			tr.conn.(*net.TCPConn).CloseWrite()
			return
		default:
		}
		if tr.paused.Load() {
			time.Sleep(10 * time.Millisecond)
			start, paced = time.Now(), 0 // the pace starts anew: no burst on resuming
			sent -= natChunk
			continue
		}
		if wait := time.Until(start.Add(time.Duration(paced) * time.Second / natRate)); wait > 0 {
			time.Sleep(wait)
		}
		rng.Read(buf)
		h.Write(buf)
		if _, err := tr.conn.Write(buf); err != nil {
			tr.mu.Lock()
			tr.sendErr = fmt.Errorf("after %d bytes: %w", sent, err)
			tr.mu.Unlock()
			return
		}
		tr.sent.Add(natChunk)
		paced += natChunk
	}
}

func (tr *transfer) lastRead() time.Time {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.reads) == 0 {
		return time.Time{}
	}
	return tr.reads[len(tr.reads)-1]
}

// longestGap is the longest time within [from, to] without a read.
func (tr *transfer) longestGap(from, to time.Time) time.Duration {
	tr.mu.Lock()
	reads := append([]time.Time(nil), tr.reads...)
	tr.mu.Unlock()
	sort.Slice(reads, func(i, j int) bool { return reads[i].Before(reads[j]) })
	return longestGap(reads, from, to)
}

// finish stops the sender, waits (bounded) for the receiver to see the end
// of the stream and returns the bytes sent but not received; an error when
// the stream broke or what arrived differs from what was sent.
func (tr *transfer) finish() (int64, error) {
	close(tr.stop)
	select {
	case <-tr.sendDone:
	case <-time.After(30 * time.Second):
		return 0, fmt.Errorf("transfer: sender not done 30 s after the stop")
	}
	select {
	case <-tr.recvDone:
	case <-time.After(30 * time.Second):
		return tr.sent.Load() - tr.received.Load(), fmt.Errorf("transfer: %d of %d bytes received 30 s after the sender stopped", tr.received.Load(), tr.sent.Load())
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	lost := tr.sent.Load() - tr.received.Load()
	switch {
	case tr.sendErr != nil:
		return lost, fmt.Errorf("transfer: sender: %v", tr.sendErr)
	case tr.recvErr != nil:
		return lost, fmt.Errorf("transfer: receiver: %v", tr.recvErr)
	case lost != 0:
		return lost, fmt.Errorf("transfer: %d bytes sent, %d received", tr.sent.Load(), tr.received.Load())
	case !bytes.Equal(tr.sendSum, tr.recvSum):
		return lost, fmt.Errorf("transfer: %d bytes arrived but their SHA-256 differs from what was sent", tr.received.Load())
	}
	return 0, nil
}

// abort closes everything (after finish, a no-op but for the listener).
func (tr *transfer) abort() {
	tr.ln.Close()
	tr.conn.Close()
}

// inNS runs f on an OS thread that has entered namespace ns: sockets that
// f creates belong to ns for their whole life. When the thread cannot
// return to the original namespace it stays locked, so the runtime drops it.
func inNS(ns string, f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", ns, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("back from %s: %w (f: %v)", ns, err, ferr)
	}
	runtime.UnlockOSThread()
	return ferr
}
