package overlay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"glow/internal/wire"
	"glow/overlay/api"
	"glow/overlay/member"
)

// Several admin nodes. Who is an admin is a signed fact of the user: the
// Admin flag of a node's certificate. An admin promotes another node by
// re-signing its certificate with the flag set and sending it, with the
// user key, in one control message sealed end to end to that node's control
// key (NaCl box, relayed like any control packet). The node takes it only
// from a node of its own user whose certificate says admin, only if the key
// is its user's key and the certificate its own (same keys, newer); it
// writes user.key (0600, atomically), adopts the certificate and answers.
// Demotion is a certificate without the flag: gossiped like any record, so
// it reaches the node whenever it next hears from the others, and the node
// deletes user.key when it adopts it. A demoted node that keeps a copy of
// the key can still sign (nothing but a new user key undoes a key once
// given), but no node lists it or forwards join requests to it as an admin
// (joinrelay.go), and its own daemon stops using the key.

const (
	msgAdminKey msgType = 30 // admin -> node: user key and its admin certificate
	msgAdminAck msgType = 31 // node -> admin: stored (the certificate's NotBefore)
)

// promoteWait bounds how long Promote waits for the node's answer; the
// message is sent again every promoteResend meanwhile.
const (
	promoteWait   = 10 * time.Second
	promoteResend = time.Second
)

type adminKeyMsg struct {
	Seed [ed25519.SeedSize]byte
	Cert []byte
}

type adminAckMsg struct {
	NotBefore int64
}

func (m adminKeyMsg) marshal() []byte {
	w := wire.Writer{B: []byte{byte(msgAdminKey)}}
	w.Raw(m.Seed[:])
	w.Bytes16(m.Cert)
	return w.B
}

func (m adminAckMsg) marshal() []byte {
	w := wire.Writer{B: []byte{byte(msgAdminAck)}}
	w.I64(m.NotBefore)
	return w.B
}

// parseAdminMsg decodes the body of a msgAdminKey or msgAdminAck.
func parseAdminMsg(t msgType, r *wire.Reader) any {
	if t == msgAdminAck {
		return adminAckMsg{NotBefore: r.I64()}
	}
	var m adminKeyMsg
	r.Fixed(m.Seed[:])
	m.Cert = bytes.Clone(r.Bytes16(1024))
	return m
}

// adminState is the node's part in promotions and its role's files.
type adminState struct {
	acks    map[wire.NodeID]chan struct{} // promotions waiting for an answer, by node
	kick    chan struct{}                 // cap 1: the role writer has work
	ackTo   *peer                         // answer this admin once user.key is written
	ackCert int64                         // with this certificate's NotBefore

	own     map[member.RecordKind]*docChange // this node's last change of each document, until seen (docmerge.go)
	merging map[member.RecordKind]bool       // a merge of that kind is running
}

// adminsLocked returns the names of the user's admin nodes, sorted.
func (n *Node) adminsLocked() []string {
	var out []string
	for _, c := range n.mem.store.Certs() {
		if n.mem.store.Own(c.User) && c.Admin {
			out = append(out, c.Name)
		}
	}
	slices.Sort(out)
	return out
}

// ownNodeLocked finds a node of this user by name.
func (n *Node) ownNodeLocked(name string) (*member.Cert, error) {
	for _, c := range n.mem.store.Certs() {
		if n.mem.store.Own(c.User) && c.Name == name {
			return c, nil
		}
	}
	return nil, api.Errorf(api.CodeNotFound, "%s is not a node of user %s (see 'glow nodes list')", name, n.mem.cert.UserName)
}

// reissueLocked signs a copy of c with admin set as asked, newer than c
// and for a whole lifetime from now (a promotion or demotion renews too).
func (n *Node) reissueLocked(c *member.Cert, admin bool, now time.Time) *member.Cert {
	nc := *c
	nc.Raw = nil
	nc.Admin = admin
	nc.NotBefore = now
	if !now.After(c.NotBefore) {
		nc.NotBefore = c.NotBefore.Add(time.Nanosecond)
	}
	nc.NotAfter = nc.NotBefore.Add(n.mem.store.CertLifetime())
	member.SignCert(n.mem.user, &nc)
	return &nc
}

