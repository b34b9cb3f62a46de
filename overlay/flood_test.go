package overlay

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"glow/internal/wire"
	"glow/overlay/member/membertest"
)

// TestAttackControlFlood: while two nodes carry a UDP ping every 100 ms over
// their direct path, a separate process sends junk to both nodes' UDP port
// from four loopback addresses: control packets with well-formed headers
// and random sender keys (an admin must not pay an X25519 for each), the
// same with the nodes' own control keys (public: they are in every
// beacon), beacons with a validly signed certificate of another user, and
// garbage. No ping may be lost and no path may change; the test reports the
// rate achieved and the CPU the two nodes spent.
func TestAttackControlFlood(t *testing.T) {
	secs, rate := 10, 50000
	if testing.Short() {
		secs = 3
	}
	var flooding atomic.Bool
	var pathEvents atomic.Int64
	logf := func(name string) func(string, ...any) {
		return func(f string, a ...any) {
			if strings.Contains(f, "direct path") && flooding.Load() {
				pathEvents.Add(1)
				t.Logf("%s: "+f, append([]any{name}, a...)...)
			}
		}
	}
	n1 := testNode(t, "n1", func(c *Config) { c.UserName = "alice"; c.Logf = logf("n1") })
	code, err := n1.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	n2 := testNode(t, "n2", func(c *Config) { c.JoinCode = code; c.Logf = logf("n2") })
	for _, n := range []*Node{n1, n2} {
		waitFor(t, 20*time.Second, "a direct path", func() bool { return directPeers(n) == 1 })
	}

	// The ping: UDP over the overlay, n1 -> n2 -> n1, every 100 ms.
	echo, err := stackNet(n2).ListenUDPAddrPort(netip.AddrPortFrom(n2.Cert().IPv4, 7))
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			k, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:k], from)
		}
	}()
	pc, err := stackNet(n1).DialUDPAddrPort(netip.AddrPortFrom(n1.Cert().IPv4, 0), netip.AddrPortFrom(n2.Cert().IPv4, 7))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	seq := uint64(0)
	ping := func() bool {
		seq++
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], seq)
		pc.SetDeadline(time.Now().Add(time.Second))
		if _, err := pc.Write(b[:]); err != nil {
			return false
		}
		var r [64]byte
		for {
			k, err := pc.Read(r[:])
			if err != nil {
				return false
			}
			if k == 8 && binary.BigEndian.Uint64(r[:8]) == seq {
				return true
			}
		}
	}
	waitFor(t, 10*time.Second, "a first ping", ping)

	var targets []string
	for _, n := range []*Node{n1, n2} {
		targets = append(targets, fmt.Sprintf("127.0.0.1:%d", n.Port()))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodSenderProcess$")
	cmd.Env = append(os.Environ(),
		"GLOW_FLOOD_TARGETS="+strings.Join(targets, ","),
		"GLOW_FLOOD_KEYS="+hex.EncodeToString(n1.ctlPub[:])+","+hex.EncodeToString(n2.ctlPub[:]),
		fmt.Sprintf("GLOW_FLOOD_RATE=%d", rate),
		fmt.Sprintf("GLOW_FLOOD_SECS=%d", secs))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ru0 := rusage()
	start := time.Now()
	flooding.Store(true)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var pings, lost int
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("flood sender: %v\n%s", err, out.String())
			}
			break loop
		case <-tick.C:
			pings++
			if !ping() {
				lost++
			}
		case <-time.After(time.Duration(secs+30) * time.Second):
			cmd.Process.Kill()
			t.Fatal("flood sender did not finish")
		}
	}
	flooding.Store(false)
	elapsed := time.Since(start)
	cpu := rusage() - ru0
	var sent int
	if i := strings.Index(out.String(), "SENT "); i >= 0 {
		sent, _ = strconv.Atoi(strings.Fields(out.String()[i+5:])[0])
	}
	n1.mu.Lock()
	drops1 := fmt.Sprint(n1.dropCtl)
	n1.mu.Unlock()
	t.Logf("flood: %d datagrams in %v (%.0f/s) from 4 sources to 2 nodes; pings %d, lost %d; path changes %d; nodes' CPU %.2f s (%.0f%% of one core); n1 bind drops: queue full %d, rate limited %d; n1 loop drops %s",
		sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), pings, lost, pathEvents.Load(),
		cpu.Seconds(), 100*cpu.Seconds()/elapsed.Seconds(), n1.bind.dropCtlFull.Load(), n1.bind.dropCtlLimited.Load(), drops1)
	if sent < secs*rate/10 {
		t.Errorf("the flood reached only %d datagrams", sent)
	}
	if lost > 0 || pathEvents.Load() > 0 {
		t.Errorf("under the flood %d of %d pings were lost and the path changed %d times", lost, pings, pathEvents.Load())
	}
}

