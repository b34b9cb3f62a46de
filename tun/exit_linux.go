package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"

	"glow/internal/underlay"
)

// Exit node routing (SetExit), after Tailscale's wgengine/router: glow's
// own routing table and four ip rules, for IPv4 and IPv6 alike.
//
//	5210  fwmark 0x80000/0xff0000 lookup main         glow's own sockets (underlay.Mark)
//	5230  fwmark 0x80000/0xff0000 lookup default
//	5250  fwmark 0x80000/0xff0000 unreachable         never into the overlay
//	5270  lookup ExitTable                            everything else
//
// ExitTable holds a default route through the TUN (and, with the local LAN
// allowed, "throw" routes for the prefixes of the host's other interfaces,
// which fall through to the main table). Packets the exit node does not
// take (it is unreachable, or offers no ::/0) enter the TUN and are dropped
// there: nothing leaks to the local Internet while the rules are in place.
const (
	ExitTable     = 5263 // glow's routing table (Tailscale uses 52)
	prioMarkMain  = 5210
	prioMarkDef   = 5230
	prioMarkUnrch = 5250
	prioTable     = 5270
	markMask      = 0xff0000
)

// exitRules are the rules above for family fam (AF_INET or AF_INET6).
func exitRules(fam uint8) []rule {
	mk := func(prio, table uint32, mark bool, action uint8) rule {
		r := rule{Family: fam, Priority: prio, Table: table, Action: action}
		if mark {
			r.Mark, r.Mask = underlay.Mark, markMask
		}
		return r
	}
	return []rule{
		mk(prioMarkMain, unix.RT_TABLE_MAIN, true, 0),
		mk(prioMarkDef, unix.RT_TABLE_DEFAULT, true, 0),
		mk(prioMarkUnrch, 0, true, unix.FR_ACT_UNREACHABLE),
		mk(prioTable, ExitTable, false, 0),
	}
}

// families are the address families of glow's routes and rules.
var families = []uint8{unix.AF_INET, unix.AF_INET6}

// SetExit sends every packet not from glow's own sockets through the
// interface (on), or stops (off): see ExitTable. With allowLAN the
// prefixes of the host's other interfaces (their connected routes, as
// they are now) stay out of the tunnel. srcs are the node's overlay
// addresses, the source of what goes into the tunnel. It returns
// net.ErrClosed after Close.
func (k *Kernel) SetExit(on, allowLAN bool, srcs ...netip.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return net.ErrClosed
	}
	return k.setExitLocked(on, allowLAN, srcs)
}

func (k *Kernel) setExitLocked(on, allowLAN bool, srcs []netip.Addr) error {
	if !on {
		return k.clearExitLocked()
	}
	// Turning on, or changing the LAN routes, never removes the rules or
	// the default routes first: there is no instant without them.
	var lan []netip.Prefix
	if allowLAN {
		var err error
		if lan, err = k.localPrefixesLocked(); err != nil {
			return err
		}
	}
	for _, fam := range []struct {
		def netip.Prefix
		v4  bool
	}{{netip.MustParsePrefix("0.0.0.0/0"), true}, {netip.MustParsePrefix("::/0"), false}} {
		r := route{Dst: fam.def, Link: k.index, Table: ExitTable, Scope: unix.RT_SCOPE_LINK, Protocol: rtprotGlowSubnet}
		for _, s := range srcs {
			if s.Is4() == fam.v4 {
				r.Src = s
			}
		}
		if err := k.nl.routeReplace(r); err != nil {
			return fmt.Errorf("tun: %s: exit route %v: %w", k.name, fam.def, err)
		}
	}
	var throws []route
	for _, p := range lan {
		throws = append(throws, route{Dst: p, Table: ExitTable, Type: unix.RTN_THROW, Protocol: rtprotGlowSubnet})
	}
	if err := k.nl.syncRoutes(func(r route) bool { return r.Table == ExitTable && r.Type == unix.RTN_THROW }, throws); err != nil {
		return fmt.Errorf("tun: %s: LAN routes: %w", k.name, err)
	}
	for _, fam := range families {
		for _, r := range exitRules(fam) {
			if err := k.nl.ruleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("tun: %s: rule %d: %w", k.name, r.Priority, err)
			}
		}
	}
	return nil
}

// clearExitLocked removes glow's exit rules (duplicates too) and every
// route of its table, whoever left them (a crashed daemon, or this one).
func (k *Kernel) clearExitLocked() error {
	var errs []error
	for _, fam := range families {
		for _, r := range exitRules(fam) {
			for range 16 { // duplicates too, boundedly
				if err := k.nl.ruleDel(r); err != nil {
					if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EAFNOSUPPORT) {
						errs = append(errs, fmt.Errorf("remove rule %d: %w", r.Priority, err))
					}
					break
				}
			}
		}
	}
	cur, err := k.nl.routes(func(r route) bool { return r.Table == ExitTable })
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range cur {
		if err := k.nl.routeDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove route %v: %w", r.Dst, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tun: %s: exit routes: %w", k.name, err)
	}
	return nil
}

// localPrefixesLocked are the prefixes of the connected routes of the
// host's other interfaces (not link-local), for --exit-node-allow-lan-access.
func (k *Kernel) localPrefixesLocked() ([]netip.Prefix, error) {
	rs, err := k.nl.routes(func(r route) bool {
		connected := !r.Gateway && (r.Scope == unix.RT_SCOPE_LINK || r.Dst.Addr().Is6() && r.Protocol == unix.RTPROT_KERNEL)
		p := r.Dst
		return r.Table == unix.RT_TABLE_MAIN && connected && r.Link != k.index &&
			p.Bits() != 0 && !p.Addr().IsLinkLocalUnicast() && !p.Addr().IsMulticast()
	})
	if err != nil {
		return nil, fmt.Errorf("tun: list routes: %w", err)
	}
	var out []netip.Prefix
	for _, r := range rs {
		out = append(out, r.Dst)
	}
	return out, nil
}
