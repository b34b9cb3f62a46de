package overlay

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"

	"glow/overlay/member"
)

// Freshness of control packets. A sealed control packet proves who sent it,
// not when: without more, anyone who captured one could send it again, from
// any address, and make its receiver learn that address or answer there.
// So the box nonce is a counter, as WireGuard's transport nonce is:
//
//	epoch (8) | sequence (8) | random (8)
//
// The sender starts an epoch (a time-based number, strictly increasing in
// the process: its start in Unix nanoseconds) when it first talks to a
// peer, and numbers that peer's packets 1, 2, 3... within it. The receiver
// keeps, per sender, the newest epoch and a sliding window of the last
// replayBits sequence numbers (RFC 6479), and takes a packet only if its
// epoch is that one with a sequence number not seen yet and not below the
// window, or a newer epoch (the sender restarted, or forgot us and met us
// again). Memory is one fixed-size window per peer.
//
// The join and friend handshakes are not windowed (the sender has no peer
// state then): every handshake packet has an epoch of its own, the time it
// was sealed, and a request (join, friend) is taken only if that time is
// within clockSkew of ours and its nonce is not among the last
// maxHandshakeNonces taken; retries are sealed anew. (A joiner whose clock
// is more than clockSkew off the inviter's gets no answer; one that far
// behind could not use its certificate anyway.)
//
// Like WireGuard's handshake timestamp, epochs assume a clock that does not
// step back across a restart of the sender; if it does, the sender's peers
// refuse its control packets until they restart or its clock passes the
// old epoch. The window lives in memory: after the receiver restarts, packets of the sender's
// current epoch captured earlier are taken once each, until the sender's
// next packet moves the window on (in practice within a second: peers
// probe a restarted node at once).

const replayBits = 512 // sequence numbers remembered per sender

var (
	errReplay   = errors.New("control packet seen before")
	errOldEpoch = errors.New("control packet from an older epoch of its sender")
)

// lastEpoch makes epochs strictly increasing within the process.
var lastEpoch atomic.Int64

// newEpoch returns a new epoch: now in Unix nanoseconds, or one more than
// the last one handed out.
func newEpoch(now time.Time) uint64 {
	for {
		last := lastEpoch.Load()
		e := max(now.UnixNano(), last+1)
		if lastEpoch.CompareAndSwap(last, e) {
			return uint64(e)
		}
	}
}

// ctlNonce returns the epoch and sequence number of a control packet's nonce.
func ctlNonce(pkt []byte) (epoch, seq uint64) {
	if len(pkt) < ctlOverhead {
		return 0, 0
	}
	n := pkt[ctlNonceAt:]
	return binary.BigEndian.Uint64(n), binary.BigEndian.Uint64(n[8:])
}

// replayWindow is one sender's freshness state. The zero value takes any
// packet. Guarded by Node.mu (it lives in the peer).
type replayWindow struct {
	epoch uint64
	top   uint64 // highest sequence number taken in epoch
	bits  [replayBits / 64]uint64
}

// accept takes (epoch, seq) if it is fresh and remembers it; call it only
// for a packet that opened (is authentic).
func (w *replayWindow) accept(epoch, seq uint64) error {
	switch {
	case epoch < w.epoch:
		return errOldEpoch
	case epoch > w.epoch:
		*w = replayWindow{epoch: epoch}
	}
	if seq == 0 {
		return errReplay // senders count from 1
	}
	if seq > w.top {
		// Slide: clear the slots of the numbers skipped over.
		if seq-w.top >= replayBits {
			clear(w.bits[:])
		} else {
			for s := w.top + 1; s < seq; s++ {
				w.bits[(s/64)%uint64(len(w.bits))] &^= 1 << (s % 64)
			}
		}
		w.top = seq
		w.bits[(seq/64)%uint64(len(w.bits))] |= 1 << (seq % 64)
		return nil
	}
	if w.top-seq >= replayBits {
		return errReplay // below the window: too old to tell
	}
	word, bit := &w.bits[(seq/64)%uint64(len(w.bits))], uint64(1)<<(seq%64)
	if *word&bit != 0 {
		return errReplay
	}
	*word |= bit
	return nil
}

// isHandshake says whether a control message belongs to the join or friend
// handshakes, which are not windowed.
func isHandshake(msg any) bool {
	switch msg.(type) {
	case joinReq, joinResp, friendReq, friendResp, renewReq, renewResp:
		return true
	}
	return false
}

// maxHandshakeNonces bounds the handshake requests remembered: past it the
// oldest is forgotten (a request is refused by its time after clockSkew
// anyway, so only a burst of that many requests within it reopens one).
const maxHandshakeNonces = 1024

var errHandshakeTime = errors.New("handshake request sealed too long ago or ahead")

// handshakeNonces remembers the nonces of the join and friend requests
// taken lately. Guarded by Node.mu.
type handshakeNonces struct {
	seen  map[[24]byte]struct{}
	order [][24]byte // oldest first
}

// fresh takes the handshake request msg in pkt if its time is within
// clockSkew of now and its nonce is new; other messages pass.
func (h *handshakeNonces) fresh(msg any, pkt []byte, now time.Time) error {
	switch msg.(type) {
	case joinReq, friendReq, renewReq:
	default:
		return nil
	}
	epoch, _ := ctlNonce(pkt)
	if d := now.Sub(time.Unix(0, int64(epoch))); d > member.ClockSkew || d < -member.ClockSkew {
		return errHandshakeTime
	}
	k := [24]byte(pkt[ctlNonceAt:])
	if _, ok := h.seen[k]; ok {
		return errReplay
	}
	if h.seen == nil {
		h.seen = map[[24]byte]struct{}{}
	}
	if len(h.order) >= maxHandshakeNonces {
		delete(h.seen, h.order[0])
		h.order = h.order[1:]
	}
	h.seen[k] = struct{}{}
	h.order = append(h.order, k)
	return nil
}
