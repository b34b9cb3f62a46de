package main

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// TestForward sends datagrams from each end to its side of the forwarder
// and checks that the other end gets each of them, from the other side's
// port.
func TestForward(t *testing.T) {
	endA, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer endA.Close()
	endB, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer endB.Close()
	f, err := start("0", endA.LocalAddr().String(), "0", endB.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	portA := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(f.a.port)}
	portB := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(f.b.port)}

	for _, c := range []struct {
		name     string
		from, to *net.UDPConn
		via      *net.UDPAddr // the side the sender sends to
		seenFrom int          // the port the receiver sees it from
	}{
		{"a to b", endA, endB, portA, portB.Port},
		{"b to a", endB, endA, portB, portA.Port},
	} {
		const n = 50
		for i := range n {
			msg := []byte(fmt.Sprintf("%s %d %s", c.name, i, make([]byte, i*20)))
			if _, err := c.from.WriteToUDP(msg, c.via); err != nil {
				t.Fatal(err)
			}
			c.to.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 2048)
			k, from, err := c.to.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("%s: datagram %d: %v", c.name, i, err)
			}
			if string(buf[:k]) != string(msg) {
				t.Fatalf("%s: datagram %d: got %q, want %q", c.name, i, buf[:k], msg)
			}
			if from.Port != c.seenFrom {
				t.Fatalf("%s: datagram %d came from port %d, want the forwarder's %d", c.name, i, from.Port, c.seenFrom)
			}
		}
	}
	if _, err := start("70000", "127.0.0.1:1", "0", "127.0.0.1:1"); err == nil {
		t.Fatal("port 70000 accepted")
	}
	if _, err := start("0", "not an address", "0", "127.0.0.1:1"); err == nil {
		t.Fatal("destination \"not an address\" accepted")
	}
}
