package overlay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"glow/internal/wire"
	"glow/link"
	"glow/overlay/api"
	"glow/overlay/member"
)

// Stream links: where UDP does not get through, a neighbour is reached over
// a byte stream (package link): TCP or WebSocket to the node's TCP port
// (the same number as its UDP port; one listener tells the two apart by
// their first bytes), or ssh running `glow link stdio` on the other side.
// A link is authenticated with the node keys and the peer's certificate
// must be trusted (its user's or a friend's) before it carries anything.
//
// A peer with a live stream link and no UDP path is a direct neighbour
// over the stream: the Bind sends to it on the stream, routing counts the
// link (costlier than UDP), and relayed traffic may cross it. UDP is
// preferred whenever it works. Links added with `glow link add` are kept in
// STATE/links and redialled with backoff while the node runs.

// Link costs for routing, above any UDP path's.
const (
	costStream = 60
	costSSH    = 120
)

func (n *Node) linkIdentity() link.Identity {
	n.mu.Lock()
	defer n.mu.Unlock()
	return link.Identity{Sign: n.keys.Sign, Cert: n.mem.cert.Marshal()}
}

// verifyLink accepts a link peer whose certificate this node trusts.
func (n *Node) verifyLink(peer wire.NodeID, raw []byte) error {
	c, err := member.ParseCert(raw)
	if err != nil {
		return err
	}
	if c.Node != peer {
		return errors.New("certificate of another node")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := n.mem.store.AddCert(c, time.Now()); err != nil {
		return fmt.Errorf("link from %s refused: %w", n.fqdnLocked(c), err)
	}
	return nil
}

// attachStream makes s the stream link of its peer and reads from it until
// it ends. name says where it goes ("tcp://...", "ssh://...", "tcp from ...").
func (n *Node) attachStream(s *link.Stream, name string) {
	now := time.Now()
	n.mu.Lock()
	c := n.mem.store.Cert(s.Peer())
	if c == nil || n.closed {
		n.mu.Unlock()
		s.Close()
		return
	}
	fresh := n.paths.peers[c.Node] == nil
	p := n.addPeerLocked(c, now)
	if fresh {
		n.certsChangedLocked()
	}
	if old := p.stream; old != nil {
		old.Close()
	}
	ctlq := make(chan []byte, 64)
	p.stream, p.streamName, p.streamQ = s, name, ctlq
	p.route = nil // a neighbour now: no relay route
	n.applyPathLocked(p)
	p.hbWait = time.Time{}
	n.paths.routesDirty, n.mem.infoDirty = true, true
	n.dueLocked(time.Now()) // the loop recomputes them (we are not the loop)
	n.logf("glow: %s: link %s up", n.fqdnLocked(c), name)
	n.sendDigestLocked(p, netipInvalid)
	ep := p.ep
	n.mu.Unlock()

	done := make(chan struct{})
	n.wg.Add(2)
	go func() { // the control writer: the control loop never waits on a stream
		defer n.wg.Done()
		for {
			select {
			case pkt := <-ctlq:
				if s.WriteDatagrams([][]byte{pkt}) != nil {
					s.Close()
				}
			case <-n.ctx.Done():
				s.Close()
				return
			case <-done:
				return
			}
		}
	}()
	go func() { // the reader
		defer n.wg.Done()
		buf := make([]byte, link.MaxDatagram)
		for {
			sz, err := s.ReadDatagram(buf)
			if errors.Is(err, link.ErrFrameTooLarge) {
				continue
			}
			if err != nil {
				break
			}
			n.bind.DeliverStream(append([]byte(nil), buf[:sz]...), ep)
		}
		close(done)
		s.Close()
		n.mu.Lock()
		n.detachStreamLocked(p, s, time.Now())
		n.mu.Unlock()
	}()
}

func (n *Node) detachStreamLocked(p *peer, s *link.Stream, now time.Time) {
	if p.stream != s {
		return
	}
	n.logf("glow: %s: link %s down", n.fqdnLocked(p.cert), p.streamName)
	p.stream, p.streamName, p.streamQ = nil, "", nil
	n.applyPathLocked(p) // none, if the stream was the path, until the routes below
	n.paths.routesDirty, n.mem.infoDirty = true, true
	n.computeRoutesLocked(now)
	n.dueLocked(now) // the loop re-signs our info (we are not the loop)
}

// serveLinks accepts stream links on ln: raw link handshakes ("GLK1"),
// joiners' requests ("GLJ", joinstream.go) and WebSocket upgrades (HTTP) on
// the one port. Until a connection has
// authenticated it holds a slot of a link.Gate (bounded in total and per
// source address) and has a deadline: the first bytes and a link handshake
// within link.HandshakeTimeout, HTTP headers within the same, and an idle
// HTTP connection is closed after it. A failing Accept is retried.
func (n *Node) serveLinks(ln net.Listener) {
	defer n.wg.Done()
	id := n.linkIdentity()
	httpConns := &chanListener{addr: ln.Addr(), c: make(chan net.Conn), done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc(link.DefaultWSPath, func(w http.ResponseWriter, r *http.Request) {
		gc, _ := r.Context().Value(gatedConnKey{}).(*link.GatedConn)
		link.WSHandler(id, n.verifyLink, func(s *link.Stream) {
			if gc != nil {
				gc.Release() // authenticated: no longer counts against the gate
			}
			n.attachStream(s, "ws from "+s.Peer().String())
		}).ServeHTTP(w, r)
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: link.HandshakeTimeout,
		IdleTimeout:       link.HandshakeTimeout,
		MaxHeaderBytes:    16 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peekedConn); ok {
				ctx = context.WithValue(ctx, gatedConnKey{}, pc.Conn)
			}
			return ctx
		},
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		srv.Serve(httpConns)
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		<-n.ctx.Done()
		ln.Close()
		srv.Close()
		httpConns.Close()
	}()
	gate := link.NewGate(maxLinkConnsPending, link.MaxPendingPerSource)
	var hs sync.WaitGroup
	defer hs.Wait()
	for {
		c, err := link.Accept(n.ctx, ln, n.logf)
		if err != nil {
			return
		}
		release, ok := gate.Admit(c.RemoteAddr())
		if !ok {
			c.Close() // too many connections not yet authenticated
			continue
		}
		gc := link.NewGatedConn(c, release)
		hs.Add(1)
		go func() {
			defer hs.Done()
			pc, head, ok := peekConn(gc)
			if !ok {
				return
			}
			if head == string(joinStreamMagic[:]) {
				pc.r.Discard(len(head))
				n.serveJoinStream(gc, pc.r) // keeps the slot: a joiner never authenticates
				return
			}
			if head != link.HelloMagic {
				httpConns.hand(pc) // the slot goes with it, until close or upgrade
				return
			}
			defer gc.Release()
			ctx, cancel := context.WithTimeout(n.ctx, link.HandshakeTimeout)
			defer cancel()
			s, err := link.Handshake(ctx, pc, id, n.verifyLink)
			if err != nil {
				n.logf("glow: link from %v: %v", c.RemoteAddr(), err)
				return
			}
			n.attachStream(s, "tcp from "+c.RemoteAddr().String())
		}()
	}
}

// maxLinkConnsPending bounds the connections to the link port that have not
// authenticated yet (link handshakes and HTTP, together).
const maxLinkConnsPending = link.MaxPendingHandshakes

// gatedConnKey finds an HTTP request's connection in its context.
type gatedConnKey struct{}

// peekedConn is a conn whose first bytes were peeked.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// peekConn reads the first 4 bytes of a connection to the link port, which
// tell a link handshake, a join stream and HTTP (WebSocket) apart, within
// link.HandshakeTimeout; the returned connection reads them again. A
// connection that sends fewer is closed (ok false).
func peekConn(c net.Conn) (pc *peekedConn, head string, ok bool) {
	c.SetReadDeadline(time.Now().Add(link.HandshakeTimeout))
	br := bufio.NewReader(c)
	h, err := br.Peek(4)
	if err != nil {
		c.Close()
		return nil, "", false
	}
	c.SetReadDeadline(time.Time{})
	return &peekedConn{Conn: c, r: br}, string(h), true
}

// hand passes c to the http.Server, or closes it once the listener closed.
func (l *chanListener) hand(c net.Conn) {
	select {
	case l.c <- c:
	case <-l.done:
		c.Close()
	}
}

// chanListener hands connections to an http.Server.
type chanListener struct {
	addr net.Addr
	c    chan net.Conn
	once sync.Once
	done chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// AddLink adds a link to a neighbour: udp://HOST:PORT (a bootstrap address),
// tcp://, ws://, wss:// or ssh://user@host (runs the remote glow over ssh).
func (n *Node) AddLink(raw string) error {
	t, err := link.ParseURL(raw)
	if err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%w", err)
	}
	if t.Transport == link.TransportUDP {
		ap, err := resolvePeer(t.Addr)
		if err != nil {
			return err
		}
		n.saveMu.Lock()
		defer n.saveMu.Unlock()
		n.mu.Lock()
		var boot []byte
		if !slices.Contains(n.lnk.bootstrap, ap) {
			n.lnk.bootstrap = append(n.lnk.bootstrap, ap)
			boot = n.lnk.bootstrapFile()
		}
		b := n.beaconLocked()
		n.mu.Unlock()
		if boot != nil {
			n.state.WriteFile("bootstrap", boot, 0o644)
		}
		return n.bind.SendTo(b, ap)
	}
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	n.mu.Lock()
	key := t.String()
	if _, ok := n.lnk.links[key]; ok {
		n.mu.Unlock()
		return api.Errorf(api.CodeConflict, "link %s exists already", key)
	}
	n.startLinkLocked(t)
	data := n.linksFileLocked()
	n.mu.Unlock()
	return n.state.WriteFile("links", data, 0o600)
}

// RemoveLink stops a configured link.
func (n *Node) RemoveLink(raw string) error {
	t, err := link.ParseURL(raw)
	if err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%w", err)
	}
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	if t.Transport == link.TransportUDP {
		ap, err := resolvePeer(t.Addr)
		if err != nil {
			return err
		}
		n.mu.Lock()
		i := slices.Index(n.lnk.bootstrap, ap)
		if i < 0 {
			n.mu.Unlock()
			return api.Errorf(api.CodeNotFound, "no link %s (see 'glow link list')", t)
		}
		n.lnk.bootstrap = slices.Delete(n.lnk.bootstrap, i, i+1)
		boot := n.lnk.bootstrapFile()
		n.mu.Unlock()
		return n.state.WriteFile("bootstrap", boot, 0o644)
	}
	n.mu.Lock()
	l := n.lnk.links[t.String()]
	if l == nil {
		n.mu.Unlock()
		return api.Errorf(api.CodeNotFound, "no link %s (see 'glow link list')", t)
	}
	l.cancel()
	delete(n.lnk.links, t.String())
	data := n.linksFileLocked()
	n.mu.Unlock()
	return n.state.WriteFile("links", data, 0o600)
}

