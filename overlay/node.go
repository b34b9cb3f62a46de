package overlay

import (
	"cmp"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	wgtun "golang.zx2c4.com/wireguard/tun"

	glowdns "glow/dns"
	"glow/internal/underlay"
	"glow/internal/wire"
	"glow/link"
	"glow/link/udpbind"
	"glow/nat"
	"glow/overlay/api"
	"glow/overlay/member"
	"glow/policy"
	"glow/relay"
	"glow/tun"
	"glow/tun/firewall"
)

// DefaultPort is glow's UDP port when none is given.
const DefaultPort = 47470

// MTU of the overlay interface: 1500 less WireGuard over IPv6 (80) less
// the relay header (24), so relayed packets need no fragmentation.
const MTU = 1500 - 80 - wire.RelayHeaderLen

// Config is everything a node is built from. It is validated once, by Start.
type Config struct {
	StateDir string // required
	UserName string // creates this user on first run (admin node)
	NodeName string // default: host name
	JoinCode string // join the user that issued this code
	// CertLifetime, on an admin node: how long the user's certificates
	// last (its settings document; renew.go). 0 leaves it as it is: a new
	// user's is member.DefaultCertLifetime.
	CertLifetime time.Duration
	Port         uint16 // UDP port, pinned; 0: glow's choice, DefaultPort unless it moved (portclash.go)
	Random       bool   // pick a free UDP port
	Peers        []string

	Userspace   bool   // a userspace TCP/IP stack instead of a kernel TUN
	SOCKS5      string // with Userspace: address of the SOCKS5 proxy ("" = none)
	TUNName     string // kernel TUN name, default glow0
	NoDNS       bool
	NoFirewall  bool     // no nftables table keeping the underlay off the overlay (kernel TUN only)
	NoPortMap   bool     // do not ask the gateway for a port mapping
	STUNServers []string // extra STUN servers (HOST:PORT) for glow netcheck

	// OpenUserspace opens the stack of a Userspace node: package
	// glow/tun/userspace's, which the overlay does not import so that a
	// daemon built without it (cmd/glow without the glow_netstack tag) does
	// not link gVisor. nil: a Userspace node fails to start.
	OpenUserspace func(addrs []netip.Addr, mtu int) (tun.Userspace, error)

	NoDiscovery    bool           // no LAN beacons (tests on loopback)
	DiscoveryGroup netip.AddrPort // default link.DefaultGroup

	// TURN lists TURN servers to take an allocation on
	// (turn://user:pass@host:port); TURNServer is a UDP address to serve
	// TURN on for others, with TURNUsers (user -> password) and the relayed
	// address TURNPublicIP (default: the first public IPv4 of the host).
	TURN         []string
	TURNServer   string
	TURNUsers    map[string]string
	TURNPublicIP netip.Addr

	// LinkListen is the TCP address for stream links (TCP and WebSocket on one
	// port); "" means none. cmd/glow listens on the UDP port's number.
	LinkListen string
	// ListenPacket opens the node's UDP socket on a port. nil means the
	// host's network (wireguard-go's StdNetBind, with batching and GSO);
	// tests pass a natlab host's, and the node then uses link.PacketBind.
	ListenPacket func(port uint16) (net.PacketConn, error)
	// HostAddrs lists the host addresses this node publishes as endpoints
	// (with its port); nil means the addresses of the up interfaces.
	// In-process tests pass loopback.
	HostAddrs func() []netip.Addr
	// HostNets lists the networks the host is directly on (its interfaces'
	// prefixes); a peer's offered prefix equal to one of them stays off
	// the tunnel (subnets.go). nil with HostAddrs nil means the up
	// interfaces'; nil with HostAddrs set (in-process tests) means none.
	HostNets func() []netip.Prefix
	Logf     func(format string, args ...any)
	// Prefs changes the saved prefs (routes offered, exit node: subnets.go)
	// before the node starts; nil keeps them.
	Prefs *api.PrefsChange

	stateWrite     func(name string) // tests: called before each state file write (State.beforeWrite)
	beforeIpcSet   func()            // tests: called before each IpcSet of a WireGuard peer (Bind.wgHook)
	afterInbound   func()            // tests: called by the control loop after each datagram it handled, outside Node.mu
	tunDevice      wgtun.Device      // tests: this in-memory TUN (tun/tuntest) instead of a netstack or a kernel TUN
	offerUserspace bool              // tests: a userspace node may offer routes (the choice runs without a kernel)
	bindBatch      int               // tests: the Bind's batch size if > 0 (scalebatch.go)
}

