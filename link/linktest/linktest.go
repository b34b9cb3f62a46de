// Package linktest is the in-memory twin of glow's links, for tests: stream
// pipes, throwaway node identities, and FilterBind, a conn.Bind wrapper
// that cuts chosen paths at run time.
//
// Use:
//
//	a, b := linktest.Pipe()               // two ends of one in-memory stream
//	ida := linktest.NewIdentity("a")      // fresh key, certificate "a"
//	s, err := link.Handshake(ctx, a, ida, linktest.AcceptAll)
//
//	f := linktest.NewFilter()             // one filter shared by every node
//	bindA := f.Wrap(link.NewPacketBind(listen), netip.MustParseAddr("127.0.0.1"))
//	...
//	f.Block(addrA, addrB)                 // A and B no longer hear each other
//	f.Unblock(addrA, addrB)
//	f.Dropped()                           // how many packets the filter ate
//
// FilterBind wraps any conn.Bind, so a line of wireguard-go devices over
// loopback (A-B-C-D-E) can have its links cut and healed while the devices
// run, without touching the kernel's firewall.
package linktest

import (
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"

	"glow/internal/wire"
	"glow/link"
)

// Pipe returns two connected in-memory stream ends (net.Pipe: unbuffered,
// so a writer blocks until the other end reads, which shakes out
// handshakes that would deadlock on a full socket buffer).
func Pipe() (io.ReadWriteCloser, io.ReadWriteCloser) {
	a, b := net.Pipe()
	return a, b
}

// NewIdentity returns an identity with a fresh signing key and cert as its
// certificate bytes.
func NewIdentity(cert string) link.Identity {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return link.Identity{Sign: priv, Cert: []byte(cert)}
}

// AcceptAll is a Verify that accepts every peer that proved its key.
func AcceptAll(wire.NodeID, []byte) error { return nil }

// Expect returns a Verify that accepts only peer, with any certificate.
func Expect(peer wire.NodeID) link.Verify {
	return func(id wire.NodeID, _ []byte) error {
		if id != peer {
			return &UnexpectedPeerError{Want: peer, Got: id}
		}
		return nil
	}
}

// UnexpectedPeerError is Expect's refusal.
type UnexpectedPeerError struct{ Want, Got wire.NodeID }

func (e *UnexpectedPeerError) Error() string {
	return "linktest: peer " + e.Got.String() + ", want " + e.Want.String()
}