// linkState is the part of a node that keeps its links to chosen
// neighbours: the links it dials (glow link add, the links file), the
// bootstrap addresses it sends beacons to, and its TURN allocations.
//
// Owner: Node.mu guards it. API calls (AddLink, RemoveLink) and Start
// write the links and the bootstrap list, then write their files after the
// lock (saveMu, save.go); the TURN goroutines (turn.go) write turns; the
// control loop reads all three. The stream-link listener's address
// (Node.linkAddr) and the TURN server (Node.turnServer) never change after
// Start and are outside the lock.
type linkState struct {
	links     map[string]*configuredLink // links this node dials (glow link add)
	bootstrap []netip.AddrPort           // where beacons go besides the LAN (bootstrap file, udp:// links)
	turns     []*turnAlloc               // TURN allocations held
}

// configuredLink is a link this node dials and keeps up.
type configuredLink struct {
	target link.Target
	cancel context.CancelFunc
	status string // guarded by Node.mu
	peer   wire.NodeID
}

// linksFileLocked is the links file's content: the links this node dials.
func (n *Node) linksFileLocked() []byte {
	var b strings.Builder
	for k := range n.lnk.links {
		fmt.Fprintln(&b, k)
	}
	return []byte(b.String())
}

func (n *Node) loadLinksLocked() {
	data, err := n.state.ReadFile("links")
	if err != nil {
		return
	}
	for _, line := range strings.Fields(string(data)) {
		if t, err := link.ParseURL(line); err == nil && n.lnk.links[t.String()] == nil && t.Transport != link.TransportUDP {
			n.startLinkLocked(t)
		}
	}
}

