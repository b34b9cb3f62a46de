package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"glow/internal/qrterm"
	"glow/overlay/api"
)

// cmdDevice is glow device add|list|remove: plain WireGuard devices of the
// user, reached through a via node (overlay/devices.go).
func cmdDevice(g *globals, args []string) error {
	sub, rest, err := subcommand(g, args)
	if err != nil {
		return err
	}
	fs := newFlags(g, "device "+sub)
	c := api.NewClient(g.state)
	switch sub {
	case "add":
		via := fs.String("via", "", "the node the device connects to (default: this node)")
		endpoint := fs.String("endpoint", "", "IP:PORT where the device reaches the via node (default: its public endpoint)")
		qr := fs.Bool("qr", false, "also print the configuration as a QR code (on stderr), for a phone's WireGuard app")
		pos, err := parse(fs, rest)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("want exactly one device NAME")
		}
		out, err := c.AddDevice(pos[0], *via, *endpoint)
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, out)
		}
		fmt.Fprintf(os.Stderr, "Device %s (%v, %v) goes through %s. Its configuration follows; it holds the private key, which is kept nowhere else.\n",
			out.Device.FQDN, out.Device.IPv4, out.Device.IPv6, out.Device.Via)
		fmt.Fprint(g.out, out.Config)
		if *qr {
			code, err := qrterm.Render(out.Config)
			if err != nil {
				return err
			}
			fmt.Fprint(os.Stderr, "\n"+code)
		}
		return nil
	case "list":
		pos, err := parse(fs, rest)
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return usagef("unexpected argument %q", pos[0])
		}
		list, err := c.Devices()
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, list)
		}
		tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "DEVICE\tIPV4\tIPV6\tVIA\tENDPOINT\tLAST HANDSHAKE\tPUBLIC KEY\n")
		for _, d := range list {
			fmt.Fprintf(tw, "%s\t%v\t%v\t%s\t%s\t%s\t%s\n", d.FQDN, d.IPv4, d.IPv6, d.Via, orDash(d.Endpoint), orDash(d.LastHandshake), d.PublicKey)
		}
		return tw.Flush()
	case "remove":
		pos, err := parse(fs, rest)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("want exactly one device NAME")
		}
		if err := c.RemoveDevice(pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(g.out, "%s is removed: its via node drops it, and no node routes to it any more\n", pos[0])
		return nil
	}
	return usagef("want add NAME [--via NODE] [--qr], list or remove NAME")
}
