package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"glow/overlay/api"
	"glow/overlay/member"
)

func cmdFriend(g *globals, args []string) error {
	sub, rest, err := subcommand(g, args)
	if err != nil {
		return usagef("want invite, add CODE, list or remove NAME")
	}
	args = append([]string{sub}, rest...)
	c := api.NewClient(g.state)
	fs := newFlags(g, "friend "+args[0])
	switch args[0] {
	case "invite":
		ttl := fs.Duration("ttl", 24*time.Hour, "how long the code stays valid")
		qr := fs.Bool("qr", false, "also print the code as a terminal QR code")
		if pos, err := parse(fs, args[1:]); err != nil {
			return err
		} else if len(pos) > 0 {
			return usagef("unexpected argument %q", pos[0])
		}
		code, err := c.FriendInvite(*ttl)
		if err != nil {
			return err
		}
		if g.json {
			return printCodeJSON(g, code, *qr, map[string]any{"ttl": ttl.String()})
		}
		fmt.Fprintf(os.Stderr, "Give this code to your friend; on their admin node they run:  glow friend add CODE\n")
		return printCode(g, code, *qr)
	case "add":
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("want exactly one CODE")
		}
		if _, err := member.ParseInvite(pos[0]); err != nil {
			return usagef("%v", err)
		}
		name, err := c.FriendAdd(pos[0])
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, map[string]string{"friend": name})
		}
		fmt.Fprintf(g.out, "%s is now a friend. They reach nothing of yours until you share it: glow share NODE:PORT --with %s\n", name, name)
		return nil
	case "list":
		if pos, err := parse(fs, args[1:]); err != nil {
			return err
		} else if len(pos) > 0 {
			return usagef("unexpected argument %q", pos[0])
		}
		list, err := c.Friends()
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, list)
		}
		tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "FRIEND\tTHEIR NODES\tMAY REACH\n")
		for _, f := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, orDash(strings.Join(f.Nodes, ",")), orDash(strings.Join(f.Shared, " ")))
		}
		return tw.Flush()
	case "remove":
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("want exactly one friend NAME")
		}
		if err := c.FriendRemove(pos[0]); err != nil {
			return err
		}
		if g.json {
			return printJSON(g, map[string]string{"removed": pos[0]})
		}
		fmt.Fprintf(g.out, "%s is no longer a friend\n", pos[0])
		return nil
	}
	return usagef("unknown subcommand %q: want invite, add, list or remove", args[0])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdShare(undo bool) func(g *globals, args []string) error {
	return func(g *globals, args []string) error {
		name := "share"
		if undo {
			name = "unshare"
		}
		fs := newFlags(g, name)
		with := fs.String("with", "", "the friend (user name)")
		route := fs.String("route", "", "PREFIX: share forwarding to this prefix through NODE (a subnet it offers)")
		exit := fs.Bool("exit", false, "share NODE as an exit node (the public Internet through it)")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 || *with == "" {
			return usagef("want NODE:PORT[/tcp|/udp] --with USER, NODE --route PREFIX --with USER, or NODE --exit --with USER")
		}
		switch {
		case *route != "" && *exit:
			return usagef("give --route or --exit, not both")
		case *route != "":
			pos[0] = "route " + pos[0] + " " + *route
		case *exit:
			pos[0] = "exit " + pos[0]
		}
		v, changed, err := api.NewClient(g.state).Share(pos[0], *with, undo)
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, map[string]any{"target": pos[0], "user": *with, "shared": !undo, "changed": changed, "version": v})
		}
		switch {
		case !changed && undo:
			fmt.Fprintf(g.out, "%s was not shared with %s; nothing changed\n", pos[0], *with)
		case !changed:
			fmt.Fprintf(g.out, "%s is already shared with %s\n", pos[0], *with)
		case undo:
			fmt.Fprintf(g.out, "%s no longer reaches %s (policy version %d); open connections are cut\n", *with, pos[0], v)
		default:
			fmt.Fprintf(g.out, "%s may now reach %s (policy version %d)\n", *with, pos[0], v)
		}
		return nil
	}
}

func cmdPolicy(g *globals, args []string) error {
	sub, rest, err := subcommand(g, args)
	if err != nil {
		return usagef("want show, apply FILE, history or rollback VERSION")
	}
	args = append([]string{sub}, rest...)
	c := api.NewClient(g.state)
	fs := newFlags(g, "policy "+args[0])
	base := fs.String("base", "", "with apply: the version FILE was written from; refused if the policy changed since")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	switch args[0] {
	case "show":
		p, err := c.Policy()
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, p)
		}
		fmt.Fprintf(os.Stderr, "# policy version %d\n", p.Version)
		fmt.Fprint(g.out, p.Text)
		return nil
	case "apply":
		if len(pos) != 1 {
			return usagef("want exactly one FILE (or - for standard input)")
		}
		var text []byte
		if pos[0] == "-" {
			text, err = readAll(os.Stdin)
		} else {
			text, err = os.ReadFile(pos[0])
		}
		if err != nil {
			return err
		}
		var p api.PolicyInfo
		if *base != "" {
			v, perr := strconv.ParseUint(*base, 10, 64)
			if perr != nil {
				return usagef("--base %q: want a version number", *base)
			}
			p, err = c.ApplyPolicyOn(text, v)
		} else {
			p, err = c.ApplyPolicy(text)
		}
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, p)
		}
		fmt.Fprintf(g.out, "policy version %d applied\n", p.Version)
		return nil
	case "history":
		h, err := c.PolicyHistory()
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, h)
		}
		tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "VERSION\tRULES\tTIME\t\n")
		for _, v := range h {
			cur := ""
			if v.Current {
				cur = "(in force)"
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\n", v.Version, v.Rules, orDash(v.Time), cur)
		}
		return tw.Flush()
	case "rollback":
		if len(pos) != 1 {
			return usagef("want exactly one VERSION")
		}
		v, err := strconv.ParseUint(pos[0], 10, 64)
		if err != nil {
			return usagef("VERSION %q: want a number from 'glow policy history'", pos[0])
		}
		p, err := c.RollbackPolicy(v)
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, map[string]any{"from_version": v, "version": p.Version, "text": p.Text})
		}
		fmt.Fprintf(g.out, "policy of version %d is in force again, as version %d\n", v, p.Version)
		return nil
	}
	return usagef("unknown subcommand %q: want show, apply, history or rollback", args[0])
}

func readAll(f *os.File) ([]byte, error) {
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			if b.Len() > 0 || n == 0 {
				return []byte(b.String()), nil
			}
			return nil, err
		}
		if b.Len() > 2<<20 {
			return nil, fmt.Errorf("policy over 2 MiB")
		}
	}
}
