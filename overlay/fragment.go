package overlay

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"glow/internal/wire"
	"glow/overlay/member"
)

// Records larger than one control packet (user documents reach 64 KiB:
// a policy, a long list of removed nodes) travel in fragments. Each
// fragment is a sealed control message of its own, so it fits a
// minimum-MTU datagram, directly or inside a relay frame:
//
//	flood:   pushRecordMsgsLocked ─ fits one packet? ─► records message
//	                               └─ too big ─► announced: a digest of its one entry
//	         handleDigestLocked (the neighbour) ─ newer, and not coming already
//	                               from another neighbour (wantNow) ─► want
//	send:    sendRecordMsgsLocked (answer to a want) ─ fits? ─► records message
//	                               └─ too big ─► out queue of the peer (one entry per record slot)
//	         paceFragmentsLocked (every tick) ─► at most fragBurst fragments per peer
//	receive: handleFragmentLocked ─ stale version? drop
//	         ─► fragments.add: the assembly of (sender, slot, version, hash), bounded
//	         ─► complete and hash matches ─► handleRecordsLocked, as any record
//
// A fragment (after the message type byte):
//
//	kind (1) | node (32) | version (8) | total length (4) | SHA-256 of the record (32) | offset (4) | bytes
//
// Only authenticated peers' fragments are taken (control packets from
// unknown keys never open). Memory is bounded: at most fragPerPeer
// assemblies per sender, fragMaxAssemblies and fragMaxBytes in all, each at
// most maxFragRecord long, dropped fragTimeout after their last fragment.
// The only CPU a fragment costs is a copy; a complete record is hashed
// once and its signature checked as any record is. A lost fragment is not
// asked for: the next digest still shows the version missing, the want
// brings the whole record again, and its fragments fill the gaps of the
// assembly still held. Drops are counted in the status (frag-*).

const (
	fragHeaderLen = 1 + 32 + 8 + 4 + sha256.Size + 4
	fragData      = maxCtlBody - fragHeaderLen // record bytes per fragment

	maxFragRecord     = member.MaxDocRaw // the largest record that travels
	fragPerPeer       = 4                // assemblies one sender may have open
	fragMaxAssemblies = 64
	fragMaxBytes      = 1 << 20
	fragTimeout       = 10 * time.Second

	// fragBurst fragments per peer per tickEvery (250 ms): 80 a second,
	// about 85 KB/s, a 64 KiB document in under a second. That stays under
	// the receiver's limit for datagrams it cannot yet tie to a path
	// (unauthRate, ctlqueue.go), far under relays' per-source limits, and
	// within a stream link's control queue.
	fragBurst  = 20
	fragQueued = 8 // records waiting to go to one peer
	// fragStall: a record asked for, or an assembly that made progress,
	// this recently is coming; other neighbours are not asked for it.
	fragStall = 2 * time.Second
)

// fragMsg is one fragment of a record.
type fragMsg struct {
	Key     member.RecordKey
	Version uint64
	Total   int
	Sum     [sha256.Size]byte
	Off     int
	Data    []byte
}

func (f fragMsg) marshal() []byte {
	w := wire.Writer{B: make([]byte, 0, 1+fragHeaderLen+len(f.Data))}
	w.U8(uint8(msgRecordFrag))
	w.U8(uint8(f.Key.Kind))
	w.Raw(f.Key.Node[:])
	w.U64(f.Version)
	w.B = binary.BigEndian.AppendUint32(w.B, uint32(f.Total))
	w.Raw(f.Sum[:])
	w.B = binary.BigEndian.AppendUint32(w.B, uint32(f.Off))
	w.Raw(f.Data)
	return w.B
}

var errFragment = errors.New("bad fragment")

// parseFragment reads a fragment's body (after the type byte); the data
// is the rest of the message.
func parseFragment(r *wire.Reader) (fragMsg, error) {
	var f fragMsg
	f.Key.Kind = member.RecordKind(r.U8())
	r.Fixed(f.Key.Node[:])
	f.Version = r.U64()
	total := r.Raw(4)
	r.Fixed(f.Sum[:])
	off := r.Raw(4)
	if r.Err != nil {
		return f, fmt.Errorf("fragment: %w", r.Err)
	}
	f.Total = int(binary.BigEndian.Uint32(total))
	f.Off = int(binary.BigEndian.Uint32(off))
	f.Data = r.Raw(len(r.B))
	switch {
	case f.Total == 0 || f.Total > maxFragRecord:
		return f, fmt.Errorf("%w: record of %d bytes", errFragment, f.Total)
	case len(f.Data) == 0 || f.Off > f.Total || len(f.Data) > f.Total-f.Off:
		return f, fmt.Errorf("%w: %d bytes at %d of %d", errFragment, len(f.Data), f.Off, f.Total)
	}
	return f, nil
}

// peekDocSlot returns the slot and version a user document's encoding
// names, unverified.
func peekDocSlot(kind member.RecordKind, raw []byte) (member.RecordKey, uint64, bool) {
	if !member.IsUserDocKind(kind) || len(raw) < 2+32+8 {
		return member.RecordKey{}, 0, false
	}
	k := member.RecordKey{Kind: kind}
	copy(k.Node[:], raw[2:])
	return k, member.DocRank(raw), true // as Store.Version ranks documents
}

