package overlay

// Reaching out to a joiner. When a joiner can reach no member but a member
// can reach the joiner (a VPS joining from the code of a NAS behind a NAT,
// a machine whose firewall lets in but not out), the user runs on any
// member one of the lines the joiner's hint prints:
//
//	glow link add udp://JOINER:PORT   the member sends its beacons there
//	                                  (every beaconEvery, bootstrap); the
//	                                  joiner takes a beacon of a member of
//	                                  the code's user as a new target
//	                                  (join.go) and sends its request back
//	glow link add tcp://JOINER:PORT   the member dials the joiner's link port
//	glow link add ws://JOINER:PORT    (the same port, WebSocket upgrade)
//
// For a stream the joiner listens, while it waits for an answer, on the
// node's link address (Config.LinkListen: by default the TCP port of the
// UDP port's number) and runs the ordinary link handshake (package link)
// with its node key and no certificate. It takes the connection only if the
// member proves a node key whose certificate is signed by the user the
// code names (joinMemberCert); the member takes a peer without a
// certificate, on a link it dialled itself, as a joiner (verifyDialed).
// Then the two run the join exchange of joinstream.go over the link's
// datagrams: the joiner sends a fresh join-via packet every joinResend, the
// member passes each through the same per-source limit and joinRelay bounds
// as a joiner's connection to its link port (serveJoiner), to the inviter
// if it is not the inviter itself, and sends the sealed answer back. As
// everywhere, the answer counts only if the inviter sealed it; the member
// learns nothing reusable.
//
// Bounds: the joiner holds at most joinReachConns connections at once (at
// most joinReachPerSource from one address), each with the link
// handshake's timeout; the member's side is one connection per configured
// link, for at most joinTimeout and joinStreamFrames datagrams, redialled
// with the link's backoff. Once joined, the joiner's daemon listens on the
// same port, the member's next dial is an ordinary link, and the new node
// reaches the user over it.

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"glow/internal/wire"
	"glow/link"
	"glow/overlay/member"
)

// joinReachConns bounds the connections a joiner holds at once, and
// joinReachPerSource those from one address.
const (
	joinReachConns     = 8
	joinReachPerSource = 4
)

// joinMemberCert checks raw, the certificate a node presents to a joiner
// (who holds none to check it against): it is node's, signed by the user
// whose hash the code carries, and valid now.
func joinMemberCert(raw []byte, node wire.NodeID, user [16]byte, now time.Time) (*member.Cert, error) {
	c, err := member.ParseCert(raw)
	if err != nil {
		return nil, err
	}
	if c.Node != node {
		return nil, errors.New("certificate of another node")
	}
	if member.UserHash(c.User[:]) != user {
		return nil, errors.New("a node of another user")
	}
	if err := c.Verify(c.User[:], now); err != nil {
		return nil, err
	}
	return c, nil
}

// verifyDialed checks the peer of a link this node dialled: a member or a
// friend (verifyLink), or a joiner, who has no certificate yet and gets
// the join exchange only (serveJoinerLink).
func (n *Node) verifyDialed(peer wire.NodeID, raw []byte) error {
	if len(raw) == 0 {
		return nil
	}
	return n.verifyLink(peer, raw)
}

// serveJoinerLink runs a member's side of the join exchange on s, a link it
// dialled to t whose peer turned out to be a joiner, until ctx (the
// configured link's) ends.
func (n *Node) serveJoinerLink(ctx context.Context, s *link.Stream, t link.Target) {
	defer s.Close()
	defer context.AfterFunc(ctx, func() { s.Close() })()
	from := linkTargetAddr(t)
	n.logf("glow: link %s: a joiner (node %v); passing its request on", t, s.Peer())
	timer := time.AfterFunc(joinTimeout, func() { s.Close() })
	defer timer.Stop()
	n.serveJoiner(from, func(fn func([]byte)) {
		buf := make([]byte, maxJoinStreamPacket)
		for i := 0; i < joinStreamFrames; i++ {
			sz, err := s.ReadDatagram(buf)
			if err != nil || wire.Classify(buf[:sz]) != wire.KindJoin {
				return
			}
			fn(buf[:sz])
		}
	}, func(pkt []byte) error { return s.WriteDatagrams([][]byte{pkt}) }, func() { s.Close() })
}

// linkTargetAddr is the address a tcp or ws link target resolves to: the
// joiner's, for the join exchange's bookkeeping (joinRelay, joinConns).
func linkTargetAddr(t link.Target) netip.AddrPort {
	host, port := t.URL.Hostname(), t.URL.Port()
	if port == "" {
		port = "80"
		if t.Transport == link.TransportWSS {
			port = "443"
		}
	}
	a, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}
	}
	return tcpAddrPort(a)
}

