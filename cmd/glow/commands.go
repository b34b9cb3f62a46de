package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"glow/overlay"
	"glow/overlay/api"
)

var version = "dev" // set by the Makefile with -ldflags

func printJSON(g *globals, v any) error {
	enc := json.NewEncoder(g.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdDown(g *globals, args []string) error {
	fs := newFlags(g, "down")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	c := api.NewClient(g.state)
	pid := daemonPid(g.state)
	if err := c.Down(); err != nil {
		if errors.Is(err, api.ErrNotRunning) {
			// A crashed daemon may have left the resolver pointed at it,
			// and its firewall table behind.
			if rerr := overlay.RepairDNS(g.state); rerr != nil {
				return fmt.Errorf("glow is not running, and restoring DNS settings failed: %w", rerr)
			}
			// Only root installs the table (a kernel TUN), and only root
			// may look at it.
			removed, ferr := false, error(nil)
			if os.Geteuid() == 0 {
				removed, ferr = overlay.RepairFirewall()
				rr, rerr := overlay.RepairRouting(g.state) // router table, exit rules, sysctls
				removed, ferr = removed || rr, errors.Join(ferr, rerr)
			}
			if ferr != nil {
				return fmt.Errorf("glow is not running, and removing its stale firewall table failed: %w", ferr)
			}
			if g.json {
				return printJSON(g, map[string]any{"running": false, "stopped": false, "firewall_removed": removed})
			}
			if removed {
				fmt.Fprintln(g.out, "glow is not running (DNS settings checked, stale firewall table removed)")
				return nil
			}
			fmt.Fprintln(g.out, "glow is not running (DNS settings checked)")
			return nil
		}
		return err
	}
	// Wait until the daemon has exited: only then are the interface gone
	// and the resolver settings back (bounded).
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		_, err := c.Status()
		if err != nil && !alive(pid) {
			if g.json {
				return printJSON(g, map[string]any{"running": false, "stopped": true})
			}
			fmt.Fprintln(g.out, "glow is down")
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the daemon did not stop within 20s (see %s/glow.log)", g.state)
}

func cmdStatus(g *globals, args []string) error {
	fs := newFlags(g, "status")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	s, err := api.NewClient(g.state).Status()
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(g, s)
	}
	tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NAME\tUSER\tIPV4\tIPV6\tONLINE\tPATH\tRTT\tCERT EXPIRES\n")
	fmt.Fprintf(tw, "%s (this node)\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Self.Name, s.Self.User, s.Self.IPv4, s.Self.IPv6, "yes", "-", "-", s.Self.Expires)
	for _, p := range s.Peers {
		online, path, rtt := "no", "-", "-"
		if p.Online {
			online = "yes"
			rtt = fmt.Sprintf("%.1fms", p.RTTms)
		}
		switch p.Path {
		case "direct":
			path = "direct " + p.Endpoint
		case "relay":
			path = "relay via " + strings.Join(p.Via, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.User, p.IPv4, p.IPv6, online, path, rtt, p.Expires)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range s.Peers {
		if len(p.Offered) > 0 {
			fmt.Fprintf(g.out, "%s offers %s; routed through it: %s\n", p.Name, strings.Join(p.Offered, ", "), noneIfEmpty(p.Routes))
		}
	}
	if len(s.Self.Offered) > 0 {
		fmt.Fprintf(g.out, "this node offers %s\n", strings.Join(s.Self.Offered, ", "))
	}
	if s.Self.ExitNode != "" {
		state := "in use"
		if !s.Self.ExitNodeInUse {
			state = "not reachable or not offering: Internet traffic blocked"
		}
		fmt.Fprintf(g.out, "exit node: %s (%s)\n", s.Self.ExitNode, state)
	}
	if s.Self.Warning != "" {
		fmt.Fprintf(g.out, "WARNING: %s\n", s.Self.Warning)
	}
	for _, c := range s.Conflicts {
		fmt.Fprintf(g.out, "conflict: %s claims %s, held by %s: not routed to %s (reach it at its other address)\n",
			c.Node, c.Addr, c.Holder, c.Node)
	}
	return nil
}

func cmdPing(g *globals, args []string) error {
	fs := newFlags(g, "ping")
	count := fs.Int("c", 4, "number of pings")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one TARGET (a node name or an overlay address)")
	}
	if *count < 1 || *count > 10000 {
		return usagef("-c %d: want 1 to 10000", *count)
	}
	c := api.NewClient(g.state)
	ok := 0
	var lastErr error
	for i := 0; i < *count; i++ {
		if i > 0 {
			time.Sleep(time.Second)
		}
		r, err := c.Ping(pos[0])
		if err != nil {
			lastErr = err
			if g.json {
				printJSON(g, api.ErrorBody{Error: err.Error(), Code: api.CodeOf(err)})
			} else {
				fmt.Fprintf(g.out, "no reply from %s: %v\n", pos[0], err)
			}
			// An unknown peer or a stopped daemon stays so; no reply or no
			// path yet may change by the next ping.
			if errors.Is(err, api.ErrNoSuchPeer) || errors.Is(err, api.ErrNotRunning) {
				return err
			}
			continue
		}
		ok++
		if g.json {
			printJSON(g, r)
			continue
		}
		how := r.Path + " " + r.Endpoint
		if r.Path == "relay" {
			how = "relay via " + strings.Join(r.Via, ",")
		}
		fmt.Fprintf(g.out, "pong from %s via %s in %.2fms\n", r.Peer, how, float64(r.RTT.Microseconds())/1000)
	}
	if ok == 0 {
		return fmt.Errorf("no reply from %s: %v", pos[0], lastErr)
	}
	return nil
}

func cmdIP(g *globals, args []string) error {
	fs := newFlags(g, "ip")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("want at most one TARGET")
	}
	target := ""
	if len(pos) == 1 {
		target = pos[0]
	}
	addrs, err := api.NewClient(g.state).IP(target)
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(g, addrs)
	}
	for _, a := range addrs {
		fmt.Fprintln(g.out, a)
	}
	return nil
}

func cmdInvite(g *globals, args []string) error {
	fs := newFlags(g, "invite")
	ttl := fs.Duration("ttl", time.Hour, "how long the code stays valid")
	uses := fs.Int("uses", 1, "how many devices may join with it")
	qr := fs.Bool("qr", false, "also print the code as a terminal QR code")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *ttl <= 0 {
		return usagef("--ttl must be positive")
	}
	if *uses < 1 {
		return usagef("--uses must be at least 1")
	}
	code, err := api.NewClient(g.state).Invite(*ttl, *uses)
	if err != nil {
		return err
	}
	if g.json {
		return printCodeJSON(g, code, *qr, map[string]any{"ttl": ttl.String(), "uses": *uses})
	}
	fmt.Fprintf(os.Stderr, "On the new device run:  glow up --join CODE\n(valid %v, for %d device(s))\n", *ttl, *uses)
	return printCode(g, code, *qr)
}

func cmdVersion(g *globals, args []string) error {
	fs := newFlags(g, "version")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	info := map[string]string{"version": version}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info["go"] = bi.GoVersion
		for _, d := range bi.Deps {
			if d.Path == "golang.zx2c4.com/wireguard" {
				info["wireguard-go"] = d.Version
			}
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				info["commit"] = s.Value
			}
		}
	}
	if g.json {
		return printJSON(g, info)
	}
	fmt.Fprintf(g.out, "glow %s (%s, wireguard-go %s)\n", info["version"], info["go"], info["wireguard-go"])
	return nil
}

