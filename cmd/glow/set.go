package main

import (
	"flag"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"glow/overlay/api"
)

// routeFlags are the prefs flags `glow up` and `glow set` share.
type routeFlags struct {
	routes     string
	exit       bool
	exitNode   string
	allowLAN   bool
	acceptFrom string
	flagNames  map[string]bool
}

func addRouteFlags(fs *flag.FlagSet) *routeFlags {
	var f routeFlags
	fs.StringVar(&f.routes, "advertise-routes", "", "PREFIX[,PREFIX...]: offer to route these LAN prefixes for the user's nodes ('' offers none)")
	fs.BoolVar(&f.exit, "advertise-exit-node", false, "offer this node as an exit node (0.0.0.0/0 and ::/0)")
	fs.StringVar(&f.exitNode, "exit-node", "", "NODE: send this node's Internet traffic through it ('' stops)")
	fs.BoolVar(&f.allowLAN, "exit-node-allow-lan-access", false, "with --exit-node: keep the local LAN reachable directly")
	fs.StringVar(&f.acceptFrom, "accept-routes-from", "", "FRIEND[,FRIEND...]: take the subnet routes these friends' nodes offer ('' takes none; your own nodes' always)")
	return &f
}

// change returns the prefs the flags given on the command line set.
func (f *routeFlags) change(fs *flag.FlagSet) (api.PrefsChange, error) {
	var ch api.PrefsChange
	var err error
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "advertise-routes":
			rs := []netip.Prefix{}
			for s := range strings.SplitSeq(f.routes, ",") {
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				p, perr := netip.ParsePrefix(s)
				if perr != nil {
					err = usagef("--advertise-routes %q: want prefixes such as 192.168.1.0/24,fd12::/64", s)
					return
				}
				rs = append(rs, p)
			}
			ch.AdvertiseRoutes = &rs
		case "advertise-exit-node":
			ch.AdvertiseExitNode = &f.exit
		case "exit-node":
			ch.ExitNode = &f.exitNode
		case "exit-node-allow-lan-access":
			ch.ExitNodeAllowLANAccess = &f.allowLAN
		case "accept-routes-from":
			us := []string{}
			for s := range strings.SplitSeq(f.acceptFrom, ",") {
				if s = strings.TrimSpace(s); s != "" && !slices.Contains(us, s) {
					us = append(us, s)
				}
			}
			ch.AcceptRoutesFrom = &us
		}
	})
	return ch, err
}

// cmdSet changes a running node's prefs without a restart.
func cmdSet(g *globals, args []string) error {
	fs := newFlags(g, "set")
	rf := addRouteFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	ch, err := rf.change(fs)
	if err != nil {
		return err
	}
	if ch.Empty() {
		return usagef("nothing to set: give --advertise-routes, --advertise-exit-node, --exit-node, --exit-node-allow-lan-access or --accept-routes-from")
	}
	p, err := api.NewClient(g.state).Set(ch)
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(g, p)
	}
	printPrefs(g, p)
	return nil
}

func printPrefs(g *globals, p api.Prefs) {
	var rs []string
	for _, r := range p.AdvertiseRoutes {
		rs = append(rs, r.String())
	}
	if p.AdvertiseExitNode {
		rs = append(rs, "exit node (0.0.0.0/0, ::/0)")
	}
	if len(rs) == 0 {
		rs = []string{"none"}
	}
	fmt.Fprintf(g.out, "offering: %s\n", strings.Join(rs, ", "))
	switch {
	case p.ExitNode == "":
		fmt.Fprintf(g.out, "exit node: none\n")
	case p.ExitNodeAllowLANAccess:
		fmt.Fprintf(g.out, "exit node: %s (local LAN direct)\n", p.ExitNode)
	default:
		fmt.Fprintf(g.out, "exit node: %s\n", p.ExitNode)
	}
	if len(p.AcceptRoutesFrom) > 0 {
		fmt.Fprintf(g.out, "routes taken from friends: %s\n", strings.Join(p.AcceptRoutesFrom, ", "))
	}
}

func noneIfEmpty(ss []string) string {
	if len(ss) == 0 {
		return "none"
	}
	return strings.Join(ss, ", ")
}