// Node is one running glow node. Start builds it; Close stops it.
type Node struct {
	// Immutable after Start.
	cfg         Config
	state       member.State
	keys        *member.NodeKeys
	id          wire.NodeID
	ctlPub      wire.Key
	ctlECDH     *ecdh.PrivateKey // keys.Ctl parsed once (peerSharedKey); nil in tests that build a Node by hand
	logf        func(string, ...any)
	bind        *Bind
	fwd         *relay.Forwarder
	dev         *device.Device
	tunDev      interface{ Close() error }
	ns          tun.Userspace // userspace only
	autoPort    bool          // the port is glow's choice (no --port): it moves off a neighbour's (portclash.go)
	disc        *link.Discovery
	ifw         *ifaceWatch // nil when HostAddrs was given or netlink failed (ifaces.go)
	lock        *os.File
	names       *glowdns.Table
	dir         directory // overlay address -> principal, for the filter
	filter      *policy.Filter
	tunf        *filteredTUN
	tunfSwitch  filterSwitch // turns tunf on and off (filterswitch.go)
	stun        *nat.Client
	portmap     *nat.PortMapper
	stunServers []netip.AddrPort
	dnsApplied  bool
	linkAddr    string                         // where serveLinks listens ("" if nowhere)
	turnServer  *relay.TURNServer              // nil unless Config.TURNServer
	dnsSrv      atomic.Pointer[glowdns.Server] // the resolver, for its counters (metrics.go); nil when off
	exitDNS     exitDNSServer                  // the resolver on the overlay addresses while offering an exit node

	boot        [8]byte    // random per start; peers see a restart by it
	loopbackLab bool       // our host addresses are loopback (tests, labs): loopback endpoints are fine
	ctlq        *ctlQueues // into the control loop (ctlqueue.go)
	ctx         context.Context
	cancel      context.CancelFunc
	wg          sync.WaitGroup // every goroutine the node starts
	undo        []func()       // the teardown, run last first (Start)
	done        chan struct{}
	saveKick    chan struct{}        // cap 1: the records cache is dirty (saver, save.go)
	routesWant  chan []netip.Prefix  // cap 1: friends' prefixes to route (routeSetter, save.go)
	rt          routeState           // subnet routes and exit node (subnets.go); guarded by mu
	devs        devicesCache         // the device list parsed (devices.go); guarded by mu
	records     member.OrderedWriter // writes records cache snapshots in order (member/state.go)

	port atomic.Uint32 // the UDP port: set by Start, changed only by a port move (portclash.go)

	memReleasedAt int64 // Bind.lastData when memory was last handed back; the control loop's own

	// Lock order: saveMu, then mu, then a state file's writer (records.mu,
	// adm.invites.Writer.mu) or the Bind's locks that are never held across a
	// blocking call (Bind.mu, Bind.wgCfgMu); never the other way.
	//
	// saveMu is held by an API call that writes a state file (records cache,
	// policy history, links, bootstrap) from the snapshot it takes under mu
	// to the end of the write, and for a document change to its commit
	// (changeDoc, save.go): writes of a file land in the order of their
	// snapshots, and two changes never interleave. It may be held across
	// blocking I/O; the control loop never takes it.
	saveMu sync.Mutex

	// mu guards the parts below and the fields after them (doc.go: parts,
	// owners, lock order). It is held for computation and for sends that
	// do not block (UDP writes, channel sends with a default), never
	// across a file write or fsync, a netlink call, a multicast join, a
	// garbage collection or a wait for another goroutine: such work is
	// snapshotted under mu and done after it (save.go; disc.Refresh and
	// releaseMemory in loop.go; WireGuard peer changes in lazywg.go).
	// TestStateWritesOutsideLock and TestNoBlockingCallInLocked keep it so;
	// TestLockOrder keeps the order above.
	//
	// The one exception, on purpose: redeeming a code on the control loop
	// (handleJoinLocked, acceptFriendLocked) writes the invites file, and a
	// friend's admission the records cache, under mu (and so may wait for
	// those files' writers): the code's use, its record on disk and the
	// admission are one step, so two redemptions of a one-use code can
	// never both pass and a restart cannot make a used code good again
	// (ea29935). Only an admin node with a live code does this, a few times
	// per code.
	mu    sync.Mutex
	mem   membership // what we are and what we know: certificate, records, documents (membership.go)
	paths pathState  // peers, their paths and routes (paths.go)
	adm   admission  // strangers: codes, handshakes, joins passed on (admission.go)
	lnk   linkState  // links this node keeps: configured, bootstrap, TURN (links.go)
	ports portState  // our UDP port's outside: mapping, clashes, moves (portclash.go)
	admin adminState // promotions of admin nodes, the role's files (admins.go)
	renew renewal    // our certificate's renewal (renew.go)

	dropCtl map[string]uint64 // control packets dropped, by reason: every part counts here
	ctlSent [256]uint64       // bytes of sealed control packets sent to peers, by message type (scale tests)
	wakeAt  loopTimer         // when the control loop wakes next (loop.go)
	closed  bool              // Close has begun
}

