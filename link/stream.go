package link

// Stream links: datagrams over a reliable byte stream.
//
// Where UDP does not get through, a node reaches a neighbour over a byte
// stream: TCP (tcp.go), WebSocket (ws.go), or the stdin/stdout of a command
// such as ssh (stdio.go). This file is what all of them share: a handshake
// that proves both node keys, then length-prefixed datagrams.
//
// # Handshake (symmetric: both ends run the same code, at the same time)
//
//	hello:     "GLK1" | nonce (32, random) | node public key (32) | cert length (2) | cert (<= MaxCertLen)
//	signature: ed25519 signature (64) over the transcript
//	transcript: "glow link v1" | role | first hello | second hello
//
// The two hellos are ordered by nonce, so both ends build the same
// transcript; role is 'A' for the end whose hello sorts first and 'B' for
// the other, so that a signature cannot be reflected back to its maker. Each
// end signs with its own role and checks the peer's signature with the
// peer's role. Because the transcript holds the verifier's fresh nonce, a
// replayed hello (with or without its old signature) fails; because equal
// nonces or a peer presenting our own key are refused, a stream looped back
// to itself fails. Only after the signature checks out does Verify see the
// peer's certificate: the overlay decides whether that node may link.
//
// There is no encryption here on purpose: everything a link carries is
// already WireGuard packets or sealed control packets, and the handshake only
// has to make sure that the link goes to the node it claims, so that routing
// is not poisoned. Transports that want confidentiality of the metadata
// (which nodes talk) use wss:// or ssh.
//
// # Frames
//
//	length (2, big endian) | datagram (length bytes)
//
// A datagram is at most 65535 bytes; zero-length datagrams are allowed.
// WriteDatagrams frames a batch into one buffered write, so a batch usually
// becomes one TCP segment train or one WebSocket message.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"glow/internal/wire"
)

// Handshake limits and constants.
const (
	// MaxCertLen bounds the certificate carried in a hello.
	MaxCertLen = 2048
	// MaxDatagram is the largest datagram a stream carries.
	MaxDatagram = 65535
	// HandshakeTimeout bounds a handshake whose ctx has no deadline.
	HandshakeTimeout = 10 * time.Second

	// HelloMagic opens every link handshake: a listener that serves other
	// protocols on the same port tells links apart by these 4 bytes.
	HelloMagic = "GLK1"

	helloMagic    = HelloMagic
	nonceLen      = 32
	helloFixedLen = len(helloMagic) + nonceLen + ed25519.PublicKeySize + 2
	maxHelloLen   = helloFixedLen + MaxCertLen
	transcriptCtx = "glow link v1"
)

// Errors a handshake or a read returns; callers may branch on them with
// errors.Is.
var (
	ErrBadMagic      = errors.New("link: not a glow link (bad magic)")
	ErrBadSignature  = errors.New("link: peer's handshake signature does not verify")
	ErrSelfLink      = errors.New("link: peer presents our own node key")
	ErrFrameTooLarge = errors.New("link: datagram larger than the read buffer")
	ErrDatagramSize  = errors.New("link: datagram larger than 65535 bytes")
)

// Identity is what a link end proves and learns.
type Identity struct {
	Sign ed25519.PrivateKey // node signing key; NodeID = public half
	Cert []byte             // the node's certificate (opaque here; the overlay checks it)
}

// ID returns the NodeID of id's signing key.
func (id Identity) ID() wire.NodeID {
	var n wire.NodeID
	copy(n[:], id.Sign.Public().(ed25519.PublicKey))
	return n
}

// Verify is called with the peer's NodeID and certificate bytes after the
// peer proved the key; return an error to refuse the link.
type Verify func(peer wire.NodeID, cert []byte) error

// StreamStats counts what a Stream carried after its handshake.
type StreamStats struct {
	DatagramsIn, DatagramsOut uint64
	BytesIn, BytesOut         uint64 // datagram bytes, without framing
}

// Stream is an authenticated link over a byte stream that carries datagrams.
//
// WriteDatagrams may be called from many goroutines; ReadDatagram from one at
// a time. Close may be called at any time, more than once; it unblocks a
// pending ReadDatagram (and a WriteDatagrams blocked in the transport), which
// then return an error.
type Stream struct {
	rwc      io.ReadWriteCloser
	peer     wire.NodeID
	peerCert []byte
	onClose  func() error // runs after rwc is closed (a command's kill and wait); may be nil

	datagramsIn, bytesIn   atomic.Uint64
	datagramsOut, bytesOut atomic.Uint64

	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed by Close

	br *bufio.Reader // owned by the single reader

	wmu sync.Mutex // guards bw and hdr
	bw  *bufio.Writer
	hdr [2]byte
}

