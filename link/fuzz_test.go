package link

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"glow/internal/wire"
)

// FuzzHello feeds arbitrary bytes to the hello reader and decoder: no
// panic, no read past a declared length, and what decodes re-encodes to
// the same bytes.
func FuzzHello(f *testing.F) {
	var id wire.NodeID
	id[0] = 1
	f.Add(appendHello(nil, [nonceLen]byte{2}, id, []byte("cert")))
	f.Add(appendHello(nil, [nonceLen]byte{}, id, nil))
	f.Add([]byte("GLK1"))
	f.Add([]byte("GLK2xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHello(b)
		if err == nil {
			if len(h.Cert) > MaxCertLen {
				t.Fatalf("cert of %d bytes accepted", len(h.Cert))
			}
			if got := appendHello(nil, h.Nonce, h.ID, h.Cert); !bytes.Equal(got, b) {
				t.Fatalf("re-encoded %x, want %x", got, b)
			}
		}
		r := bytes.NewReader(b)
		raw, rerr := readHello(r)
		if rerr == nil {
			if len(raw) > maxHelloLen {
				t.Fatalf("read %d bytes", len(raw))
			}
			if _, err := parseHello(raw); err != nil {
				t.Fatalf("readHello gave %x, parseHello: %v", raw, err)
			}
		}
	})
}

// FuzzFrames feeds arbitrary stream bytes to the frame reader: no panic,
// every datagram fits its buffer, and the reader ends with an error once
// the input is used up.
func FuzzFrames(f *testing.F) {
	f.Add([]byte{0, 0}, 16)
	f.Add([]byte{0, 3, 'a', 'b', 'c', 0, 1, 'x'}, 2)
	f.Add([]byte{0xff, 0xff, 1, 2, 3}, 65535)
	f.Add([]byte{0}, 1)
	f.Fuzz(func(t *testing.T, b []byte, size int) {
		size = max(0, min(size, MaxDatagram))
		buf := make([]byte, size)
		br := bufio.NewReader(bytes.NewReader(b))
		for range len(b) + 1 {
			n, err := readFrame(br, buf, nil)
			if n > len(buf) {
				t.Fatalf("n %d > buffer %d", n, len(buf))
			}
			if err == nil || errors.Is(err, ErrFrameTooLarge) {
				continue
			}
			if err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		t.Fatal("reader did not end")
	})
}
