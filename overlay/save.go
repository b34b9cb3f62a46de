package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"glow/overlay/member"
	"glow/tun"
)

// Blocking work off Node.mu. The control loop and the API change state
// under Node.mu and do the slow part after, elsewhere:
//
//   - the records cache: the loop kicks the saver goroutine when the cache
//     is dirty; the saver snapshots under n.mu and writes (fsync) without
//     it. Kicks coalesce, so a slow disk costs one write at a time, never a
//     queue. Snapshots are numbered and orderedWriter drops one older than
//     the last written.
//   - a change of this user's documents made through the API (share,
//     unshare, policy apply, nodes remove, friends) is prepared under n.mu
//     (signed, snapshot taken), written without it, and committed under it
//     (changeDoc): the caller hears of a failed write and nothing changes.
//     saveMu, held from the snapshot to the commit, keeps two such changes
//     apart; the pending one is in every snapshot taken meanwhile.
//   - routes to friends' networks (netlink, nftables): routeFriendsLocked
//     hands the latest set to the route setter goroutine.
//   - links and bootstrap files: snapshot under n.mu, write under saveMu.
//   - the invites file when a code is issued: the code is in the table
//     under n.mu, written without it (in order, orderedWriter), and
//     withdrawn if that fails; nobody knows it before Invite returns.
//   - WireGuard peer changes (Bind.setWG, sleepWG): queued in order under
//     Bind.wgMu, applied with IpcSet by the WireGuard applier goroutine.

// kickSaver asks the saver for a records cache save.
func (n *Node) kickSaver() {
	select {
	case n.saveKick <- struct{}{}:
	default: // one is asked for already
	}
}

// saver writes the records cache when kicked, until the node stops (Close
// writes it a last time).
func (n *Node) saver() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.saveKick:
			n.saveRecords()
		}
	}
}

// saveRecords writes the records cache as the store holds it now. n.mu is
// not held.
func (n *Node) saveRecords() {
	n.mu.Lock()
	seq, data := n.recordsSnapshotLocked()
	n.mu.Unlock()
	if err := n.records.Write(n.state, "records", seq, data); err != nil {
		n.logf("glow: saving records: %v", err)
		n.mu.Lock()
		n.mem.dirty = true // again at the next kick
		n.mu.Unlock()
	}
}

// recordsSnapshotLocked numbers and marshals the records cache as it will
// be with docs, and with the document change under way (pendingDoc).
func (n *Node) recordsSnapshotLocked(docs ...*member.UserDoc) (uint64, []byte) {
	n.mem.saveSeq++
	n.mem.dirty = false
	return n.mem.saveSeq, member.MarshalRecordsCache(n.mem.store, append(docs, n.mem.pendingDoc)...)
}

// docChange is a new version of a user document, signed, with the records
// cache that holds it.
type docChange struct {
	doc  *member.UserDoc
	base []byte // the body it was built on (docmerge.go)
	seq  uint64
	data []byte
}

// prepareDocLocked signs the next version of this user's document of kind.
func (n *Node) prepareDocLocked(kind member.RecordKind, body []byte) (*docChange, error) {
	if n.mem.user == nil {
		return nil, errNotAdmin
	}
	var version uint64 = 1
	d := &member.UserDoc{Kind: kind, Body: body}
	base := emptyDocBody(kind)
	if old := n.mem.store.Doc(kind); old != nil {
		version = old.Version + 1
		d.Parent, base = member.DocHash(old.Marshal()), old.Body
	}
	d.Version = version
	if err := member.SignUserDoc(n.mem.user, d); err != nil {
		return nil, err
	}
	seq, data := n.recordsSnapshotLocked(d)
	return &docChange{doc: d, base: base, seq: seq, data: data}, nil
}

// writeDoc stores a prepared change in the records cache.
func (n *Node) writeDoc(c *docChange) error {
	if err := n.records.Write(n.state, "records", c.seq, c.data); err != nil {
		return fmt.Errorf("storing the records cache: %w", err)
	}
	return nil
}