// Start brings a node up: identity, interface, WireGuard, discovery, the
// control loop. It returns once the interface is up.
//
// Each step that takes hold of something outside the process (a socket,
// the TUN, a gateway's port mapping, the system resolver) or starts a
// goroutine pushes what undoes it onto n.undo as soon as it holds it; every
// goroutine is counted in n.wg. One teardown (n.teardown) serves Start,
// when any step fails, and Close. It cancels n.ctx (every goroutine of the
// node but the DNS server watches it), then undoes the steps, the last one
// first:
//
//	control       LAN discovery socket closed (the loop, link dialers and
//	              the stream-link listener stop with n.ctx)
//	TURN          the TURN server closed, then its socket (TURN clients
//	              stop with n.ctx)
//	DNS           the system resolver given back, then glow's resolver
//	              stopped: it answers until the system no longer asks it
//	NAT           the port mapping released at the gateway
//	data plane    WireGuard device and Bind closed, then the TUN: its
//	              routes go with it, and its firewall table is removed
//	              wait for every goroutine in n.wg
//	records       the records cache saved (the loop has stopped)
//	state         the state directory's lock released
func Start(cfg Config) (*Node, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("no state directory given")
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	watchIfaces := cfg.HostAddrs == nil
	if watchIfaces {
		cfg.HostAddrs = interfaceAddrs
		if cfg.HostNets == nil {
			cfg.HostNets = interfaceNets
		}
	}
	loopbackLab := slices.ContainsFunc(cfg.HostAddrs(), netip.Addr.IsLoopback)
	if cfg.UserName != "" && !member.ValidName(cfg.UserName) {
		return nil, fmt.Errorf("user name %q: use lower-case letters, digits and '-' (at most 63)", cfg.UserName)
	}
	if cfg.NodeName == "" {
		h, _ := os.Hostname()
		cfg.NodeName = sanitizeName(h)
	}
	if !member.ValidName(cfg.NodeName) {
		return nil, fmt.Errorf("node name %q: use lower-case letters, digits and '-' (at most 63)", cfg.NodeName)
	}
	var peers []netip.AddrPort
	for _, p := range cfg.Peers {
		ap, err := resolvePeer(p)
		if err != nil {
			return nil, err
		}
		peers = append(peers, ap)
	}
	port := cfg.Port
	autoPort := port == 0 && !cfg.Random

	st := member.State{Dir: cfg.StateDir, BeforeWrite: cfg.stateWrite}
	if err := st.Init(); err != nil {
		return nil, err
	}
	lock, err := st.Lock()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg: cfg, state: st, logf: cfg.Logf, lock: lock,
		paths:    pathState{peers: map[wire.NodeID]*peer{}, byCtl: map[wire.Key]*peer{}},
		dropCtl:  map[string]uint64{},
		adm:      admission{pendingFriend: map[wire.Key]chan friendAnswer{}, joinAnswers: map[netip.AddrPort]int{}},
		lnk:      linkState{links: map[string]*configuredLink{}, bootstrap: peers},
		done:     make(chan struct{}),
		saveKick: make(chan struct{}, 1), routesWant: make(chan []netip.Prefix, 1),
		admin:       adminState{kick: make(chan struct{}, 1)},
		loopbackLab: loopbackLab, autoPort: autoPort,
	}
	n.rt.want = make(chan kernelRoutes, 1)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.atClose(func() { n.lock.Close() })
	if watchIfaces {
		n.watchInterfaces() // before any goroutine reads n.cfg.HostAddrs
	}
	if autoPort {
		port = n.savedPort() // DefaultPort unless a port move saved another
	}
	if err := n.start(port); err != nil {
		n.teardown()
		return nil, err
	}
	n.logf("glow: node %s.%s up: %v %v, UDP port %d", n.mem.cert.Name, n.mem.cert.UserName, n.mem.cert.IPv4, n.mem.cert.IPv6, n.Port())
	return n, nil
}