// rusage is this process's CPU time (user and system).
func rusage() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestFloodSenderProcess is the flood sender of TestAttackControlFlood, run
// in a child process so that the nodes' CPU time can be measured apart
// from it. It does nothing in a normal test run.
func TestFloodSenderProcess(t *testing.T) {
	targetList := os.Getenv("GLOW_FLOOD_TARGETS")
	if targetList == "" {
		t.Skip("only as TestAttackControlFlood's child process")
	}
	rate, _ := strconv.Atoi(os.Getenv("GLOW_FLOOD_RATE"))
	secs, _ := strconv.Atoi(os.Getenv("GLOW_FLOOD_SECS"))
	var targets []*net.UDPAddr
	for _, s := range strings.Split(targetList, ",") {
		targets = append(targets, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s)))
	}
	var known []wire.Key
	for _, s := range strings.Split(os.Getenv("GLOW_FLOOD_KEYS"), ",") {
		var k wire.Key
		hex.Decode(k[:], []byte(s))
		known = append(known, k)
	}
	pool := floodPool(t, known, 4096)
	const sources = 4
	var total atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
	defer cancel()
	for s := range sources {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(2+s))})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Go(func() {
			p := ipv4.NewPacketConn(c)
			msgs := make([]ipv4.Message, 64)
			per := float64(rate) / sources
			start := time.Now()
			sent, i := 0, s*997
			for ctx.Err() == nil {
				due := int(time.Since(start).Seconds() * per)
				if due <= sent {
					time.Sleep(time.Millisecond)
					continue
				}
				k := min(due-sent, len(msgs))
				for j := range k {
					msgs[j] = ipv4.Message{Buffers: [][]byte{pool[i%len(pool)]}, Addr: targets[i%len(targets)]}
					i++
				}
				m, err := p.WriteBatch(msgs[:k], 0)
				if err != nil {
					m = max(m, 1) // a full buffer: count it as tried and go on
				}
				sent += m
			}
			total.Add(int64(sent))
		})
	}
	wg.Wait()
	fmt.Printf("SENT %d\n", total.Load())
}

// floodPool builds n junk datagrams: control packets with random and with
// known sender keys, beacons carrying another user's valid certificate,
// broken beacons, and random bytes.
func floodPool(t testing.TB, known []wire.Key, n int) [][]byte {
	other := membertest.NewUser(t, "mallory")
	var certs [][]byte
	for i := range 32 {
		_, c := membertest.NewCert(t, other, fmt.Sprintf("m%d", i), time.Now())
		certs = append(certs, c.Marshal())
	}
	var pool [][]byte
	for i := range n {
		var b []byte
		switch i % 10 {
		case 0, 1, 2, 3, 4: // control from a random key
			h := wire.Header(wire.KindControl)
			b = append(b, h[:]...)
			b = append(b, randBytes(32+24+16+mrand.IntN(160))...)
		case 5: // control "from" a node's own key, from a wrong address
			h := wire.Header(wire.KindControl)
			b = append(b, h[:]...)
			b = append(b, known[i%len(known)][:]...)
			b = append(b, randBytes(24+16+mrand.IntN(160))...)
		case 6, 7: // a beacon with another user's valid certificate
			h := wire.Header(wire.KindBeacon)
			b = append(b, h[:]...)
			b = binary.BigEndian.AppendUint16(b, 47470)
			b = append(b, certs[i%len(certs)]...)
		case 8: // a broken beacon
			h := wire.Header(wire.KindBeacon)
			b = append(b, h[:]...)
			b = append(b, randBytes(2+mrand.IntN(200))...)
		case 9: // garbage
			b = randBytes(1 + mrand.IntN(300))
		}
		pool = append(pool, b)
	}
	return pool
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
