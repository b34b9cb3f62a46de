package overlay

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"glow/nat"
	"glow/overlay/api"
	"glow/overlay/member"
)

// NAT traversal wiring. Every node answers STUN on its glow port
// (handleSTUNLocked) and learns its own public address two ways: from the
// "seen" address in every pong (free, continuous) and from STUN probes of
// public peers and configured servers (glow netcheck, which also tells
// endpoint-independent from endpoint-dependent mapping). Port mapping
// (UPnP-IGD, NAT-PMP, PCP) adds a mapped endpoint. All of them go into the
// node's signed NodeInfo, so peers learn them by gossip and probe them at
// once from both sides: that simultaneous probing is the hole punch.

// isPublic reports whether a is an address other networks can reach.
func isPublic(a netip.Addr) bool {
	return a.IsGlobalUnicast() && !a.IsPrivate() && !member.IPv4Range.Contains(a)
}

// stunServersLocked lists configured STUN servers and public peers' direct addresses.
func (n *Node) stunServersLocked() ([]netip.AddrPort, []NetcheckRelay) {
	servers := slices.Clone(n.stunServers)
	var relays []NetcheckRelay
	for _, p := range n.paths.peers {
		if p.active.IsValid() && isPublic(p.active.Addr()) {
			servers = append(servers, p.active)
			relays = append(relays, NetcheckRelay{Name: n.fqdnLocked(p.cert), Addr: p.active.String(), RTTms: ms(p.rtt)})
		}
	}
	return servers, relays
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Netcheck probes STUN servers (configured, and public peers) and the
// gateway's port mapping services.
func (n *Node) Netcheck(ctx context.Context) (Netcheck, error) {
	n.mu.Lock()
	servers, relays := n.stunServersLocked()
	clash := n.portClashLocked()
	n.mu.Unlock()
	nc := Netcheck{Mapping: "unknown", Reflexive: []string{}, Servers: []NetcheckServer{}, Relays: relays, LocalPort: n.Port(), PortClash: clash}
	if nc.Relays == nil {
		nc.Relays = []NetcheckRelay{}
	}
	if len(servers) > 0 {
		rep, err := n.stun.Probe(ctx, servers)
		if err == nil {
			for _, s := range rep.Servers {
				ns := NetcheckServer{Server: s.Server.String(), LatencyMS: ms(s.Latency)}
				if s.Err != nil {
					ns.Error = s.Err.Error()
				} else {
					ns.Reflexive = s.Reflexive.String()
				}
				nc.Servers = append(nc.Servers, ns)
			}
			for _, r := range rep.Reflexive {
				nc.Reflexive = append(nc.Reflexive, r.String())
			}
			switch {
			case rep.MappingVaries:
				nc.Mapping = "endpoint-dependent"
			case rep.EndpointIndependent:
				nc.Mapping = "endpoint-independent"
			}
		}
	}
	if n.portmap != nil {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		pm, _ := n.portmap.Probe(pctx)
		nc.PortMap = api.PortMapProbe(pm)
		cancel()
		n.mu.Lock()
		if n.ports.mapped.IsValid() {
			nc.Mapped = n.ports.mapped.String()
		}
		n.mu.Unlock()
	}
	return nc, nil
}

// newPortMapper is nat.NewPortMapper; tests replace it (start_test.go).
var newPortMapper = nat.NewPortMapper

// startNAT sets up the STUN client and, on the host's real network, port mapping.
func (n *Node) startNAT() error {
	c, err := nat.NewClient(nat.ClientConfig{Send: func(b []byte, to netip.AddrPort) error { return n.bind.SendTo(b, to) }})
	if err != nil {
		return err
	}
	n.stun = c
	for _, s := range n.cfg.STUNServers {
		ap, err := resolvePeer(s)
		if err != nil {
			return err
		}
		n.stunServers = append(n.stunServers, ap)
	}
	if n.cfg.ListenPacket != nil || n.cfg.NoPortMap {
		return nil
	}
	pm, err := newPortMapper(nat.PortMapConfig{
		LocalPort: n.Port(),
		Logf:      func(string, ...any) {},
		OnChange: func(m netip.AddrPort) {
			n.mu.Lock()
			if m != n.ports.mapped {
				n.logf("glow: port mapping: %v", m)
				n.ports.mapped, n.mem.infoDirty = m, true
				n.dueLocked(time.Now())
			}
			n.mu.Unlock()
		},
	})
	if err != nil {
		return err
	}
	n.portmap = pm
	n.atClose(func() { pm.Close() }) // releases the mapping at the gateway
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		// Ask once at start (the mapper renews it); a network without a
		// mapping service answers nothing and that is fine.
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		defer cancel()
		pm.Mapping(ctx)
	}()
	return nil
}