// fragments is the node's state of records in pieces; guarded by Node.mu.
type fragments struct {
	in    map[fragKey]*assembly
	bytes int // held by in
	out   map[wire.NodeID]*fragQueue
	// asked: when a possibly large record (a user document) was last asked
	// for, and which version; one entry per slot, dropped after fragStall.
	asked map[member.RecordKey]askedAt
	sent  uint64 // fragments sent, for tests
}

type askedAt struct {
	version uint64
	at      time.Time
}

type fragKey struct {
	from    wire.NodeID
	key     member.RecordKey
	version uint64
	sum     [sha256.Size]byte
}

type assembly struct {
	buf  []byte
	have []uint64 // which bytes of buf arrived, a bit each
	got  int
	last time.Time
}

// add takes one fragment from a sender. It returns the record once every
// byte arrived and the whole matches its hash, or the reason the fragment
// (or the assembly it completed) was dropped, or neither.
func (fs *fragments) add(from wire.NodeID, f fragMsg, now time.Time) (raw []byte, drop string) {
	if fs.in == nil {
		fs.in = map[fragKey]*assembly{}
	}
	k := fragKey{from, f.Key, f.Version, f.Sum}
	a := fs.in[k]
	if a == nil {
		var mine []fragKey
		for ok := range fs.in {
			if ok.from == from {
				mine = append(mine, ok)
			}
		}
		if len(mine) >= fragPerPeer {
			// The sender moved on (a newer version): its oldest goes.
			oldest := slices.MinFunc(mine, func(x, y fragKey) int { return fs.in[x].last.Compare(fs.in[y].last) })
			fs.remove(oldest)
			drop = "frag-evicted"
		}
		if len(fs.in) >= fragMaxAssemblies || fs.bytes+f.Total > fragMaxBytes {
			return nil, "frag-no-room"
		}
		a = &assembly{buf: make([]byte, f.Total), have: make([]uint64, (f.Total+63)/64)}
		fs.in[k] = a
		fs.bytes += f.Total
	}
	if len(a.buf) != f.Total {
		return nil, "frag-malformed"
	}
	a.last = now
	copy(a.buf[f.Off:], f.Data)
	for i := f.Off; i < f.Off+len(f.Data); i++ {
		if a.have[i/64]&(1<<(i%64)) == 0 {
			a.have[i/64] |= 1 << (i % 64)
			a.got++
		}
	}
	if a.got < len(a.buf) {
		return nil, drop
	}
	fs.remove(k)
	if sha256.Sum256(a.buf) != f.Sum {
		return nil, "frag-hash"
	}
	return a.buf, drop
}

// wantNow says whether to ask a neighbour for version of the record at key
// now, and notes it when so. A user document (which may be large) asked
// for less than fragStall ago, or arriving in fragments that recently made
// progress, is not asked for again: it comes already. Other records are
// small and always asked for.
func (fs *fragments) wantNow(key member.RecordKey, version uint64, now time.Time) bool {
	if !member.IsUserDocKind(key.Kind) {
		return true
	}
	if a, ok := fs.asked[key]; ok && a.version >= version && now.Sub(a.at) < fragStall {
		return false
	}
	for k, a := range fs.in {
		if k.key == key && k.version >= version && now.Sub(a.last) < fragStall {
			return false
		}
	}
	if fs.asked == nil {
		fs.asked = map[member.RecordKey]askedAt{}
	}
	fs.asked[key] = askedAt{version, now}
	return true
}

func (fs *fragments) remove(k fragKey) {
	if a := fs.in[k]; a != nil {
		fs.bytes -= len(a.buf)
		delete(fs.in, k)
	}
}

// expire drops assemblies that got no fragment for fragTimeout.
func (fs *fragments) expire(now time.Time) (n int) {
	for k, a := range fs.in {
		if now.Sub(a.last) > fragTimeout {
			fs.remove(k)
			n++
		}
	}
	return n
}

// handleFragmentLocked takes a fragment from an authenticated peer.
func (n *Node) handleFragmentLocked(p *peer, f fragMsg, now time.Time) {
	if f.Version <= n.mem.store.Version(f.Key) {
		n.dropCtl["frag-stale"]++ // held already (it came by another neighbour)
		return
	}
	raw, drop := n.mem.frags.add(p.cert.Node, f, now)
	if drop != "" {
		n.dropCtl[drop]++
	}
	if raw != nil {
		n.handleRecordsLocked(p, []recordMsg{{f.Key.Kind, raw}}, now)
	}
}

// fragQueue is what one peer has yet to receive in fragments.
type fragQueue struct {
	recs   []*fragOut
	budget int // fragments it may still send this tick
}

type fragOut struct {
	key     member.RecordKey
	version uint64
	sum     [sha256.Size]byte
	raw     []byte // shared with the store: never written
	to      netip.AddrPort
	off     int
}