// start runs Start's steps; on an error the caller runs the teardown.
func (n *Node) start(port uint16) error {
	if err := n.loadIdentity(port); err != nil {
		return err
	}
	if err := n.loadPrefs(); err != nil {
		return err
	}
	n.loadBootstrap()
	rand.Read(n.boot[:])
	n.atClose(n.saveRecords) // after the goroutines, the saver's included
	n.atClose(n.wg.Wait)
	if err := n.startDataPlane(port); err != nil {
		return err
	}
	if err := n.startNAT(); err != nil {
		return err
	}
	if err := n.startDNS(); err != nil {
		return fmt.Errorf("DNS set-up (use --no-dns to leave the system resolver alone): %w", err)
	}
	if err := n.startTURN(); err != nil {
		return err
	}
	if n.cfg.LinkListen != "" {
		ln, err := net.Listen("tcp", n.cfg.LinkListen)
		if err != nil {
			n.logf("glow: stream links: not listening: %v", err)
		} else {
			n.linkAddr = ln.Addr().String()
			n.wg.Add(1)
			go n.serveLinks(ln) // closes ln when n.ctx ends
		}
	}
	n.startControl()
	return nil
}

// atClose pushes f onto the teardown (see Start). Only Start calls it.
func (n *Node) atClose(f func()) { n.undo = append(n.undo, f) }

// teardown undoes Start: it cancels n.ctx, then runs n.undo, the last
// pushed first. Start runs it when a step fails, Close otherwise; it runs
// once.
func (n *Node) teardown() {
	n.cancel()
	for i := len(n.undo) - 1; i >= 0; i-- {
		n.undo[i]()
	}
	n.undo = nil
}

