package overlay

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAttackLinkConns: outsiders open connections to the link port (TCP
// and WebSocket on one port) and never authenticate: half-sent HTTP
// requests, idle keep-alive connections after a 404, and silent ones, from
// one source and from many. The node holds a bounded number of them.
func TestAttackLinkConns(t *testing.T) {
	n := testNode(t, "n1", func(c *Config) { c.UserName = "alice"; c.LinkListen = "127.0.0.1:0" })
	to := n.LinkAddr()
	var conns []net.Conn
	var kindOf []int
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	kinds := []string{
		"GET /glow/link HTTP/1.1\r\nHost: x\r\n",   // headers never finished
		"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", // a 404, then idle keep-alive
		"GLK1", // a link handshake never finished
		"",     // silent
	}
	open := func(src netip.Addr, k int) {
		first := kinds[k]
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: time.Second}
		c, err := d.Dial("tcp", to)
		if err != nil {
			return // refused or timed out: not held
		}
		conns = append(conns, c)
		kindOf = append(kindOf, k)
		if first != "" {
			c.Write([]byte(first))
		}
	}
	one := netip.MustParseAddr("127.0.0.1")
	for k := range kinds { // HTTP first, then the rest
		for i := range 50 {
			open(one, k)
			open(netip.AddrFrom4([4]byte{127, 3, byte(k), byte(1 + i)}), k)
		}
	}
	time.Sleep(time.Second) // past the first peek, well before any 10 s timeout
	held, byKind := 0, make([]int, len(kinds))
	for i, c := range conns {
		if stillOpen(c) {
			held++
			byKind[kindOf[i]]++
		}
	}
	t.Logf("%d connections opened (200 from one address, 200 from 200 addresses), %d held open by the node after 1 s (unfinished HTTP headers, idle after a 404, unfinished link handshake, silent: %v)", len(conns), held, byKind)
	if held > maxLinkConnsPending {
		t.Errorf("the node holds %d unauthenticated connections (cap %d)", held, maxLinkConnsPending)
	}
}

// stillOpen reports whether the far end of c has not closed it: a read
// that times out (rather than EOF or reset), after draining what was sent.
func stillOpen(c net.Conn) bool {
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := c.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// flakyListener fails its first Accept with a non-temporary error.
type flakyListener struct {
	net.Listener
	failed atomic.Bool
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if !l.failed.Swap(true) {
		return nil, errors.New("accept: something transient the kernel said")
	}
	return l.Listener.Accept()
}

// TestAttackLinkAcceptError: an Accept error (EMFILE under a connection
// flood, or anything else) does not end link acceptance: the next
// connection is still served.
func TestAttackLinkAcceptError(t *testing.T) {
	n := testNode(t, "n1", func(c *Config) { c.UserName = "alice" })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.wg.Add(1)
	go n.serveLinks(&flakyListener{Listener: ln})
	served := false
	for range 3 {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		io.Copy(io.Discard, c)
		c.Close()
		if strings.HasPrefix(line, "HTTP/1.1 404") {
			served = true
			break
		}
	}
	if !served {
		t.Error("after one Accept error the link port serves nothing")
	}
}
