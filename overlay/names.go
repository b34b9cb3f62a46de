package overlay

import (
	"context"
	"errors"
	"net/netip"

	glowdns "glow/dns"
	"glow/overlay/member"
)

// MagicDNS wiring. The resolver (package dns) answers NODE.USER.glow from a
// name table the node refreshes whenever a certificate changes; it listens
// on dns.ServiceV4 and dns.ServiceV6, which the kernel TUN carries as extra
// addresses, and forwards other names to the resolvers the system had. With
// a userspace stack there is no system resolver to serve: the SOCKS5 proxy
// resolves glow names itself (ResolveName).

// DNSSuffix is the domain under which nodes are named.
const DNSSuffix = "glow"

func (n *Node) osDNS() glowdns.OSConfig {
	return glowdns.OSConfig{
		StateDir:      n.state.Dir,
		Interface:     n.tunName(),
		SearchDomains: []string{n.mem.cert.UserName + "." + DNSSuffix},
		Suffix:        DNSSuffix,
		Logf:          n.logf,
	}
}

func (n *Node) tunName() string {
	if n.cfg.TUNName == "" {
		return "glow0"
	}
	return n.cfg.TUNName
}

// startDNS points the system at glow's resolver (unless NoDNS) and serves it.
func (n *Node) startDNS() error {
	n.names = &glowdns.Table{}
	n.mu.Lock()
	n.updateNamesLocked()
	n.mu.Unlock()
	if n.cfg.Userspace {
		return nil
	}
	// The resolver has a context of its own: the teardown gives the system
	// its resolver back first, then stops glow's (see Start).
	ctx, stop := context.WithCancel(context.Background())
	n.atClose(func() {
		n.stopDNS()
		stop()
	})
	var upstreams []netip.AddrPort
	if n.cfg.NoDNS {
		upstreams = glowdns.ReadUpstreams("/etc/resolv.conf")
	} else {
		ups, err := glowdns.Apply(n.osDNS())
		switch {
		case errors.Is(err, glowdns.ErrManagedElsewhere):
			n.logf("glow: %v; leaving the system resolver to it", err)
			upstreams = glowdns.ReadUpstreams("/etc/resolv.conf")
		case err != nil:
			return err
		default:
			upstreams = ups
			n.dnsApplied = true
		}
	}
	srv, err := glowdns.New(glowdns.Config{
		Suffix: DNSSuffix, SelfUser: n.mem.cert.UserName, Names: n.names,
		Upstreams: upstreams, Logf: n.logf,
		Prefixes: []netip.Prefix{member.IPv4Range, member.UserPrefix6(n.mem.cert.User[:])},
	})
	if err != nil {
		return err
	}
	n.dnsSrv.Store(srv)
	n.mu.Lock()
	n.exitDNSLocked() // an exit node chosen: its resolver from the first query (exitdns.go)
	n.mu.Unlock()
	addrs := []netip.AddrPort{
		netip.AddrPortFrom(glowdns.ServiceV4, 53),
		netip.AddrPortFrom(glowdns.ServiceV6, 53),
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := srv.ListenAndServe(ctx, addrs); err != nil && ctx.Err() == nil {
			n.logf("glow: DNS resolver: %v", err)
		}
	}()
	n.logf("glow: DNS: %s.%s names on %v; forwarding others to %v", "NODE", n.mem.cert.UserName+"."+DNSSuffix, addrs, upstreams)
	return nil
}

// stopDNS gives the system its resolver configuration back.
func (n *Node) stopDNS() {
	if n.dnsApplied {
		if err := glowdns.Restore(n.osDNS()); err != nil {
			n.logf("glow: restoring DNS settings: %v", err)
		}
	}
}

// RepairDNS restores the system resolver configuration a crashed daemon of
// stateDir left behind. It does nothing if there is nothing to restore.
func RepairDNS(stateDir string) error {
	return glowdns.Restore(glowdns.OSConfig{StateDir: stateDir})
}

// updateNamesLocked rebuilds the name table from the certificates held.
func (n *Node) updateNamesLocked() {
	if n.names == nil {
		return
	}
	var hosts []glowdns.Host
	for _, c := range n.mem.store.Certs() {
		// A friend's node goes by the name our friend list gives its user
		// (never ours), and only with the addresses routed to it (shadow.go).
		h := glowdns.Host{User: n.userNameLocked(c), Node: c.Name}
		for _, a := range n.routedLocked(c) {
			if a.Is4() {
				h.V4 = a
			} else {
				h.V6 = a
			}
		}
		hosts = append(hosts, h)
	}
	hosts = append(hosts, n.deviceHostsLocked()...) // devices.go
	n.names.Replace(hosts)
}