func sanitizeName(h string) string {
	h = strings.ToLower(strings.Split(h, ".")[0])
	var b strings.Builder
	for _, r := range h {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 63 {
		s = s[:63]
	}
	if s == "" {
		s = "node"
	}
	return s
}

func resolvePeer(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("--peer %q: want HOST:PORT", s)
	}
	ua, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("--peer %q: %v", s, err)
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// loadIdentity reads or creates keys and the certificate.
func (n *Node) loadIdentity(port uint16) error {
	st, cfg := n.state, n.cfg
	keys, err := st.LoadNodeKeys()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if st.Exists("cert") {
			return &member.DamagedError{Path: st.Path("node.key"), Err: errors.New("missing while a certificate exists")}
		}
		if keys, err = member.NewNodeKeys(); err != nil {
			return err
		}
		if err := st.SaveNodeKeys(keys); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	n.keys, n.id, n.ctlPub = keys, keys.ID(), keys.CtlPublic()
	if n.ctlECDH, err = ecdh.X25519().NewPrivateKey(keys.Ctl[:]); err != nil {
		return err
	}

	cert, err := st.LoadCert()
	switch {
	case err == nil:
		if cfg.JoinCode != "" {
			return fmt.Errorf("this node already belongs to user %s (state %s); use another --state to join another user", cert.UserName, st.Dir)
		}
		if cert.Node != n.id {
			return &member.DamagedError{Path: st.Path("cert"), Err: errors.New("certificate is for another node key")}
		}
	case errors.Is(err, fs.ErrNotExist):
		switch {
		case cfg.JoinCode != "":
			if cert, err = n.join(cfg.JoinCode, port); err != nil {
				return err
			}
		case cfg.UserName != "":
			if cert, err = n.createUser(cfg.UserName); err != nil {
				return err
			}
		case st.Exists("user.key"): // glow up --restore (admins.go)
			if cert, err = n.restoreUser(); err != nil {
				return err
			}
		default:
			return errors.New("this node belongs to no user yet: run 'glow up --user NAME' to create one, or 'glow up --join CODE' with a code from 'glow invite'")
		}
		if err := st.WriteFile("cert", cert.Marshal(), 0o644); err != nil {
			return err
		}
	default:
		return err
	}
	n.mem.cert = cert
	if cert.Admin {
		u, err := st.LoadUserKey()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		n.mem.user = u
	}
	n.mem.store = member.NewStore(cert.User[:])
	// Our own certificate is taken expired too: the node starts, says so,
	// and asks to be renewed (renew.go). It is checked as of its start.
	if _, err := n.mem.store.AddCert(cert, cert.NotBefore); err != nil {
		return fmt.Errorf("own certificate: %w", err)
	}
	// The cache is in no order; friend lists go first, as in gossip, so
	// that friends' certificates and revocation lists are trusted.
	var recs []recordMsg
	if err := st.LoadRecords(n.mem.store, func(k member.RecordKind, raw []byte) error {
		recs = append(recs, recordMsg{k, raw})
		return nil
	}); err != nil {
		n.logf("glow: %v (continuing; records come back from peers)", err)
	}
	slices.SortStableFunc(recs, func(a, b recordMsg) int { return member.RecordOrder(a.Kind) - member.RecordOrder(b.Kind) })
	for _, r := range recs {
		n.mem.store.Apply(r.Kind, r.Raw, time.Now())
	}
	if c := n.mem.store.Cert(n.id); c != nil && c.NotBefore.After(cert.NotBefore) {
		n.mem.cert = c // renewed, and saved in the cache before the cert file
	}
	if err := n.setCertLifetime(cfg.CertLifetime); err != nil {
		return err
	}
	if n.adm.invites, err = member.LoadInvites(st); err != nil {
		return err
	}
	return nil
}

// createUser makes a new user key and this node its admin.
func (n *Node) createUser(name string) (*member.Cert, error) {
	if n.state.Exists("user.key") {
		return nil, fmt.Errorf("%s exists but this node has no certificate; move it away or restore the certificate", n.state.Path("user.key"))
	}
	u, err := member.NewUserKey(name)
	if err != nil {
		return nil, err
	}
	if err := n.state.SaveUserKey(u); err != nil {
		return nil, err
	}
	return n.adminCert(u)
}

// adminCert is a certificate of this node as an admin of user u, signed
// with u: the user's first node's, or a restored admin's.
func (n *Node) adminCert(u *member.UserKey) (*member.Cert, error) {
	v4, err := member.AllocIPv4(n.id, nil)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	c := &member.Cert{
		Node: n.id, Name: n.cfg.NodeName, WG: n.keys.WGPublic(), Ctl: n.ctlPub,
		IPv4: v4, IPv6: member.NodeAddr6(u.Public(), n.id), Admin: true,
		NotBefore: now, NotAfter: now.Add(cmp.Or(n.cfg.CertLifetime, member.DefaultCertLifetime)),
	}
	member.SignCert(u, c)
	return c, nil
}

// startDataPlane opens the interface, the Bind and the WireGuard device.
func (n *Node) startDataPlane(port uint16) error {
	var inner conn.Bind
	if n.cfg.ListenPacket != nil {
		inner = link.NewPacketBind(n.cfg.ListenPacket)
	} else {
		inner = udpbind.New()
	}
	if n.cfg.bindBatch > 0 {
		inner = batchBind{inner, n.cfg.bindBatch}
	}
	n.ctlq = newCtlQueues()
	n.fwd = relay.New(relay.Limits{})
	n.bind = NewBind(inner, n.id, n.fwd, n.ctlq)
	n.bind.wgHook = n.cfg.beforeIpcSet
	n.wg.Add(2)
	go n.wgApplier()
	go n.watchPaths() // failover.go
	n.mu.Lock()
	n.refreshPolicyLocked() // sets the relay's members
	n.mu.Unlock()
	if n.mem.rules == nil {
		return errors.New("the policy in force does not compile")
	}
	filter, err := policy.NewFilter(n.mem.rules, policy.Options{})
	if err != nil {
		return err
	}
	n.filter = filter

	var dev wgtun.Device
	switch {
	case n.cfg.tunDevice != nil:
		n.tunDev, dev = n.cfg.tunDevice, n.cfg.tunDevice
	case n.cfg.Userspace:
		if n.cfg.OpenUserspace == nil {
			return ErrNoUserspace
		}
		ns, err := n.cfg.OpenUserspace([]netip.Addr{n.mem.cert.IPv4, n.mem.cert.IPv6}, MTU)
		if err != nil {
			return err
		}
		n.ns, n.tunDev, dev = ns, ns, ns.Device()
		// Closing the device closes the stack; a stack without a
		// device yet is closed on its own.
		n.atClose(func() {
			if n.dev == nil {
				ns.Close()
			}
		})
	default:
		k, err := tun.OpenKernel(tun.KernelConfig{
			Name: n.cfg.TUNName, MTU: MTU,
			Prefixes: []netip.Prefix{
				netip.PrefixFrom(n.mem.cert.IPv4, member.IPv4Range.Bits()),
				netip.PrefixFrom(n.mem.cert.IPv6, member.IPv6Bits),
			},
			ExtraAddrs: []netip.Addr{glowdns.ServiceV4, glowdns.ServiceV6},
			Firewall:   n.firewallPrefixes(),
			SysctlFile: n.state.Path(sysctlSaved),
		})
		if errors.Is(err, firewall.ErrInstall) {
			return fmt.Errorf("%w; without it hosts on this machine's networks could reach the overlay: fix that, or run with --no-firewall (not recommended)", err)
		}
		if err != nil {
			return err
		}
		n.tunDev, dev = k, k.Device()
		n.atClose(func() {
			if err := k.Close(); err != nil { // removes the firewall table
				n.logf("glow: %v", err)
			}
		})
		n.wg.Add(2)
		go n.routeSetter(k, n.mem.cert.IPv4, n.mem.cert.IPv6)
		n.rt.kernel = k
		go n.routeApplier(k, n.mem.cert.IPv4, n.mem.cert.IPv6)
		if pr := n.rt.prefs; pr.ExitNode != "" {
			// Fail closed from the start, before any peer is known.
			if err := k.SetExit(true, pr.ExitNodeAllowLANAccess, n.mem.cert.IPv4, n.mem.cert.IPv6); err != nil {
				return err
			}
		}
	}
	logger := &device.Logger{
		Verbosef: func(string, ...any) {},
		Errorf:   func(f string, a ...any) { n.logf("wireguard: "+f, a...) },
	}
	n.tunf = newFilteredTUN(dev, n.filter, n.bind)
	n.mu.Lock()
	n.refreshPolicyLocked() // sets whether the filter is on
	n.applyDevicesLocked()  // the devices this node is the via node of (devices.go)
	n.mu.Unlock()
	n.dev = device.NewDevice(n.tunf, n.bind, logger)
	n.atClose(func() {
		n.bind.closeWG()
		n.dev.Close() // closes the bind and the TUN device
	})
	n.bind.dev.Store(n.dev)
	cfg := fmt.Sprintf("private_key=%x\nlisten_port=%d\n", n.keys.WG[:], port)
	if n.rt.kernel != nil && n.cfg.ListenPacket == nil {
		// glow's own sockets keep the physical routes while an exit node
		// takes the rest (tun.Kernel.SetExit): the UDP socket by its bind,
		// the others by underlay.Control.
		cfg += fmt.Sprintf("fwmark=%d\n", underlay.Mark)
		underlay.Enable()
	}
	if err := n.dev.IpcSet(cfg); err != nil {
		return fmt.Errorf("UDP port %d: %w", port, err)
	}
	err = n.dev.Up()
	if err != nil && n.autoPort {
		// Our own choice of port is taken: any other will do (and is
		// saved, so the node keeps it).
		n.logf("glow: UDP port %d: %v; taking another (no --port given)", port, err)
		if err = n.dev.IpcSet("listen_port=0\n"); err == nil {
			err = n.dev.Up()
		}
		if err == nil {
			n.savePort(n.listenPort())
		}
	}
	if err != nil {
		return fmt.Errorf("UDP port %d: %w", port, err)
	}
	n.port.Store(uint32(n.listenPort()))
	if n.Port() == 0 {
		return fmt.Errorf("UDP port %d: could not listen", port)
	}
	return nil
}

func (n *Node) listenPort() uint16 {
	s, err := n.dev.IpcGet()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			var p uint16
			fmt.Sscan(v, &p)
			return p
		}
	}
	return 0
}