// Promote gives the user key to node name, sealed to its control key, and
// makes it an admin. It returns once the node confirmed that it stored the
// key, or fails after promoteWait without an answer.
func (n *Node) Promote(ctx context.Context, name string) (api.AdminChange, error) {
	n.mu.Lock()
	if n.mem.user == nil {
		n.mu.Unlock()
		return api.AdminChange{}, errNotAdmin
	}
	c, err := n.ownNodeLocked(name)
	switch {
	case err != nil:
	case c.Node == n.id:
		err = api.Errorf(api.CodeConflict, "this node is an admin already")
	case n.paths.peers[c.Node] == nil:
		err = api.Errorf(api.CodeUnavailable, "%s is not a peer of this node yet", name)
	}
	if err != nil {
		n.mu.Unlock()
		return api.AdminChange{}, err
	}
	nc := n.reissueLocked(c, true, time.Now())
	msg := adminKeyMsg{Cert: nc.Marshal()}
	copy(msg.Seed[:], n.mem.user.Priv.Seed())
	done := make(chan struct{})
	if n.admin.acks == nil {
		n.admin.acks = map[wire.NodeID]chan struct{}{}
	}
	n.admin.acks[c.Node] = done
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		if n.admin.acks[c.Node] == done {
			delete(n.admin.acks, c.Node)
		}
		n.mu.Unlock()
	}()

	ctx, cancel := context.WithTimeout(ctx, promoteWait)
	defer cancel()
	t := time.NewTicker(promoteResend)
	defer t.Stop()
	for {
		n.mu.Lock()
		if p := n.paths.peers[c.Node]; p != nil {
			n.sendCtlLocked(p, netip.AddrPort{}, msg.marshal())
		}
		n.mu.Unlock()
		select {
		case <-done:
			n.mu.Lock()
			// The node floods its new certificate too; ours may be first.
			if ok, _ := n.mem.store.AddCert(nc, time.Now()); ok {
				n.floodLocked(nil, []recordMsg{{member.KindCert, nc.Marshal()}})
				n.recordChangedLocked(member.KindCert, nc.Marshal(), time.Now())
				n.mem.dirty = true
			}
			n.mu.Unlock()
			n.kickSaver()
			n.logf("glow: promoted %s: it holds the user key", nc.FQDN())
			return api.AdminChange{Node: name, Admin: true, Confirmed: true}, nil
		case <-t.C:
		case <-ctx.Done():
			return api.AdminChange{}, api.Errorf(api.CodeUnavailable, "%s did not answer in %v (is it up? 'glow nodes list'); if it got the key late it shows as admin there", name, promoteWait)
		case <-n.ctx.Done():
			return api.AdminChange{}, api.Errorf(api.CodeUnavailable, "the node is stopping")
		}
	}
}

// Demote takes the admin role from node name: its certificate is re-signed
// without it and gossiped; the node deletes its user key when that
// certificate reaches it. The last admin cannot be demoted.
func (n *Node) Demote(name string) (api.AdminChange, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mem.user == nil {
		return api.AdminChange{}, errNotAdmin
	}
	c, err := n.ownNodeLocked(name)
	if err != nil {
		return api.AdminChange{}, err
	}
	if !c.Admin {
		return api.AdminChange{}, api.Errorf(api.CodeConflict, "%s is not an admin (see 'glow nodes list')", name)
	}
	if admins := n.adminsLocked(); len(admins) < 2 {
		return api.AdminChange{}, api.Errorf(api.CodeConflict, "%s is the only admin: promote another node first ('glow nodes promote NAME'), or the user could never change again", name)
	}
	now := time.Now()
	nc := n.reissueLocked(c, false, now)
	if _, err := n.mem.store.AddCert(nc, now); err != nil {
		return api.AdminChange{}, err
	}
	n.floodLocked(nil, []recordMsg{{member.KindCert, nc.Marshal()}})
	n.recordChangedLocked(member.KindCert, nc.Marshal(), now)
	n.mem.dirty = true
	n.kickSaver()
	n.logf("glow: demoted %s", nc.FQDN())
	return api.AdminChange{Node: name, Admin: false}, nil
}

