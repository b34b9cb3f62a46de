package overlay

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/salsa20/salsa"

	"glow/internal/wire"
	"glow/overlay/member"
)

// Control packets travel on the shared UDP socket (or inside relay frames):
//
//	"GLC" 1 | sender control key (32) | nonce (24) | NaCl box of the message
//
// The box is sealed from the sender's control key to the receiver's, so it
// is secret and authenticated; the receiver finds the sender by its key.
// The nonce is an epoch and a sequence number that make the packet fresh
// exactly once (replay.go). A message is one type byte and a body.

const (
	ctlOverhead = wire.HeaderLen + 32 + 24 + box.Overhead
	ctlNonceAt  = wire.HeaderLen + 32
	// maxCtlPacket keeps control packets within a minimum-MTU datagram.
	maxCtlPacket = 1232
	maxCtlBody   = maxCtlPacket - ctlOverhead - 1
)

type msgType uint8

const (
	msgPing     msgType = 1
	msgPong     msgType = 2
	msgDigest   msgType = 3
	msgWant     msgType = 4
	msgRecords  msgType = 5
	msgJoinReq  msgType = 6
	msgJoinResp msgType = 7
	// msgFriendReq, msgFriendResp: 8, 9 (friends.go)
	msgRecordFrag msgType = 10 // fragment.go
	msgSummary    msgType = 11 // a digest in member.SummaryBuckets sums (gossip.go)
	// msgJoinFwd, msgJoinBack: 20, 21 (joinrelay.go)
)

var errNotControl = errors.New("not a control packet")

// sealCtl builds a handshake packet (join, friend, renewal: no peer state
// yet) of message m from pubKey to the key shared holds, sequence 0. Its
// epoch is the wall clock as it is now, not newEpoch's: the receiver takes
// a handshake only within member.ClockSkew of its own clock
// (handshakeNonces.fresh), and a process whose clock once ran ahead (and
// was stepped back) would otherwise stamp every request with that future
// until real time caught up. The nonce's random tail keeps two requests in
// the same nanosecond apart.
func sealCtl(dst []byte, pubKey wire.Key, shared *[32]byte, m []byte) []byte {
	return sealCtlSeq(dst, pubKey, shared, m, uint64(time.Now().UnixNano()), 0)
}

// sealCtlSeq builds a control packet of message m from pubKey to the key
// shared holds, numbered seq in the sender's epoch for that peer.
func sealCtlSeq(dst []byte, pubKey wire.Key, shared *[32]byte, m []byte, epoch, seq uint64) []byte {
	h := wire.Header(wire.KindControl)
	dst = append(dst, h[:]...)
	dst = append(dst, pubKey[:]...)
	var nonce [24]byte
	binary.BigEndian.PutUint64(nonce[:], epoch)
	binary.BigEndian.PutUint64(nonce[8:], seq)
	rand.Read(nonce[16:])
	dst = append(dst, nonce[:]...)
	return box.SealAfterPrecomputation(dst, m, &nonce, shared)
}

// ctlSender returns the sender key of a control packet without opening it.
func ctlSender(pkt []byte) (wire.Key, error) {
	var k wire.Key
	if len(pkt) < ctlOverhead || wire.Classify(pkt) != wire.KindControl {
		return k, errNotControl
	}
	copy(k[:], pkt[wire.HeaderLen:])
	return k, nil
}

// openCtl opens a control packet with the precomputed key shared with its sender.
func openCtl(pkt []byte, shared *[32]byte) ([]byte, error) {
	if len(pkt) < ctlOverhead {
		return nil, errNotControl
	}
	var nonce [24]byte
	copy(nonce[:], pkt[wire.HeaderLen+32:])
	m, ok := box.OpenAfterPrecomputation(nil, pkt[wire.HeaderLen+32+24:], &nonce, shared)
	if !ok || len(m) == 0 {
		return nil, errors.New("control packet does not open")
	}
	return m, nil
}

func sharedKey(priv [32]byte, peer wire.Key) *[32]byte {
	var s [32]byte
	box.Precompute(&s, (*[32]byte)(&peer), &priv)
	return &s
}

