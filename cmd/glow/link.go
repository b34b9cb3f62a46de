package main

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"glow/link"
	"glow/overlay/api"
)

func cmdLink(g *globals, args []string) error {
	sub, rest, err := subcommand(g, args)
	if err != nil {
		return err
	}
	c := api.NewClient(g.state)
	fs := newFlags(g, "link "+sub)
	pos, err := parse(fs, rest)
	if err != nil {
		return err
	}
	switch sub {
	case "add", "remove":
		if len(pos) != 1 {
			return usagef("want exactly one URL: udp://HOST:PORT, tcp://HOST:PORT, ws://HOST:PORT/PATH, wss://..., ssh://USER@HOST[?glow=PATH&state=DIR]")
		}
		if _, err := link.ParseURL(pos[0]); err != nil {
			return usagef("%v", err)
		}
		if sub == "add" {
			if err := c.AddLink(pos[0]); err != nil {
				return err
			}
			if g.json {
				return printJSON(g, map[string]string{"url": pos[0], "status": "added"})
			}
			fmt.Fprintf(g.out, "link %s added; it comes up in the background ('glow link list')\n", pos[0])
			return nil
		}
		if err := c.RemoveLink(pos[0]); err != nil {
			return err
		}
		if g.json {
			return printJSON(g, map[string]string{"url": pos[0], "status": "removed"})
		}
		fmt.Fprintf(g.out, "link %s removed\n", pos[0])
		return nil
	case "list":
		ls, err := c.Links()
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, ls)
		}
		tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "LINK\tPEER\tUP\tCARRIES TRAFFIC\tSTATUS\n")
		for _, l := range ls {
			name := l.URL
			if name == "" {
				name = l.Via
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\n", name, orDash(l.Peer), l.Up, l.InUse, l.Status)
		}
		return tw.Flush()
	case "stdio":
		// The serving end of ssh://: relay stdin/stdout to the daemon.
		if g.json {
			return usagef("--json: link stdio carries a link's bytes on stdin and stdout, never JSON")
		}
		conn, err := c.LinkStdio()
		if err != nil {
			return err
		}
		done := make(chan struct{}, 2)
		go func() { io.Copy(conn, os.Stdin); done <- struct{}{} }()
		go func() { io.Copy(os.Stdout, conn); done <- struct{}{} }()
		<-done
		conn.Close()
		return nil
	}
	return usagef("unknown subcommand %q: want add, remove, list or stdio", sub)
}