// firewallPrefixes are the ranges the kernel TUN's firewall keeps off the
// underlay (tun/firewall): every overlay IPv4 address (the resolver's
// included), the user's ULA /48 and the resolver's /48. Friends' /48s are
// added as they are routed (routeFriendsLocked). None with NoFirewall.
func (n *Node) firewallPrefixes() []netip.Prefix {
	if n.cfg.NoFirewall {
		n.logf("glow: WARNING: --no-firewall: hosts on this machine's networks can reach the overlay addresses and the resolver")
		return nil
	}
	return []netip.Prefix{member.IPv4Range, member.UserPrefix6(n.mem.cert.User[:]), glowdns.ServicePrefix6}
}

// RepairFirewall removes the firewall table a crashed daemon left in this
// network namespace (its interface is gone); a live daemon's table stays. It
// reports whether it removed one.
func RepairFirewall() (bool, error) { return firewall.RemoveStale() }

// RepairRouting undoes what a crashed daemon of the state directory left
// for subnet routes and exit nodes: the router table, the exit node's ip
// rules, the forwarding sysctls (tun.RepairRouting).
func RepairRouting(stateDir string) (bool, error) {
	return tun.RepairRouting(member.State{Dir: stateDir}.Path(sysctlSaved))
}

// Port returns the node's UDP port.
func (n *Node) Port() uint16 { return uint16(n.port.Load()) }

// ID returns the node's identity.
func (n *Node) ID() wire.NodeID { return n.id }

// Cert returns the node's certificate.
func (n *Node) Cert() *member.Cert {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mem.cert
}

// Userspace returns the userspace network stack (nil for a kernel TUN).
func (n *Node) Userspace() tun.Userspace { return n.ns }

// ErrNoUserspace is Start's error for a Userspace node without
// Config.OpenUserspace: this binary was built without the userspace stack.
var ErrNoUserspace = errors.New("this glow was built without the userspace network stack (build tag glow_netstack; make builds it as glow-userspace)")

// Done is closed when the node has stopped.
func (n *Node) Done() <-chan struct{} { return n.done }

// Close stops the node: control loop, WireGuard, interface, in the order
// Start gives. It waits for every goroutine the node started.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		<-n.done
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.teardown()
	close(n.done)
	return nil
}

// LinkAddr returns the TCP address stream links are accepted on ("" if none).
func (n *Node) LinkAddr() string { return n.linkAddr }