// peerSharedKey is sharedKey(n.keys.Ctl, peer) with our key parsed once:
// box.Precompute parses it anew each time, which derives its public half,
// a second X25519 per peer (a tenth of a 1,000-node cold start's CPU).
func (n *Node) peerSharedKey(peer wire.Key) *[32]byte {
	if n.ctlECDH == nil {
		return sharedKey(n.keys.Ctl, peer)
	}
	var s [32]byte
	if pub, err := ecdh.X25519().NewPublicKey(peer[:]); err == nil {
		if z, err := n.ctlECDH.ECDH(pub); err == nil { // fails only on a low-order point: zeros, as box's
			copy(s[:], z)
		}
	}
	var zeros [16]byte
	salsa.HSalsa20(&s, &zeros, &s, &salsa.Sigma) // as box.Precompute
	return &s
}

// Messages, decoded.

type pingMsg struct {
	TxID [12]byte
	Boot [8]byte // random per daemon start: tells a restart apart
}

type pongMsg struct {
	TxID [12]byte
	Seen netip.AddrPort // the ping's source as the responder saw it
}

type joinReq struct {
	CodeID [16]byte
	Nonce  [16]byte
	Proof  [32]byte
	Node   wire.NodeID
	WG     wire.Key
	Name   string
	Sig    [64]byte // by the node key Node names (see joinSigned); absent from old joiners
}

type joinResp struct {
	OK   bool
	Err  string
	Cert []byte
}

type recordMsg struct {
	Kind member.RecordKind
	Raw  []byte
}

func (m pingMsg) marshal() []byte {
	b := append([]byte{byte(msgPing)}, m.TxID[:]...)
	return append(b, m.Boot[:]...)
}

func (m pongMsg) marshal() []byte {
	w := wire.Writer{B: []byte{byte(msgPong)}}
	w.Raw(m.TxID[:])
	w.AddrPort(m.Seen)
	return w.B
}

func (m joinReq) marshal() []byte {
	w := wire.Writer{B: []byte{byte(msgJoinReq)}}
	w.Raw(m.CodeID[:])
	w.Raw(m.Nonce[:])
	w.Raw(m.Proof[:])
	w.Raw(m.Node[:])
	w.Raw(m.WG[:])
	w.Str(m.Name)
	w.Raw(m.Sig[:])
	return w.B
}

func (m joinResp) marshal() []byte {
	w := wire.Writer{B: []byte{byte(msgJoinResp)}}
	if m.OK {
		w.U8(1)
	} else {
		w.U8(0)
	}
	w.Str(m.Err)
	w.Bytes16(m.Cert)
	return w.B
}

// marshalDigests splits a digest into messages that each fit a packet.
func marshalDigests(d []member.DigestEntry) [][]byte {
	const per = (maxCtlBody - 2) / (1 + 32 + 8)
	var out [][]byte
	for len(d) > 0 || out == nil {
		n := min(len(d), per)
		w := wire.Writer{B: []byte{byte(msgDigest)}}
		w.U16(uint16(n))
		for _, e := range d[:n] {
			w.U8(uint8(e.Kind))
			w.Raw(e.Node[:])
			w.U64(e.Version)
		}
		out = append(out, w.B)
		d = d[n:]
	}
	return out
}

// marshalSummary encodes a digest summary: the number of ranges, then
// each range's sum.
func marshalSummary(s member.Summary) []byte {
	w := wire.Writer{B: []byte{byte(msgSummary)}}
	w.U8(member.SummaryBuckets)
	for _, v := range s {
		w.U64(v)
	}
	return w.B
}

func marshalWants(keys []member.RecordKey) [][]byte {
	const per = (maxCtlBody - 2) / (1 + 32)
	var out [][]byte
	for len(keys) > 0 {
		n := min(len(keys), per)
		w := wire.Writer{B: []byte{byte(msgWant)}}
		w.U16(uint16(n))
		for _, k := range keys[:n] {
			w.U8(uint8(k.Kind))
			w.Raw(k.Node[:])
		}
		out = append(out, w.B)
		keys = keys[n:]
	}
	return out
}

