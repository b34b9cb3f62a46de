package nat

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/pion/stun"
)

// stunHeaderLen is the fixed STUN message header: type, length, magic
// cookie, transaction ID (RFC 5389 section 6).
const stunHeaderLen = 20

// stunMagicCookie is the fixed value at bytes 4..8 of every STUN message.
const stunMagicCookie = 0x2112A442

// maxSTUNLen bounds the messages this package decodes. Binding requests and
// responses are well under 100 bytes; anything larger is not for us.
const maxSTUNLen = 1024

// IsSTUN reports whether b looks like a STUN message: the first two bits are
// zero, the magic cookie sits at byte 4, and the length field matches the
// datagram and is a multiple of 4. It never allocates and is meant for the
// receive hot path, to tell STUN from WireGuard (type 1..4 then three zero
// bytes) and glow packets ("GL", whose first byte has its top bits 01).
//
// A true result does not guarantee that the message decodes; [Respond] and
// [Client.HandleResponse] validate fully.
func IsSTUN(b []byte) bool {
	if len(b) < stunHeaderLen || len(b) > maxSTUNLen {
		return false
	}
	if b[0]&0xC0 != 0 {
		return false
	}
	// A WireGuard message whose sender index happens to equal the cookie.
	if b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
		return false
	}
	if binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return false
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	return n%4 == 0 && n == len(b)-stunHeaderLen
}

// decode parses b into m after the checks of IsSTUN and, when the message
// carries a FINGERPRINT, verifies it. m must be fresh or Reset.
func decode(b []byte, m *stun.Message) bool {
	if !IsSTUN(b) {
		return false
	}
	if err := stun.Decode(b, m); err != nil {
		return false
	}
	if m.Contains(stun.AttrFingerprint) {
		// pion checks a FINGERPRINT only in last position; RFC 5389
		// requires it to be last anyway.
		if err := stun.Fingerprint.Check(m); err != nil {
			return false
		}
	}
	return true
}

// Respond answers a STUN Binding request req that arrived from from. The
// response carries XOR-MAPPED-ADDRESS (from, as the server saw it) and a
// FINGERPRINT, and is addressed back to from. ok is false, and resp nil, for
// anything but a well-formed Binding request: the caller then drops the
// datagram. Respond never panics, whatever the bytes.
//
// Unknown attributes in the request are ignored. A request shorter than
// the response it would get is not answered (ok false), so a glow node
// never sends more bytes than it received to a source address it cannot
// verify: it is no amplifier. Glow's own requests carry a SOFTWARE
// attribute long enough for an answer about an IPv6 address.
func Respond(req []byte, from netip.AddrPort) (resp []byte, ok bool) {
	// A zone means nothing to the far side; a v4-mapped v6 address is
	// reported as the v4 address it is.
	addr := from.Addr().Unmap().WithZone("")
	if !addr.IsValid() || from.Port() == 0 {
		return nil, false
	}
	var m stun.Message
	if !decode(req, &m) {
		return nil, false
	}
	if m.Type != stun.BindingRequest {
		return nil, false
	}
	out, err := stun.Build(
		stun.BindingSuccess,
		stun.NewTransactionIDSetter(m.TransactionID),
		&stun.XORMappedAddress{IP: net.IP(addr.AsSlice()), Port: int(from.Port())},
		stun.Fingerprint,
	)
	if err != nil || len(out.Raw) > len(req) {
		return nil, false
	}
	return out.Raw, true
}

// requestSoftware pads glow's Binding requests (56 bytes) to at least the
// size of the answer about an IPv6 address (52 bytes), which is all a glow
// node answers (see Respond). SOFTWARE is comprehension-optional, so other
// servers ignore it.
const requestSoftware = "glow (reply <= request)"

// newBindingRequest returns a Binding request with a fresh random
// transaction ID, a SOFTWARE attribute that pads it, and a FINGERPRINT.
func newBindingRequest() (txID [stun.TransactionIDSize]byte, b []byte, err error) {
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewSoftware(requestSoftware), stun.Fingerprint)
	if err != nil {
		return txID, nil, err
	}
	return m.TransactionID, m.Raw, nil
}

// parseResponse decodes a Binding response. For a success it returns the
// XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from an RFC 3489 server); for an
// error response it returns isErr and the STUN error code.
func parseResponse(b []byte) (txID [stun.TransactionIDSize]byte, mapped netip.AddrPort, isErr bool, code int, ok bool) {
	var m stun.Message
	if !decode(b, &m) {
		return txID, mapped, false, 0, false
	}
	txID = m.TransactionID
	switch m.Type {
	case stun.BindingSuccess:
	case stun.BindingError:
		var ec stun.ErrorCodeAttribute
		if err := ec.GetFrom(&m); err == nil {
			code = int(ec.Code)
		}
		return txID, mapped, true, code, true
	default:
		return txID, mapped, false, 0, false
	}
	// pion reads the 4-byte family/port header before checking the value
	// length, so check it here: a short attribute must not panic.
	var ip net.IP
	var port int
	if v, err := m.Get(stun.AttrXORMappedAddress); err == nil {
		if !addrAttrLenOK(v) {
			return txID, mapped, false, 0, false
		}
		var xa stun.XORMappedAddress
		if err := xa.GetFrom(&m); err != nil {
			return txID, mapped, false, 0, false
		}
		ip, port = xa.IP, xa.Port
	} else if v, err := m.Get(stun.AttrMappedAddress); err == nil {
		if !addrAttrLenOK(v) {
			return txID, mapped, false, 0, false
		}
		var ma stun.MappedAddress
		if err := ma.GetFrom(&m); err != nil {
			return txID, mapped, false, 0, false
		}
		ip, port = ma.IP, ma.Port
	} else {
		return txID, mapped, false, 0, false
	}
	addr, aok := netip.AddrFromSlice(ip)
	if !aok || port <= 0 || port > 0xFFFF {
		return txID, mapped, false, 0, false
	}
	return txID, netip.AddrPortFrom(addr.Unmap(), uint16(port)), false, 0, true
}

// addrAttrLenOK checks the value of a (XOR-)MAPPED-ADDRESS before pion
// parses it: pion reads the 4-byte family/port header before checking the
// length, and tolerates short addresses.
func addrAttrLenOK(v []byte) bool {
	switch {
	case len(v) == 8 && v[1] == 0x01:
		return true
	case len(v) == 20 && v[1] == 0x02:
		return true
	}
	return false
}
