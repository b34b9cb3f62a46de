package overlay

// Plain WireGuard devices (glow device add|list|remove).
//
// A device that cannot run glow (a phone's WireGuard app, a router, a work
// laptop) gets a wg-quick configuration from an admin node: its own key
// pair (the private key is printed once and kept nowhere), overlay
// addresses allocated like a node's, and one [Peer]: its via node, a node
// of the user with an endpoint the device can reach. The device list is a
// user document (member.KindDevices, devicerec.go): signed by the user key,
// gossiped to the user's own nodes, so each of them
//
//   - names the device NAME.USER.glow (updateNamesLocked),
//   - routes the device's addresses to the via node: they are allowed IPs
//     of the via node's WireGuard peer (wgConfigLocked), as a subnet
//     router's prefixes are (subnets.go); they come from the device list,
//     not from the via node's NodeInfo routes, which never carry overlay
//     addresses (subnetChoiceLocked refuses them) and which a via node that
//     is offline could not sign,
//   - counts the device as a node of the user in the policy (the filter's
//     directory): the user's nodes reach it and it reaches them, friends
//     reach it only through a rule, like any node;
//
// and the via node carries the device as a WireGuard peer on its own
// wireguard-go device and UDP port (devicewg.go), with the device's
// addresses as allowed IPs, and forwards between it and the overlay in the
// kernel (forwarding on glow's interface only: enableForwarding). Its resolver answers
// the device at dns.ServiceV4 like any overlay client. glow device remove
// signs a list without the device: every node drops the name and the
// route, and the via node the WireGuard peer (with its session).

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/curve25519"

	glowdns "glow/dns"
	"glow/internal/wire"
	"glow/overlay/api"
	"glow/overlay/member"
	"glow/tun"
)

// devicesCache is the device list as last parsed, and the document it
// came from: every peer's WireGuard configuration asks for it.
type devicesCache struct {
	doc  *member.UserDoc
	list []member.Device
}

// devicesOfDocLocked is the device list as signed: what a change starts
// from.
func (n *Node) devicesOfDocLocked() []member.Device {
	d := n.mem.store.Doc(member.KindDevices)
	if d == nil {
		return nil
	}
	if n.devs.doc != d {
		ds, err := member.ParseDevices(d.User, d.Body)
		if err != nil {
			ds = nil // the Store takes no malformed list
		}
		n.devs = devicesCache{doc: d, list: ds}
	}
	return slices.Clone(n.devs.list)
}

// devicesLocked returns the devices of the newest device list held, less
// those whose address a node of the user holds.
func (n *Node) devicesLocked() []member.Device {
	ds := n.devicesOfDocLocked()
	if len(ds) == 0 {
		return nil
	}
	// An address that a node of the user holds stays the node's: two
	// admins may have allocated it at once.
	held := map[netip.Addr]bool{}
	for _, c := range n.mem.store.Certs() {
		if n.mem.store.Own(c.User) {
			held[c.IPv4] = true
		}
	}
	return slices.DeleteFunc(ds, func(d member.Device) bool { return held[d.IPv4] })
}

// deviceAddrsViaLocked returns the addresses of the devices whose via node
// is c's node, routed to that node.
func (n *Node) deviceAddrsViaLocked(c *member.Cert) []netip.Addr {
	if !n.mem.store.Own(c.User) {
		return nil
	}
	var out []netip.Addr
	for _, d := range n.devicesLocked() {
		if d.Via == c.Node {
			out = append(out, d.IPv4, d.IPv6)
		}
	}
	return out
}

// applyDevicesLocked gives the Bind the devices this node is the via node
// of, and turns on forwarding on glow's interface for the first one.
func (n *Node) applyDevicesLocked() {
	if n.bind == nil {
		return
	}
	var mine []deviceConfig
	for _, d := range n.devicesLocked() {
		if d.Via == n.id {
			mine = append(mine, deviceConfig{WG: d.WG, IPs: []netip.Addr{d.IPv4, d.IPv6}})
		}
	}
	n.bind.setDevices(n.keys.WG, mine)
	if n.cfg.Userspace && len(mine) > 0 && n.bind.devForwarding.CompareAndSwap(false, true) {
		n.logf("glow: devices: this node runs a userspace network stack: its devices reach its own services only, not the rest of the overlay (add them with --via a node with a kernel TUN)")
	}
	if _, ok := n.tunDev.(*tun.Kernel); ok && len(mine) > 0 && n.bind.devForwarding.CompareAndSwap(false, true) {
		go n.enableForwarding() // a /proc write: not under n.mu
	}
}