// fitsOnePacket says whether a record travels in a records message.
func fitsOnePacket(r recordMsg) bool { return len(r.Raw)+3 <= maxCtlBody-2 }

// pushRecordMsgsLocked pushes new records to p: those that fit a packet
// in records messages, larger ones announced by a digest (p asks for them
// unless they come to it already).
func (n *Node) pushRecordMsgsLocked(p *peer, to netip.AddrPort, recs []recordMsg) {
	small := recs[:0:0]
	var announce []member.DigestEntry
	for _, r := range recs {
		if fitsOnePacket(r) {
			small = append(small, r)
		} else if key, version, ok := peekDocSlot(r.Kind, r.Raw); ok {
			announce = append(announce, member.DigestEntry{RecordKey: key, Version: version})
		} else {
			n.dropCtl["record-too-big"]++
		}
	}
	for _, m := range marshalRecords(small) {
		n.sendCtlLocked(p, to, m)
	}
	if len(announce) > 0 {
		for _, m := range marshalDigests(announce) {
			n.sendCtlLocked(p, to, m)
		}
	}
}

// sendRecordMsgsLocked sends records to p: those that fit a packet packed
// into records messages at once, larger ones in fragments, paced.
func (n *Node) sendRecordMsgsLocked(p *peer, to netip.AddrPort, recs []recordMsg) {
	small := recs[:0:0]
	for _, r := range recs {
		if fitsOnePacket(r) {
			small = append(small, r)
		} else {
			n.queueFragmentsLocked(p, to, r)
		}
	}
	for _, m := range marshalRecords(small) {
		n.sendCtlLocked(p, to, m)
	}
}

// queueFragmentsLocked queues a large record for p and sends what this
// tick's budget allows. A newer record for the same slot replaces one
// still queued; the same record again is left where it is.
func (n *Node) queueFragmentsLocked(p *peer, to netip.AddrPort, r recordMsg) {
	key, version, ok := peekDocSlot(r.Kind, r.Raw)
	if !ok || len(r.Raw) > maxFragRecord {
		n.dropCtl["record-too-big"]++
		return
	}
	if n.mem.frags.out == nil {
		n.mem.frags.out = map[wire.NodeID]*fragQueue{}
	}
	q := n.mem.frags.out[p.cert.Node]
	if q == nil {
		q = &fragQueue{budget: fragBurst}
		n.mem.frags.out[p.cert.Node] = q
	}
	o := &fragOut{key: key, version: version, sum: sha256.Sum256(r.Raw), raw: r.Raw, to: to}
	i := slices.IndexFunc(q.recs, func(x *fragOut) bool { return x.key == key })
	switch {
	case i >= 0 && q.recs[i].sum == o.sum:
		q.recs[i].to = to
	case i >= 0:
		q.recs[i] = o
	case len(q.recs) >= fragQueued:
		n.dropCtl["frag-queue-full"]++ // anti-entropy asks again
		return
	default:
		q.recs = append(q.recs, o)
	}
	n.sendFragmentsLocked(p, q)
	if len(q.recs) > 0 {
		n.dueLocked(time.Now()) // the rest goes paced
	}
}

// sendFragmentsLocked sends p's queued fragments within the budget.
func (n *Node) sendFragmentsLocked(p *peer, q *fragQueue) {
	for q.budget > 0 && len(q.recs) > 0 {
		o := q.recs[0]
		end := min(o.off+fragData, len(o.raw))
		f := fragMsg{Key: o.key, Version: o.version, Total: len(o.raw), Sum: o.sum, Off: o.off, Data: o.raw[o.off:end]}
		n.sendCtlLocked(p, o.to, f.marshal())
		n.mem.frags.sent++
		q.budget--
		if o.off = end; o.off == len(o.raw) {
			q.recs = q.recs[1:]
		}
	}
}

// paceFragmentsLocked runs every tickEvery while fragments are queued or
// assemblies held: it refills each peer's budget, sends what it allows, and
// drops assemblies that timed out.
func (n *Node) paceFragmentsLocked(now time.Time) {
	for id, q := range n.mem.frags.out {
		p := n.paths.peers[id]
		if p == nil {
			delete(n.mem.frags.out, id)
			continue
		}
		q.budget = fragBurst
		n.sendFragmentsLocked(p, q)
	}
	if k := n.mem.frags.expire(now); k > 0 {
		n.dropCtl["frag-timeout"] += uint64(k)
	}
	for k, a := range n.mem.frags.asked {
		if now.Sub(a.at) >= fragStall {
			delete(n.mem.frags.asked, k)
		}
	}
}

// fragmentsDueLocked notes when paceFragmentsLocked, last run at last, is
// due again: tickEvery after it while a queue holds fragments, else when
// the first assembly times out.
func (n *Node) fragmentsDueLocked(last time.Time) {
	for _, q := range n.mem.frags.out {
		if len(q.recs) > 0 {
			n.dueLocked(last.Add(tickEvery))
			return
		}
	}
	for _, a := range n.mem.frags.in {
		n.dueLocked(a.last.Add(fragTimeout + time.Millisecond))
	}
}