// Handshake authenticates rw as a link between self and the node at the
// other end, which must run Handshake too. verify must not be nil. The
// handshake is bounded by ctx (and by HandshakeTimeout if ctx has no
// deadline). On error, rw is closed. On success the Stream owns rw.
func Handshake(ctx context.Context, rw io.ReadWriteCloser, self Identity, verify Verify) (*Stream, error) {
	s, err := handshake(ctx, rw, self, verify)
	if err != nil {
		rw.Close()
		return nil, err
	}
	return s, nil
}

func handshake(ctx context.Context, rw io.ReadWriteCloser, self Identity, verify Verify) (*Stream, error) {
	if verify == nil {
		return nil, errors.New("link: handshake: nil Verify")
	}
	if len(self.Sign) != ed25519.PrivateKeySize {
		return nil, errors.New("link: handshake: identity has no signing key")
	}
	if len(self.Cert) > MaxCertLen {
		return nil, fmt.Errorf("link: handshake: own certificate is %d bytes, over %d", len(self.Cert), MaxCertLen)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, HandshakeTimeout)
		defer cancel()
	}
	// Closing rw is the one way to interrupt any transport's blocked read
	// or write, so an expired ctx closes it.
	stop := context.AfterFunc(ctx, func() { rw.Close() })
	s, err := runHandshake(rw, self, verify)
	if !stop() {
		// ctx fired: whatever the exchange returned, rw is closed.
		return nil, fmt.Errorf("link: handshake: %w", context.Cause(ctx))
	}
	return s, err
}

func runHandshake(rw io.ReadWriteCloser, self Identity, verify Verify) (*Stream, error) {
	selfID := self.ID()
	var nonce [nonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	mine := appendHello(nil, nonce, selfID, self.Cert)
	br := bufio.NewReaderSize(rw, 64<<10) // kept by the Stream: frames may follow the signature at once

	// Both ends write first, so the writes run beside the reads: over an
	// unbuffered transport (net.Pipe, a full socket buffer) two ends that
	// both wrote before reading would deadlock.
	theirs, err := exchange(rw, mine, func() ([]byte, error) { return readHello(br) })
	if err != nil {
		return nil, err
	}
	h, err := parseHello(theirs)
	if err != nil {
		return nil, err
	}
	if h.ID == selfID {
		return nil, ErrSelfLink
	}
	if h.Nonce == nonce {
		return nil, errors.New("link: handshake: peer echoed our nonce")
	}
	myRole, peerRole := byte('A'), byte('B')
	if bytes.Compare(nonce[:], h.Nonce[:]) > 0 {
		myRole, peerRole = peerRole, myRole
	}
	sig := ed25519.Sign(self.Sign, transcript(myRole, mine, theirs))
	peerSig, err := exchange(rw, sig, func() ([]byte, error) {
		b := make([]byte, ed25519.SignatureSize)
		_, err := io.ReadFull(br, b)
		return b, err
	})
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(h.ID.PublicKey(), transcript(peerRole, mine, theirs), peerSig) {
		return nil, ErrBadSignature
	}
	if err := verify(h.ID, h.Cert); err != nil {
		return nil, fmt.Errorf("link: peer %v refused: %w", h.ID, err)
	}
	return &Stream{
		rwc:      rw,
		peer:     h.ID,
		peerCert: h.Cert,
		br:       br,
		bw:       bufio.NewWriterSize(rw, 64<<10),
		done:     make(chan struct{}),
	}, nil
}

// exchange writes out while read runs, and returns what read returned. The
// writer goroutine is always waited for; a failed read closes nothing (the
// caller's error path closes rw, which ends a blocked write).
func exchange(w io.WriteCloser, out []byte, read func() ([]byte, error)) ([]byte, error) {
	werr := make(chan error, 1)
	go func() {
		_, err := w.Write(out)
		werr <- err
	}()
	in, rerr := read()
	if rerr != nil {
		w.Close() // unblock the writer if the peer stopped reading
		<-werr
		return nil, fmt.Errorf("link: handshake: reading from peer: %w", eofIsUnexpected(rerr))
	}
	if err := <-werr; err != nil {
		return nil, fmt.Errorf("link: handshake: writing to peer: %w", err)
	}
	return in, nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func transcript(role byte, a, b []byte) []byte {
	if bytes.Compare(a[4:4+nonceLen], b[4:4+nonceLen]) > 0 {
		a, b = b, a
	}
	t := make([]byte, 0, len(transcriptCtx)+1+len(a)+len(b))
	t = append(t, transcriptCtx...)
	t = append(t, role)
	t = append(t, a...)
	return append(t, b...)
}

// hello is a decoded handshake hello.
type hello struct {
	Nonce [nonceLen]byte
	ID    wire.NodeID
	Cert  []byte
}

func appendHello(b []byte, nonce [nonceLen]byte, id wire.NodeID, cert []byte) []byte {
	w := wire.Writer{B: b}
	w.Raw([]byte(helloMagic))
	w.Raw(nonce[:])
	w.Raw(id[:])
	w.Bytes16(cert)
	return w.B
}

// readHello reads exactly one hello's bytes, refusing a wrong magic or an
// oversize certificate before reading further.
func readHello(r io.Reader) ([]byte, error) {
	b := make([]byte, helloFixedLen, maxHelloLen)
	if _, err := io.ReadFull(r, b[:len(helloMagic)]); err != nil {
		return nil, err
	}
	if string(b[:len(helloMagic)]) != helloMagic {
		return nil, ErrBadMagic
	}
	if _, err := io.ReadFull(r, b[len(helloMagic):]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(b[helloFixedLen-2:]))
	if n > MaxCertLen {
		return nil, fmt.Errorf("link: peer's certificate is %d bytes, over %d: %w", n, MaxCertLen, wire.ErrTooLong)
	}
	b = b[:helloFixedLen+n]
	if _, err := io.ReadFull(r, b[helloFixedLen:]); err != nil {
		return nil, err
	}
	return b, nil
}

// parseHello decodes a hello as it travels. The Cert of the result aliases b.
func parseHello(b []byte) (hello, error) {
	var h hello
	if len(b) < 4 || string(b[:4]) != helloMagic {
		return h, ErrBadMagic
	}
	r := wire.Reader{B: b[4:]}
	r.Fixed(h.Nonce[:])
	r.Fixed(h.ID[:])
	h.Cert = r.Bytes16(MaxCertLen)
	if err := r.Done(); err != nil {
		return hello{}, fmt.Errorf("link: bad hello: %w", err)
	}
	if h.Cert == nil {
		h.Cert = []byte{}
	}
	return h, nil
}

// Peer returns the node at the other end.
func (s *Stream) Peer() wire.NodeID { return s.peer }

// PeerCert returns the certificate the peer presented (and Verify accepted).
func (s *Stream) PeerCert() []byte { return s.peerCert }

// WriteDatagrams frames each buffer and writes them all with one flush. It
// is safe for concurrent use; a batch is never interleaved with another. It
// blocks while the transport does (Close unblocks it). After a transport
// error the stream is broken and every later call fails.
func (s *Stream) WriteDatagrams(bufs [][]byte) error {
	for _, b := range bufs {
		if len(b) > MaxDatagram {
			return ErrDatagramSize
		}
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var n uint64
	for _, b := range bufs {
		binary.BigEndian.PutUint16(s.hdr[:], uint16(len(b)))
		s.bw.Write(s.hdr[:])
		s.bw.Write(b) // errors stick in bw; Flush reports them
		n += uint64(len(b))
	}
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("link: write to %v: %w", s.peer, err)
	}
	s.datagramsOut.Add(uint64(len(bufs)))
	s.bytesOut.Add(n)
	return nil
}

// ReadDatagram reads one datagram into buf and returns its length. A
// datagram longer than buf is skipped and ErrFrameTooLarge returned; the
// stream stays usable. Any other error ends the stream (io.EOF when the peer
// closed it cleanly between frames). Only one goroutine may read.
func (s *Stream) ReadDatagram(buf []byte) (int, error) {
	return readFrame(s.br, buf, s)
}

// ReadFrame reads one frame (see Frames) from br into buf, for exchanges on
// a link port that are not a Stream (a joiner's, which has no certificate
// to handshake with). Errors are as ReadDatagram's.
func ReadFrame(br *bufio.Reader, buf []byte) (int, error) { return readFrame(br, buf, nil) }

// AppendFrame appends d framed (see Frames) to b; d is at most MaxDatagram.
func AppendFrame(b, d []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(d)))
	return append(b, d...)
}