// enableForwarding lets the kernel forward between the devices and the
// overlay, for packets arriving on glow's interface only (in from the
// tunnel, out the same interface): IPv4 forwarding on that interface, and
// IPv6 force_forwarding there (Linux 6.17 and later). Older kernels forward
// IPv6 only host-wide, and turning that on stops the host taking router
// advertisements, so glow leaves it to the operator (sysctl
// net.ipv6.conf.all.forwarding=1) and says so.
func (n *Node) enableForwarding() {
	conf := func(family, key string) string {
		return "/proc/sys/net/" + family + "/conf/" + n.tunName() + "/" + key
	}
	if err := os.WriteFile(conf("ipv4", "forwarding"), []byte("1\n"), 0o644); err != nil {
		n.logf("glow: devices: %v; this via node cannot forward for its devices", err)
	}
	if err := os.WriteFile(conf("ipv6", "force_forwarding"), []byte("1\n"), 0o644); err != nil {
		if b, _ := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding"); strings.TrimSpace(string(b)) != "1" {
			n.logf("glow: devices: no IPv6 forwarding on %s alone on this kernel (%v): devices reach the overlay over IPv4 only, unless net.ipv6.conf.all.forwarding=1", n.tunName(), err)
		}
	}
}

// findDeviceLocked resolves a device's name (tv, tv.alice, tv.alice.glow)
// or one of its addresses.
func (n *Node) findDeviceLocked(target string) (member.Device, bool) {
	target = strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(target), "."), "."+DNSSuffix)
	ip, ipErr := netip.ParseAddr(target)
	for _, d := range n.devicesLocked() {
		if target == d.Name || target == d.Name+"."+n.mem.cert.UserName || ipErr == nil && (ip == d.IPv4 || ip == d.IPv6) {
			return d, true
		}
	}
	return member.Device{}, false
}

// deviceHostsLocked are the devices' names for the resolver.
func (n *Node) deviceHostsLocked() []glowdns.Host {
	var hs []glowdns.Host
	for _, d := range n.devicesLocked() {
		hs = append(hs, glowdns.Host{User: n.mem.cert.UserName, Node: d.Name, V4: d.IPv4, V6: d.IPv6})
	}
	return hs
}

