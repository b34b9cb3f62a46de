package overlay

import (
	"crypto/ed25519"
	"net/netip"
	"testing"
	"time"

	"glow/overlay/member"
)

// The renewal timer, expiry and clock skew on a clock rig (clockrig_test.go).

// tickCerts moves the rig's clock to at and runs the certificate timer.
func (r *clockRig) tickCerts(at time.Time) {
	r.t.Helper()
	r.now = at
	r.locked(func() { r.n.tickCertsLocked(at) })
	r.collect()
}

// renewReqs returns the renewal requests sent to the named peer since from.
func (r *clockRig) renewReqs(name string, from time.Time) []rigMsg {
	var out []rigMsg
	for _, m := range r.msgs {
		if _, ok := m.msg.(renewReq); ok && m.peer == name && !m.at.Before(from) {
			out = append(out, m)
		}
	}
	return out
}

// makeAdmin re-issues the named peer's certificate as an admin's.
func (r *clockRig) makeAdmin(name string) {
	p := r.peers[name]
	c := *p.cert
	c.Admin, c.NotBefore = true, c.NotBefore.Add(time.Second)
	member.SignCert(r.user, &c)
	p.cert = &c
	r.locked(func() {
		if _, err := r.n.mem.store.AddCert(&c, r.now); err != nil {
			r.t.Fatal(err)
		}
		r.n.addPeerLocked(&c, r.now)
	})
}

// TestTimerRenewalAsk: a node that is no admin asks its admin for a new
// certificate at half its lifetime, not before; over the admin's path while
// it has one; again every renewRetry until an answer comes, and then no
// more. The request is signed by the node key for that admin.
func TestTimerRenewalAsk(t *testing.T) {
	r := newClockRig(t, "adm")
	r.n.mem.user = nil
	r.makeAdmin("adm")
	admAddr := netip.MustParseAddrPort("192.0.2.10:47470")
	r.direct("adm", admAddr)
	c := r.n.Cert()
	renewAt := c.RenewAt()
	t0 := r.now
	r.tickCerts(renewAt.Add(-time.Second))
	if got := r.renewReqs("adm", t0); len(got) != 0 {
		t.Fatalf("%d renewal requests %v before half the lifetime", len(got), renewAt.Sub(r.now))
	}
	r.tickCerts(renewAt)
	reqs := r.renewReqs("adm", renewAt)
	if len(reqs) != 1 || reqs[0].to != admAddr || reqs[0].relayed {
		t.Fatalf("at half the lifetime: %d requests (%+v), want one to the admin's path %v", len(reqs), reqs, admAddr)
	}
	req := reqs[0].msg.(renewReq)
	adm := r.peers["adm"]
	if req.Node != r.n.id || !ed25519.Verify(r.n.id.PublicKey(), renewSigned(adm.keys.CtlPublic(), r.n.ctlPub, req), req.Sig[:]) {
		t.Fatalf("request for %v not signed by the node key for this admin", req.Node)
	}
	r.tickCerts(renewAt.Add(renewRetry - time.Millisecond))
	if got := r.renewReqs("adm", renewAt.Add(time.Millisecond)); len(got) != 0 {
		t.Fatalf("asked again %v after the first request, before renewRetry", got[0].at.Sub(renewAt))
	}
	r.tickCerts(renewAt.Add(renewRetry))
	if got := r.renewReqs("adm", renewAt.Add(renewRetry)); len(got) != 1 {
		t.Fatalf("no second request renewRetry after an unanswered one (%d)", len(got))
	}
	// The admin answers: the node holds the new certificate and asks no more.
	nc := *c
	nc.NotBefore, nc.NotAfter = r.now, r.now.Add(25*time.Hour)
	member.SignCert(r.user, &nc)
	r.deliver("adm", renewResp{Certs: [][]byte{nc.Marshal(), adm.cert.Marshal()}}.marshal(), admAddr)
	if got := r.n.Cert(); got.NotAfter != nc.NotAfter || got.WG != c.WG || got.IPv4 != c.IPv4 {
		t.Fatalf("after the answer: certificate until %v, want %v", got.NotAfter, nc.NotAfter)
	}
	from := r.now.Add(time.Millisecond)
	r.tickCerts(r.now.Add(time.Hour))
	if got := r.renewReqs("adm", from); len(got) != 0 {
		t.Fatalf("%d requests after the renewal, the first %v after it (%+v)", len(got), got[0].at.Sub(from), got[0].msg)
	}
}