// handleAdminKeyLocked takes the user key from an admin of our user.
func (n *Node) handleAdminKeyLocked(p *peer, m adminKeyMsg, now time.Time) {
	if !n.mem.store.Own(p.cert.User) || !p.cert.Admin {
		n.dropCtl["admin-key-not-from-admin"]++
		return
	}
	u := &member.UserKey{Name: n.mem.cert.UserName, Priv: ed25519.NewKeyFromSeed(m.Seed[:])}
	if !bytes.Equal(u.Public(), n.mem.cert.User[:]) {
		n.dropCtl["admin-key-wrong-user"]++
		return
	}
	c, err := member.ParseCert(m.Cert)
	if err != nil || c.User != n.mem.cert.User || c.Node != n.id || c.WG != n.mem.cert.WG || c.Ctl != n.mem.cert.Ctl || !c.Admin {
		n.dropCtl["admin-key-bad-cert"]++
		return
	}
	if c.NotBefore.Before(n.mem.cert.NotBefore) {
		n.dropCtl["admin-key-stale-cert"]++ // a newer certificate came since (renewed, demoted)
		return
	}
	if !c.NotBefore.Equal(n.mem.cert.NotBefore) {
		if _, err := n.mem.store.AddCert(c, now); err != nil {
			n.logf("glow: admin certificate from %s refused: %v", p.cert.FQDN(), err)
			return
		}
		n.floodLocked(nil, []recordMsg{{member.KindCert, c.Marshal()}})
		n.mem.dirty = true
	}
	if n.mem.user == nil {
		n.logf("glow: %s made this node an admin of user %s", p.cert.FQDN(), n.mem.cert.UserName)
	}
	n.mem.user = u
	n.admin.ackTo, n.admin.ackCert = p, c.NotBefore.UnixNano()
	n.ownCertLocked(c)
}

// handleAdminAckLocked ends a Promote that waits for p.
func (n *Node) handleAdminAckLocked(p *peer, m adminAckMsg) {
	if done := n.admin.acks[p.cert.Node]; done != nil {
		delete(n.admin.acks, p.cert.Node)
		close(done)
	}
}

// ownCertLocked adopts c, a newer certificate of this node (renewed,
// promoted, demoted), already in the store: it is written to the state
// directory by the role writer, and the node's role follows its Admin
// flag (the user key is deleted when it is off).
func (n *Node) ownCertLocked(c *member.Cert) {
	if c.Node != n.id || c.NotBefore.Before(n.mem.cert.NotBefore) {
		return
	}
	n.mem.cert = c
	if !c.Admin && n.mem.user != nil {
		n.logf("glow: this node is no longer an admin of user %s: deleting the user key", c.UserName)
		n.mem.user = nil
	}
	select {
	case n.admin.kick <- struct{}{}:
	default:
	}
}

// roleWriter writes the certificate and the user key as the node's role
// is (ownCertLocked), off n.mu, until the node stops.
func (n *Node) roleWriter() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.admin.kick:
		}
		n.mu.Lock()
		cert, user, ackTo, ackCert := n.mem.cert, n.mem.user, n.admin.ackTo, n.admin.ackCert
		n.admin.ackTo = nil
		n.mu.Unlock()
		if err := n.state.WriteFile("cert", cert.Marshal(), 0o644); err != nil {
			n.logf("glow: saving this node's certificate: %v", err)
		}
		err := n.syncUserKey(user)
		if err != nil {
			n.logf("glow: %v", err)
		}
		if ackTo != nil && user != nil && err == nil {
			n.mu.Lock()
			if n.paths.peers[ackTo.cert.Node] == ackTo {
				n.sendCtlLocked(ackTo, netip.AddrPort{}, adminAckMsg{NotBefore: ackCert}.marshal())
			}
			n.mu.Unlock()
		}
	}
}