// marshalRecords packs records into as few messages as fit a packet each.
func marshalRecords(recs []recordMsg) [][]byte {
	var out [][]byte
	w := wire.Writer{}
	n := 0
	flush := func() {
		if n > 0 {
			w.B[1] = byte(n)
			out = append(out, w.B)
		}
		w, n = wire.Writer{}, 0
	}
	for _, r := range recs {
		if !fitsOnePacket(r) {
			continue // travels in fragments (fragment.go)
		}
		if n == 255 || len(w.B)+3+len(r.Raw) > maxCtlBody {
			flush()
		}
		if n == 0 {
			w.B = []byte{byte(msgRecords), 0}
		}
		w.U8(uint8(r.Kind))
		w.Bytes16(r.Raw)
		n++
	}
	flush()
	return out
}

// parseCtl decodes one control message. It returns one of pingMsg, pongMsg,
// []DigestEntry, Summary, []RecordKey, []recordMsg, fragMsg, joinReq or joinResp.
func parseCtl(m []byte) (any, error) {
	if len(m) == 0 {
		return nil, errors.New("empty control message")
	}
	r := wire.Reader{B: m[1:]}
	var out any
	switch msgType(m[0]) {
	case msgPing:
		var p pingMsg
		r.Fixed(p.TxID[:])
		r.Fixed(p.Boot[:])
		out = p
	case msgPong:
		var p pongMsg
		r.Fixed(p.TxID[:])
		p.Seen = r.AddrPort()
		out = p
	case msgDigest:
		n := int(r.U16())
		if n*(1+32+8) > len(r.B) {
			return nil, fmt.Errorf("digest: %w", wire.ErrShort)
		}
		d := make([]member.DigestEntry, n)
		for i := range d {
			d[i].Kind = member.RecordKind(r.U8())
			r.Fixed(d[i].Node[:])
			d[i].Version = r.U64()
		}
		out = d
	case msgSummary:
		if n := int(r.U8()); n != member.SummaryBuckets {
			return nil, fmt.Errorf("summary of %d ranges, want %d", n, member.SummaryBuckets)
		}
		var s member.Summary
		for i := range s {
			s[i] = r.U64()
		}
		out = s
	case msgWant:
		n := int(r.U16())
		if n*(1+32) > len(r.B) {
			return nil, fmt.Errorf("want: %w", wire.ErrShort)
		}
		k := make([]member.RecordKey, n)
		for i := range k {
			k[i].Kind = member.RecordKind(r.U8())
			r.Fixed(k[i].Node[:])
		}
		out = k
	case msgRecords:
		n := int(r.U8())
		recs := make([]recordMsg, 0, min(n, 64))
		for i := 0; i < n && r.Err == nil; i++ {
			k := member.RecordKind(r.U8())
			raw := r.Bytes16(maxCtlBody)
			recs = append(recs, recordMsg{k, raw})
		}
		out = recs
	case msgRecordFrag:
		f, err := parseFragment(&r)
		if err != nil {
			return nil, err
		}
		out = f
	case msgJoinReq:
		var j joinReq
		r.Fixed(j.CodeID[:])
		r.Fixed(j.Nonce[:])
		r.Fixed(j.Proof[:])
		r.Fixed(j.Node[:])
		r.Fixed(j.WG[:])
		j.Name = r.Str(63)
		if len(r.B) > 0 { // a joiner older than the signature sends none: refused with a reason
			r.Fixed(j.Sig[:])
		}
		out = j
	case msgJoinResp:
		var j joinResp
		j.OK = r.U8() == 1
		j.Err = r.Str(255)
		j.Cert = r.Bytes16(1024)
		out = j
	case msgJoinFwd, msgJoinBack:
		out = parseJoinRelay(msgType(m[0]), &r)
	case msgAdminKey, msgAdminAck:
		out = parseAdminMsg(msgType(m[0]), &r) // admins.go
	case msgRenewReq, msgRenewResp:
		out = parseRenew(msgType(m[0]), &r)
	default:
		fm, ok := parseFriendMsg(msgType(m[0]), &r)
		if !ok {
			return nil, fmt.Errorf("unknown control message type %d", m[0])
		}
		out = fm
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("control message type %d: %w", m[0], err)
	}
	return out, nil
}