// TestTimerRenewalExpired: a node whose certificate expired (its admin was
// away) still asks, straight to the admin's addresses wrapped for any
// member, since its peers refuse its packets; status says it expired, and
// the warning goes once the admin answers.
func TestTimerRenewalExpired(t *testing.T) {
	r := newClockRig(t, "adm")
	r.n.mem.user = nil
	r.makeAdmin("adm")
	admAddr := netip.MustParseAddrPort("192.0.2.10:47470")
	r.direct("adm", admAddr)
	c := r.n.Cert()
	late := c.NotAfter.Add(time.Minute)
	r.tickCerts(late)
	reqs := r.renewReqs("adm", late)
	if len(reqs) == 0 {
		t.Fatal("no renewal request from a node whose certificate expired")
	}
	for _, m := range reqs {
		if m.to != admAddr {
			t.Errorf("request to %v, want the admin's address %v", m.to, admAddr)
		}
	}
	if w := r.n.Status().Self.Warning; w == "" {
		t.Fatal("no warning in status with an expired certificate")
	}
	nc := *c
	nc.NotBefore, nc.NotAfter = r.now, r.now.Add(25*time.Hour)
	member.SignCert(r.user, &nc)
	r.deliver("adm", renewResp{Certs: [][]byte{nc.Marshal()}}.marshal(), admAddr)
	r.tickCerts(r.now.Add(time.Second))
	if w := r.n.Status().Self.Warning; w != "" || r.n.Cert().NotAfter != nc.NotAfter {
		t.Fatalf("after the renewal: warning %q, certificate until %v", w, r.n.Cert().NotAfter)
	}
}

// TestTimerExpirySkew: a peer's certificate is taken until its NotAfter
// plus the grace for clock skew (10 minutes for long lifetimes), so a
// peer whose clock is minutes behind is not cut off; then it is dropped at
// the next tick, and its control packets are no longer answered. A
// certificate whose issuer's clock is five minutes ahead is taken.
func TestTimerExpirySkew(t *testing.T) {
	r := newClockRig(t, "b", "c")
	b := r.peers["b"]
	bAddr := netip.MustParseAddrPort("192.0.2.20:47470")
	r.direct("b", bAddr)
	grace := member.ExpiryGrace(b.cert.Lifetime())
	if grace != member.ClockSkew {
		t.Fatalf("grace %v for a %v certificate, want %v", grace, b.cert.Lifetime(), member.ClockSkew)
	}
	r.tickCerts(b.cert.NotAfter.Add(grace - time.Second))
	pongs := func() int {
		n := 0
		for _, m := range r.msgs {
			if _, ok := m.msg.(pongMsg); ok && m.peer == "b" {
				n++
			}
		}
		return n
	}
	before := pongs()
	r.deliver("b", pingMsg{TxID: [12]byte{1}}.marshal(), bAddr)
	if pongs() != before+1 {
		t.Fatal("b's ping not answered within the grace after its certificate's NotAfter")
	}
	r.tickCerts(b.cert.NotAfter.Add(grace + time.Millisecond))
	r.locked(func() {
		if r.n.paths.peers[b.cert.Node] != nil || r.n.mem.store.Cert(b.cert.Node) != nil {
			t.Fatal("b still a peer after its certificate and the grace expired")
		}
		if l, _ := r.n.mem.store.Lapsed(b.cert.Node); l == nil {
			t.Fatal("b's expired certificate not kept aside for renewal")
		}
	})
	before = pongs()
	r.deliver("b", pingMsg{TxID: [12]byte{2}}.marshal(), bAddr)
	if pongs() != before {
		t.Fatal("b's ping answered after its certificate expired")
	}
	// An issuer five minutes ahead: c's new certificate starts in the future.
	c := *r.peers["c"].cert
	c.NotBefore, c.NotAfter = r.now.Add(5*time.Minute), r.now.Add(25*time.Hour)
	member.SignCert(r.user, &c)
	r.locked(func() {
		if _, err := r.n.mem.store.AddCert(&c, r.now); err != nil {
			t.Fatalf("certificate from an issuer 5 minutes ahead refused: %v", err)
		}
	})
}