func (n *Node) startLinkLocked(t link.Target) {
	ctx, cancel := context.WithCancel(n.ctx)
	l := &configuredLink{target: t, cancel: cancel, status: "connecting"}
	n.lnk.links[t.String()] = l
	n.wg.Add(1)
	go n.keepLink(ctx, l)
}

// keepLink dials l until ctx ends, redialling with backoff when it drops.
func (n *Node) keepLink(ctx context.Context, l *configuredLink) {
	defer n.wg.Done()
	bo := link.Backoff{}
	for ctx.Err() == nil {
		s, err := n.dialLink(ctx, l.target)
		if err == nil && len(s.PeerCert()) == 0 { // a joiner (joinreach.go)
			n.mu.Lock()
			l.status = "a joiner: passing its request on"
			n.mu.Unlock()
			n.serveJoinerLink(ctx, s, l.target)
			n.mu.Lock()
			l.status = "joiner done; redialling"
			n.mu.Unlock()
		} else if err == nil {
			n.mu.Lock()
			l.status, l.peer = "up", s.Peer()
			n.mu.Unlock()
			bo.Reset()
			n.attachStream(s, l.target.String())
			select { // wait for it to drop
			case <-ctx.Done():
				s.Close()
			case <-s.Done():
			}
			n.mu.Lock()
			l.status = "down"
			n.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
		} else {
			n.mu.Lock()
			l.status = "error: " + err.Error()
			n.mu.Unlock()
			n.logf("glow: link %s: %v", l.target, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(bo.Next()):
		}
	}
}

func (n *Node) dialLink(ctx context.Context, t link.Target) (*link.Stream, error) {
	id := n.linkIdentity()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch t.Transport {
	case link.TransportTCP:
		return link.DialTCP(ctx, t.Addr, id, n.verifyDialed)
	case link.TransportWS, link.TransportWSS:
		return link.DialWS(ctx, t.URL.String(), id, n.verifyDialed, nil)
	case link.TransportSSH:
		q := t.URL.Query()
		u := *t.URL
		u.RawQuery = ""
		return link.DialCommand(ctx, link.SSHArgv(&u, q.Get("glow"), q.Get("state")), id, n.verifyLink)
	}
	return nil, fmt.Errorf("cannot dial %s", t)
}

// Links lists configured and live stream links.
func (n *Node) Links() []LinkStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := []LinkStatus{}
	seen := map[string]bool{}
	for k, l := range n.lnk.links {
		ls := LinkStatus{URL: k, Status: l.status}
		for _, p := range n.paths.peers {
			if p.stream != nil && p.streamName == k {
				ls.Up, ls.InUse, ls.Peer, ls.Via = true, p.path().kind == pathStream, n.fqdnLocked(p.cert), p.streamName
				seen[k] = true
			}
		}
		out = append(out, ls)
	}
	for _, ap := range n.lnk.bootstrap {
		out = append(out, LinkStatus{URL: "udp://" + ap.String(), Status: "bootstrap"})
	}
	for _, p := range n.paths.peers {
		if p.stream != nil && !seen[p.streamName] {
			out = append(out, LinkStatus{Peer: n.fqdnLocked(p.cert), Via: p.streamName, Up: true, InUse: p.path().kind == pathStream, Status: "accepted"})
		}
	}
	slices.SortFunc(out, func(a, b LinkStatus) int { return strings.Compare(a.URL+a.Via, b.URL+b.Via) })
	return out
}

// ServeStdio runs the serving end of an ssh link: `glow link stdio` on
// this machine relays its stdin/stdout to the daemon, which handshakes here.
func (n *Node) ServeStdio(ctx context.Context, rw interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Close() error
}) error {
	s, err := link.Handshake(ctx, rw, n.linkIdentity(), n.verifyLink)
	if err != nil {
		return err
	}
	n.attachStream(s, "ssh from "+s.Peer().String())
	select {
	case <-s.Done():
	case <-n.ctx.Done():
	}
	return nil
}

var netipInvalid = netip.AddrPort{}