// signDocLocked signs, stores and applies a new version of this user's
// document, all under n.mu: the control loop's change (a friend code
// redeemed), one step with the admission (see Node.mu). It changes nothing
// when the document is over MaxDocBody (*DocTooLargeError) or cannot be
// stored in the records cache: a change the user was told about must reach
// the other nodes and survive a restart.
func (n *Node) signDocLocked(kind member.RecordKind, body []byte, _ time.Time) (*member.UserDoc, error) {
	c, err := n.prepareDocLocked(kind, body)
	if err != nil {
		return nil, err
	}
	if err := n.commitDocLocked(c, n.writeDoc(c)); err != nil {
		return nil, err
	}
	return c.doc, nil
}

// changeDoc is the API's change of this user's document of kind: build,
// called under n.mu, returns the new body (nil: nothing to change); then
// first (if not nil) and the records cache write run without n.mu, and
// the change takes effect only if both succeed. built reports whether
// build succeeded (its error is returned as it is). The caller holds
// n.saveMu.
func (n *Node) changeDoc(kind member.RecordKind, build func() ([]byte, error), first func(*member.UserDoc) error) (d *member.UserDoc, built bool, err error) {
	n.mu.Lock()
	body, err := build()
	if err != nil || body == nil {
		n.mu.Unlock()
		return nil, false, err
	}
	c, err := n.prepareDocLocked(kind, body)
	if err == nil {
		n.mem.pendingDoc = c.doc
	}
	n.mu.Unlock()
	if err != nil {
		return nil, true, err
	}
	if first != nil {
		err = first(c.doc)
	}
	if err == nil {
		err = n.writeDoc(c)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mem.pendingDoc = nil
	if err := n.commitDocLocked(c, err); err != nil {
		return nil, true, err
	}
	return c.doc, true, nil
}

// commitDocLocked applies a change once stored (err == nil), or drops it.
func (n *Node) commitDocLocked(c *docChange, err error) error {
	if err == nil {
		_, err = n.mem.store.AddDoc(c.doc) // fails if the loop changed the document meanwhile
	}
	if err != nil {
		n.mem.dirty = true // a snapshot taken meanwhile may hold the change: write the cache again without it
		return err
	}
	n.ownDocLocked(c) // watched until a later version shows it was seen (docmerge.go)
	kind := c.doc.Kind
	n.floodLocked(nil, []recordMsg{{kind, c.doc.Marshal()}})
	if kind == member.KindFriends || kind == member.KindRevoked {
		for id := range n.paths.peers {
			if n.mem.store.Cert(id) == nil {
				n.removePeerLocked(id)
			}
		}
	}
	n.certsChangedLocked()
	return nil
}

// routeTable is what the route setter needs of the kernel TUN.
type routeTable interface {
	SetRoutes(prefixes []netip.Prefix, srcs ...netip.Addr) error
}

var _ routeTable = (*tun.Kernel)(nil)

// setRoutesLocked hands the route setter the latest set of friends'
// prefixes, replacing one it has not taken yet.
func (n *Node) setRoutesLocked(want []netip.Prefix) {
	for {
		select {
		case n.routesWant <- want:
			return
		default:
		}
		select {
		case <-n.routesWant: // stale
		default:
		}
	}
}

// routeSetter applies the prefixes routeFriendsLocked wants to the kernel
// TUN (netlink and nftables), off n.mu; one that fails is tried again at
// the next change.
func (n *Node) routeSetter(k routeTable, v4, v6 netip.Addr) {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case want := <-n.routesWant:
			err := k.SetRoutes(want, v4, v6)
			if err == nil || errors.Is(err, net.ErrClosed) {
				continue
			}
			n.logf("glow: routes to friends' networks: %v", err)
			n.mu.Lock()
			if slices.Equal(n.paths.friendRoutes, want) {
				n.paths.friendRoutes = nil
			}
			n.mu.Unlock()
		}
	}
}

// wgApplier applies the WireGuard peer changes the control state queued
// (lazywg.go), off n.mu, until the node stops.
func (n *Node) wgApplier() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.bind.wgKick:
			n.bind.applyWG()
		}
	}
}
