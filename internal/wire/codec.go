package wire

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// ErrShort is returned by Reader when the input ends before a field does.
var ErrShort = errors.New("wire: truncated input")

// ErrTooLong is returned for a length prefix over the field's limit.
var ErrTooLong = errors.New("wire: field too long")

// Writer appends fixed-layout fields to a byte slice. The zero value is ready.
type Writer struct{ B []byte }

func (w *Writer) U8(v uint8)       { w.B = append(w.B, v) }
func (w *Writer) U16(v uint16)     { w.B = binary.BigEndian.AppendUint16(w.B, v) }
func (w *Writer) U64(v uint64)     { w.B = binary.BigEndian.AppendUint64(w.B, v) }
func (w *Writer) I64(v int64)      { w.U64(uint64(v)) }
func (w *Writer) Raw(b []byte)     { w.B = append(w.B, b...) }
func (w *Writer) Bytes16(b []byte) { w.U16(uint16(len(b))); w.Raw(b) }

// Str writes a string of at most 255 bytes with a one-byte length.
func (w *Writer) Str(s string) {
	if len(s) > 255 {
		s = s[:255]
	}
	w.U8(uint8(len(s)))
	w.B = append(w.B, s...)
}

// AddrPort writes an address family byte (4, 6, or 0 for invalid), the address and the port.
func (w *Writer) AddrPort(ap netip.AddrPort) {
	a := ap.Addr()
	switch {
	case a.Is4():
		w.U8(4)
		b := a.As4()
		w.Raw(b[:])
	case a.IsValid():
		w.U8(6)
		b := a.As16()
		w.Raw(b[:])
	default:
		w.U8(0)
	}
	w.U16(ap.Port())
}

// Reader consumes fields from a byte slice; the first error sticks and every
// later read returns zero values, so decoders check Err once at the end.
type Reader struct {
	B   []byte
	Err error
}

func (r *Reader) take(n int) []byte {
	if r.Err != nil {
		return nil
	}
	if n < 0 || len(r.B) < n {
		r.Err = ErrShort
		r.B = nil
		return nil
	}
	b := r.B[:n:n]
	r.B = r.B[n:]
	return b
}

func (r *Reader) U8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *Reader) U16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *Reader) U64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *Reader) I64() int64 { return int64(r.U64()) }

// Raw returns the next n bytes (aliasing the input).
func (r *Reader) Raw(n int) []byte { return r.take(n) }

// Fixed copies len(dst) bytes into dst.
func (r *Reader) Fixed(dst []byte) {
	if b := r.take(len(dst)); b != nil {
		copy(dst, b)
	}
}

// Bytes16 reads a two-byte length and that many bytes, at most max.
func (r *Reader) Bytes16(max int) []byte {
	n := int(r.U16())
	if r.Err == nil && n > max {
		r.Err = ErrTooLong
		return nil
	}
	return r.take(n)
}

// Str reads a one-byte length and that many bytes, at most max.
func (r *Reader) Str(max int) string {
	n := int(r.U8())
	if r.Err == nil && n > max {
		r.Err = ErrTooLong
		return ""
	}
	return string(r.take(n))
}

// AddrPort reads what Writer.AddrPort wrote.
func (r *Reader) AddrPort() netip.AddrPort {
	var a netip.Addr
	switch fam := r.U8(); fam {
	case 0:
	case 4:
		var b [4]byte
		r.Fixed(b[:])
		a = netip.AddrFrom4(b)
	case 6:
		var b [16]byte
		r.Fixed(b[:])
		a = netip.AddrFrom16(b).Unmap()
	default:
		if r.Err == nil {
			r.Err = errors.New("wire: bad address family")
		}
	}
	return netip.AddrPortFrom(a, r.U16())
}

// Done returns Err, or an error if bytes are left over.
func (r *Reader) Done() error {
	if r.Err == nil && len(r.B) != 0 {
		r.Err = errors.New("wire: trailing bytes")
	}
	return r.Err
}