func readFrame(br *bufio.Reader, buf []byte, s *Stream) (int, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0, err // io.EOF between frames is a clean end
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n > len(buf) {
		if _, err := br.Discard(n); err != nil {
			return 0, eofIsUnexpected(err)
		}
		return 0, ErrFrameTooLarge
	}
	if _, err := io.ReadFull(br, buf[:n]); err != nil {
		return 0, eofIsUnexpected(err)
	}
	if s != nil {
		s.datagramsIn.Add(1)
		s.bytesIn.Add(uint64(n))
	}
	return n, nil
}

// Close closes the transport (and, for DialCommand, kills and waits for the
// command). It returns the first close's error on every call.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		defer close(s.done)
		s.closeErr = s.rwc.Close()
		if s.onClose != nil {
			if err := s.onClose(); s.closeErr == nil {
				s.closeErr = err
			}
		}
	})
	return s.closeErr
}

// Done is closed once the stream is closed (by either side's Close; a
// reader that gets an error should Close the stream).
func (s *Stream) Done() <-chan struct{} { return s.done }

// Stats returns the stream's counters.
func (s *Stream) Stats() StreamStats {
	return StreamStats{
		DatagramsIn:  s.datagramsIn.Load(),
		DatagramsOut: s.datagramsOut.Load(),
		BytesIn:      s.bytesIn.Load(),
		BytesOut:     s.bytesOut.Load(),
	}
}