// TestTimerAdminRenews: an admin answers a member's renewal request with a
// certificate for the same node, keys and addresses, valid for the user's
// lifetime, and its own; it refuses a request not signed by the node key;
// it renews a member whose certificate expired (kept aside), and answers
// a second request soon after with the same certificate.
func TestTimerAdminRenews(t *testing.T) {
	r := newClockRig(t, "b")
	const life = 3 * time.Minute
	set := &member.UserDoc{Kind: member.KindSettings, Version: 1, Body: member.FormatSettings(member.Settings{CertLifetime: life})}
	if err := member.SignUserDoc(r.user, set); err != nil {
		t.Fatal(err)
	}
	r.locked(func() {
		if _, err := r.n.mem.store.AddDoc(set); err != nil {
			t.Fatal(err)
		}
	})
	b := r.peers["b"]
	bAddr := netip.MustParseAddrPort("192.0.2.20:47470")
	r.direct("b", bAddr)
	ask := func(signer ed25519.PrivateKey) renewResp {
		t.Helper()
		req := renewReq{Node: b.cert.Node, NotBefore: b.cert.NotBefore.UnixNano()}
		copy(req.Sig[:], ed25519.Sign(signer, renewSigned(r.n.ctlPub, b.keys.CtlPublic(), req)))
		b.epoch++ // a handshake: its own epoch, the time it was sealed (by the rig's clock)
		pkt := sealCtlSeq(nil, b.keys.CtlPublic(), b.shared, req.marshal(), uint64(r.now.UnixNano())+b.epoch%1000, 0)
		from := len(r.msgs)
		r.locked(func() { r.n.handleControlLocked(pkt, bAddr, r.now) })
		r.collect()
		for _, m := range r.msgs[from:] {
			if resp, ok := m.msg.(renewResp); ok && m.peer == "b" {
				return resp
			}
		}
		t.Fatal("no answer to the renewal request")
		return renewResp{}
	}
	r.tickCerts(b.cert.RenewAt()) // b asks at half its lifetime
	_, other, _ := ed25519.GenerateKey(nil)
	if resp := ask(other); resp.Err == "" || len(resp.Certs) != 0 {
		t.Fatalf("request signed by another key answered: %+v", resp)
	}
	check := func(resp renewResp) *member.Cert {
		t.Helper()
		if resp.Err != "" || len(resp.Certs) != 2 {
			t.Fatalf("answer: %q, %d certificates", resp.Err, len(resp.Certs))
		}
		nc, err := member.ParseCert(resp.Certs[0])
		if err != nil {
			t.Fatal(err)
		}
		if nc.Node != b.cert.Node || nc.WG != b.cert.WG || nc.Ctl != b.cert.Ctl || nc.IPv4 != b.cert.IPv4 || nc.Name != b.cert.Name {
			t.Fatalf("renewed certificate changes the node: %+v", nc)
		}
		if nc.Lifetime() != life || !nc.NotBefore.After(b.cert.NotBefore) {
			t.Fatalf("renewed certificate %v..%v, want %v from now", nc.NotBefore, nc.NotAfter, life)
		}
		if own, err := member.ParseCert(resp.Certs[1]); err != nil || own.Node != r.n.id {
			t.Fatalf("second certificate is not the admin's own: %v", err)
		}
		return nc
	}
	nc := check(ask(b.keys.Sign))
	if again := check(ask(b.keys.Sign)); again.NotBefore != nc.NotBefore {
		t.Fatalf("asked again at once: a new certificate (%v), want the one just issued (%v)", again.NotBefore, nc.NotBefore)
	}
	// b's certificate expires (a member away): it is kept aside and renewed.
	b.cert = nc
	late := nc.ExpiresAt().Add(time.Minute)
	r.tickCerts(late)
	r.locked(func() {
		if r.n.paths.peers[nc.Node] != nil {
			t.Fatal("b still a peer after its certificate expired")
		}
	})
	back := check(ask(b.keys.Sign))
	if !back.NotAfter.After(late) {
		t.Fatalf("expired member renewed until %v, before now %v", back.NotAfter, late)
	}
	r.locked(func() {
		if r.n.paths.peers[nc.Node] == nil {
			t.Fatal("b not a peer again after its renewal")
		}
	})
}