// serveReach is the joiner's side: it accepts members' links on ln (raw
// link handshakes and WebSocket upgrades, told apart by their first bytes
// as on a node's link port) until done, and runs the exchange on each.
func (j *joiner) serveReach(ln net.Listener, in chan<- joinDatagram, done <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg     sync.WaitGroup // every goroutine started here, HTTP handlers included
		mu     sync.Mutex
		closed bool // no more HTTP handlers start (guarded by mu)
	)
	httpConns := &chanListener{addr: ln.Addr(), c: make(chan net.Conn), done: make(chan struct{})}
	ws := link.WSHandler(j.id, j.verifyMember, func(s *link.Stream) {
		wg.Add(1) // the handler holds a count: wg.Wait has not returned
		go func() {
			defer wg.Done()
			j.reached(ctx, s, "ws", in)
		}()
	})
	mux := http.NewServeMux()
	mux.HandleFunc(link.DefaultWSPath, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if closed {
			mu.Unlock()
			return
		}
		wg.Add(1)
		mu.Unlock()
		defer wg.Done()
		ws.ServeHTTP(w, r)
	})
	srv := &http.Server{
		Handler: mux, ReadHeaderTimeout: link.HandshakeTimeout, IdleTimeout: link.HandshakeTimeout, MaxHeaderBytes: 16 << 10,
		BaseContext: func(net.Listener) context.Context { return ctx }, // a handshake ends with the join
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Serve(httpConns)
	}()
	defer func() {
		cancel()
		ln.Close()
		httpConns.Close()
		srv.Close()
		mu.Lock()
		closed = true
		mu.Unlock()
		wg.Wait()
	}()
	go func() {
		select {
		case <-done:
			cancel()
			ln.Close()
		case <-ctx.Done():
		}
	}()
	gate := link.NewGate(joinReachConns, joinReachPerSource)
	for {
		c, err := link.Accept(ctx, ln, nil)
		if err != nil {
			return
		}
		release, ok := gate.Admit(c.RemoteAddr())
		if !ok {
			c.Close()
			continue
		}
		gc := link.NewGatedConn(c, release) // the slot is held until the connection ends
		stop := context.AfterFunc(ctx, func() { gc.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer stop()
			pc, head, ok := peekConn(gc)
			if !ok {
				return
			}
			if head != link.HelloMagic {
				httpConns.hand(pc)
				return
			}
			hctx, hcancel := context.WithTimeout(ctx, link.HandshakeTimeout)
			s, err := link.Handshake(hctx, pc, j.id, j.verifyMember)
			hcancel()
			if err != nil {
				j.logf("glow: join: link from %v: %v", c.RemoteAddr(), err)
				return
			}
			j.reached(ctx, s, "tcp", in)
		}()
	}
}

// verifyMember takes a link from a node of the code's user only.
func (j *joiner) verifyMember(peer wire.NodeID, raw []byte) error {
	_, err := joinMemberCert(raw, peer, j.inv.UserHash, time.Now())
	return err
}

// reached runs the joiner's side of the exchange on s, a link from a
// member: a fresh request every joinResend, its datagrams to in, until ctx
// ends or the link does.
func (j *joiner) reached(ctx context.Context, s *link.Stream, transport string, in chan<- joinDatagram) {
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	name := s.Peer().String()
	if c, err := member.ParseCert(s.PeerCert()); err == nil {
		name = c.FQDN()
	}
	j.logf("glow: join: %s reached out to this machine over %s; asking it", name, transport)
	go func() {
		t := time.NewTicker(joinResend)
		defer t.Stop()
		for {
			if s.WriteDatagrams([][]byte{j.packet()}) != nil {
				s.Close()
				return
			}
			select {
			case <-t.C:
			case <-s.Done():
				return
			}
		}
	}()
	for {
		buf := make([]byte, maxJoinStreamPacket)
		sz, err := s.ReadDatagram(buf)
		if err != nil {
			return
		}
		select {
		case in <- joinDatagram{b: buf[:sz]}:
		case <-ctx.Done():
			return
		}
	}
}

// listenReach opens the joiner's link listener on addr (Config.LinkListen),
// or returns nil (and says why) if it cannot.
func listenReach(addr string, logf func(string, ...any)) net.Listener {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		logf("glow: join: not listening for members reaching out over tcp: %v", err)
		return nil
	}
	return ln
}

// reachLines are the commands a member that can reach this machine runs:
// one udp:// line per address, and a tcp:// line if the joiner listens.
func (j *joiner) reachLines(addrs []netip.Addr) []string {
	udpPort := udpAddrPort(j.pc.LocalAddr()).Port()
	var tcpPort uint16
	if j.ln != nil {
		tcpPort = tcpAddrPort(j.ln.Addr()).Port()
	}
	var lines []string
	for _, a := range addrs {
		if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() {
			continue
		}
		lines = append(lines, "glow link add udp://"+netip.AddrPortFrom(a, udpPort).String())
		if tcpPort != 0 {
			lines = append(lines, "glow link add tcp://"+netip.AddrPortFrom(a, tcpPort).String())
		}
	}
	return lines
}