// syncUserKey makes user.key hold u, or deletes it when u is nil.
func (n *Node) syncUserKey(u *member.UserKey) error {
	have, err := n.state.LoadUserKey()
	switch {
	case u == nil && err == nil:
		if err := os.Remove(n.state.Path("user.key")); err != nil {
			return fmt.Errorf("deleting the user key: %w", err)
		}
		n.logf("glow: deleted %s (demoted)", n.state.Path("user.key"))
		return nil
	case u == nil:
		return nil
	case err == nil && have.Priv.Equal(u.Priv):
		return nil
	case err == nil:
		return fmt.Errorf("%s holds another key than the user's; not replaced", n.state.Path("user.key"))
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("user key: %w", err)
	}
	if err := n.state.SaveUserKey(u); err != nil {
		return fmt.Errorf("storing the user key: %w", err)
	}
	return nil
}

// Nodes lists every node of this user: the certified ones, then the
// removed ones (by id; their certificates are gone).
func (n *Node) Nodes() []api.NodeInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := []api.NodeInfo{}
	for _, c := range n.mem.store.Certs() {
		if !n.mem.store.Own(c.User) {
			continue
		}
		ni := api.NodeInfo{
			Name: c.Name, ID: c.Node.String(), IPv4: c.IPv4.String(), IPv6: c.IPv6.String(),
			Addrs: []string{}, Admin: c.Admin, Self: c.Node == n.id,
			Expires: c.NotAfter.UTC().Format(time.RFC3339),
		}
		if ni.Self {
			ni.Online = true
		} else if p := n.paths.peers[c.Node]; p != nil {
			ni.Online = p.path().kind != pathNone
		}
		if info := n.mem.store.Info(c.Node); info != nil {
			for _, ep := range info.Endpoints {
				ni.Addrs = append(ni.Addrs, ep.String())
			}
		}
		out = append(out, ni)
	}
	slices.SortFunc(out, func(a, b api.NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	if d := n.mem.store.Doc(member.KindRevoked); d != nil {
		ids, _ := member.ParseRevoked(d.Body)
		for _, id := range ids {
			out = append(out, api.NodeInfo{ID: id.String(), Addrs: []string{}, Revoked: true})
		}
	}
	return out
}

// adminRoutes adds the API's routes of this file to mux.
func (n *Node) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.Nodes())
	})
	mux.HandleFunc("POST /v1/nodes/promote", func(w http.ResponseWriter, r *http.Request) {
		res, err := n.Promote(r.Context(), r.URL.Query().Get("name"))
		if err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("POST /v1/nodes/demote", func(w http.ResponseWriter, r *http.Request) {
		res, err := n.Demote(r.URL.Query().Get("name"))
		if err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, res)
	})
}

// restoreUser certifies this node, which has no certificate, as an admin of
// the user whose key STATE/user.key holds (written by glow up --restore
// from a backup). The node then finds the user's other nodes as any node
// does: --peer, LAN discovery, or a link (glow link add); they take its
// certificate, signed by the user key, and send it the user's records.
func (n *Node) restoreUser() (*member.Cert, error) {
	u, err := n.state.LoadUserKey()
	if err != nil {
		return nil, err
	}
	c, err := n.adminCert(u)
	if err != nil {
		return nil, err
	}
	n.logf("glow: this node is now an admin of user %s, from the user key in %s (restored)", u.Name, n.state.Path("user.key"))
	return c, nil
}