// AddDevice creates a device named name whose via node is via (this node
// if ""), on an admin node, and returns its wg-quick configuration.
// endpoint, if valid, is where the device reaches the via node; by default
// the via node's public endpoint.
func (n *Node) AddDevice(name, via string, endpoint netip.AddrPort) (api.DeviceAdded, error) {
	if !member.ValidName(name) {
		return api.DeviceAdded{}, api.Errorf(api.CodeInvalidArgument, "device name %q: use lower-case letters, digits and '-' (a DNS label)", name)
	}
	var priv [32]byte
	if _, err := rand.Read(priv[:]); err != nil {
		return api.DeviceAdded{}, err
	}
	dev := member.Device{Name: name, WG: wgPublic(&priv)}
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	var viaCert *member.Cert
	_, _, err := n.changeDoc(member.KindDevices, func() ([]byte, error) {
		if n.mem.user == nil {
			return nil, errNotAdmin
		}
		ds := n.devicesOfDocLocked()
		used := map[netip.Addr]bool{}
		viaCert = nil
		for _, c := range n.mem.store.Certs() {
			if !n.mem.store.Own(c.User) {
				continue
			}
			used[c.IPv4] = true
			if c.Name == name {
				return nil, api.Errorf(api.CodeConflict, "%s is the name of a node of user %s; choose another", name, n.mem.cert.UserName)
			}
			if c.Name == via || via == "" && c.Node == n.id {
				viaCert = c
			}
		}
		if viaCert == nil {
			return nil, api.Errorf(api.CodeNotFound, "via node %q is not a node of user %s (see 'glow status')", via, n.mem.cert.UserName)
		}
		if viaCert.Node == n.id && n.cfg.Userspace {
			return nil, api.Errorf(api.CodeInvalidArgument, "this node runs a userspace network stack and cannot forward for a device; choose another --via")
		}
		for _, d := range ds {
			used[d.IPv4] = true
			if d.Name == name {
				return nil, api.Errorf(api.CodeConflict, "a device named %s exists; remove it first ('glow device remove %s')", name, name)
			}
		}
		if len(ds) >= member.MaxDevices {
			return nil, api.Errorf(api.CodeConflict, "user %s has %d devices, the most a list holds", n.mem.cert.UserName, len(ds))
		}
		v4, err := member.AllocIPv4(dev.ID(), used)
		if err != nil {
			return nil, err
		}
		dev.IPv4, dev.Via = v4, viaCert.Node
		dev.IPv6 = member.NodeAddr6(n.mem.cert.User[:], dev.ID())
		return member.FormatDevices(append(ds, dev)), nil
	}, nil)
	if err != nil {
		return api.DeviceAdded{}, fmt.Errorf("device %s not added: %w", name, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !endpoint.IsValid() {
		var eps []netip.AddrPort
		if viaCert.Node == n.id {
			eps = n.localEndpointsLocked(time.Now())
		} else if info := n.mem.store.Info(viaCert.Node); info != nil {
			eps = info.Endpoints
		}
		endpoint = publicEndpoint(eps)
	}
	n.logf("glow: added device %s.%s via %s", name, n.mem.cert.UserName, viaCert.Name)
	cfg := deviceConfigText(dev, priv, viaCert, endpoint, n.mem.cert.UserName, n.userSubnetsLocked())
	return api.DeviceAdded{Device: n.deviceInfoLocked(dev), Config: cfg}, nil
}

// RemoveDevice removes a device of this user (admin nodes only): every
// node drops its name and route, its via node its WireGuard peer.
func (n *Node) RemoveDevice(name string) error {
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	_, _, err := n.changeDoc(member.KindDevices, func() ([]byte, error) {
		if n.mem.user == nil {
			return nil, errNotAdmin
		}
		ds := n.devicesOfDocLocked()
		i := slices.IndexFunc(ds, func(d member.Device) bool { return d.Name == name })
		if i < 0 {
			return nil, api.Errorf(api.CodeNotFound, "%s is not a device of user %s (see 'glow device list')", name, n.mem.cert.UserName)
		}
		return member.FormatDevices(slices.Delete(ds, i, i+1)), nil
	}, nil)
	if err != nil {
		return fmt.Errorf("device %s not removed: %w", name, err)
	}
	n.logf("glow: removed device %s.%s", name, n.mem.cert.UserName)
	return nil
}

// Devices lists the user's devices; on their via node with where each
// was last seen and its last handshake.
func (n *Node) Devices() []api.DeviceInfo {
	n.mu.Lock()
	out := []api.DeviceInfo{}
	var mine []wire.Key
	for _, d := range n.devicesLocked() {
		out = append(out, n.deviceInfoLocked(d))
		if d.Via == n.id {
			mine = append(mine, d.WG)
		}
	}
	n.mu.Unlock()
	if len(mine) == 0 || n.bind == nil {
		return out
	}
	var hs map[string]time.Time
	if dev := n.bind.dev.Load(); dev != nil {
		hs = lastHandshakes(dev) // the device's IPC lock: not under n.mu
	}
	for i, d := range out {
		k, err := base64.StdEncoding.DecodeString(d.PublicKey)
		if err != nil || len(k) != 32 || !slices.Contains(mine, wire.Key(k)) {
			continue
		}
		if ap := n.bind.devicePath(wire.Key(k)); ap.IsValid() {
			out[i].Endpoint = ap.String()
		}
		if t, ok := hs[wire.Key(k).String()]; ok {
			out[i].LastHandshake = t.UTC().Format(time.RFC3339)
		}
	}
	return out
}

func (n *Node) deviceInfoLocked(d member.Device) api.DeviceInfo {
	via := d.Via.String()
	if d.Via == n.id {
		via = n.mem.cert.Name
	} else if c := n.mem.store.Cert(d.Via); c != nil {
		via = c.Name
	}
	return api.DeviceInfo{Name: d.Name, FQDN: d.Name + "." + n.mem.cert.UserName + "." + DNSSuffix,
		IPv4: d.IPv4, IPv6: d.IPv6, Via: via,
		PublicKey: base64.StdEncoding.EncodeToString(d.WG[:])}
}

// publicEndpoint picks, of a via node's endpoints, the one a device
// elsewhere most likely reaches: a public IPv4 address (STUN's, a port
// mapping's, or the host's own), then a public IPv6 one, then any.
func publicEndpoint(eps []netip.AddrPort) netip.AddrPort {
	rank := func(ap netip.AddrPort) int {
		a := ap.Addr()
		public := a.IsGlobalUnicast() && !a.IsPrivate() && !member.IPv4Range.Contains(a)
		switch {
		case public && a.Is4():
			return 0
		case public:
			return 1
		case a.Is4():
			return 2
		}
		return 3
	}
	best := netip.AddrPort{}
	for _, ap := range eps {
		if !best.IsValid() || rank(ap) < rank(best) {
			best = ap
		}
	}
	return best
}

// userSubnetsLocked are the subnet routes the user's nodes offer (subnets.go),
// which a device reaches through its via node like the user's nodes do;
// default routes (exit nodes) are not among them.
func (n *Node) userSubnetsLocked() []netip.Prefix {
	var out []netip.Prefix
	add := func(ps []netip.Prefix) {
		for _, p := range ps {
			if p.Bits() > 0 && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	add(n.offeredLocked())
	for _, c := range n.mem.store.Certs() {
		if info := n.mem.store.Info(c.Node); n.mem.store.Own(c.User) && info != nil {
			add(info.Routes)
		}
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

// deviceConfigText is the wg-quick configuration of device d with private
// key priv, whose via node is via, reached at endpoint; AllowedIPs are the
// overlay's ranges and the user's subnets.
func deviceConfigText(d member.Device, priv [32]byte, via *member.Cert, endpoint netip.AddrPort, user string, subnets []netip.Prefix) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# glow device %s.%s.%s, via %s.%s\n", d.Name, user, DNSSuffix, via.Name, user)
	b.WriteString("[Interface]\n")
	fmt.Fprintf(&b, "PrivateKey = %s\n", base64.StdEncoding.EncodeToString(priv[:]))
	fmt.Fprintf(&b, "Address = %s, %s\n", netip.PrefixFrom(d.IPv4, 32), netip.PrefixFrom(d.IPv6, 128))
	fmt.Fprintf(&b, "DNS = %s, %s, %s.%s\n", glowdns.ServiceV4, glowdns.ServiceV6, user, DNSSuffix)
	b.WriteString("\n[Peer]\n")
	fmt.Fprintf(&b, "PublicKey = %s\n", base64.StdEncoding.EncodeToString(via.WG[:]))
	if endpoint.IsValid() {
		fmt.Fprintf(&b, "Endpoint = %s\n", endpoint)
	} else {
		fmt.Fprintf(&b, "# Endpoint = HOST:PORT of %s: it published none (give one with --endpoint)\n", via.Name)
	}
	allowed := []string{member.IPv4Range.String(), member.UserPrefix6(via.User[:]).String(), netip.PrefixFrom(glowdns.ServiceV6, 128).String()}
	for _, p := range subnets {
		allowed = append(allowed, p.String())
	}
	fmt.Fprintf(&b, "AllowedIPs = %s\n", strings.Join(allowed, ", "))
	b.WriteString("PersistentKeepalive = 25\n")
	return b.String()
}

// wgPublic clamps a WireGuard private key (RFC 7748) and returns its
// public key.
func wgPublic(priv *[32]byte) wire.Key {
	priv[0] &= 248
	priv[31] = priv[31]&127 | 64
	var p wire.Key
	curve25519.ScalarBaseMult((*[32]byte)(&p), priv)
	return p
}

// serveDevices adds the devices' routes to the local API.
func (n *Node) serveDevices(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/devices/add", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var ep netip.AddrPort
		if s := q.Get("endpoint"); s != "" {
			var err error
			if ep, err = netip.ParseAddrPort(s); err != nil {
				writeErr(w, api.CodeInvalidArgument, fmt.Errorf("--endpoint %q: want IP:PORT", s))
				return
			}
		}
		out, err := n.AddDevice(q.Get("name"), q.Get("via"), ep)
		if err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("POST /v1/devices/remove", func(w http.ResponseWriter, r *http.Request) {
		if err := n.RemoveDevice(r.URL.Query().Get("name")); err != nil {
			writeErr(w, api.CodeInternal, err)
			return
		}
		writeJSON(w, map[string]string{"status": "removed"})
	})
	mux.HandleFunc("GET /v1/devices", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.Devices())
	})
}