func cmdNetcheck(g *globals, args []string) error {
	fs := newFlags(g, "netcheck")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	nc, err := api.NewClient(g.state).Netcheck()
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(g, nc)
	}
	fmt.Fprintf(g.out, "UDP port:         %d\n", nc.LocalPort)
	if nc.PortClash != "" {
		fmt.Fprintf(g.out, "Port clash:       %s\n", nc.PortClash)
	}
	fmt.Fprintf(g.out, "NAT mapping:      %s\n", nc.Mapping)
	fmt.Fprintf(g.out, "Public endpoints: %s\n", orNone(strings.Join(nc.Reflexive, ", ")))
	fmt.Fprintf(g.out, "Port mapping:     %s", nc.PortMap)
	if nc.Mapped != "" {
		fmt.Fprintf(g.out, " (mapped %s)", nc.Mapped)
	}
	fmt.Fprintln(g.out)
	tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "STUN SERVER\tSEEN AS\tLATENCY\n")
	for _, s := range nc.Servers {
		seen := s.Reflexive
		if s.Error != "" {
			seen = "error: " + s.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1fms\n", s.Server, seen, s.LatencyMS)
	}
	tw.Flush()
	if len(nc.Relays) > 0 {
		fmt.Fprintln(g.out, "Nearest relays (public peers):")
		for _, r := range nc.Relays {
			fmt.Fprintf(g.out, "  %s at %s, %.1fms\n", r.Name, r.Addr, r.RTTms)
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none seen"
	}
	return s
}

// daemonPid reads the daemon's pid from STATE/glow.pid (0 if unknown).
func daemonPid(state string) int {
	b, err := os.ReadFile(state + "/glow.pid")
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}

// alive reports whether process pid still runs (a zombie does not).
func alive(pid int) bool {
	if pid == 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}
