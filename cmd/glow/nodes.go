package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"glow/overlay/api"
)

// glow nodes list|promote|demote|remove: the user's nodes and their roles.
func cmdNodes(g *globals, args []string) error {
	sub, rest, err := subcommand(g, args)
	if err != nil {
		return err
	}
	fs := newFlags(g, "nodes "+sub)
	pos, err := parse(fs, rest)
	if err != nil {
		return err
	}
	c := api.NewClient(g.state)
	if sub == "list" {
		if len(pos) > 0 {
			return usagef("unexpected argument %q", pos[0])
		}
		return nodesList(g, c)
	}
	if sub != "remove" && sub != "promote" && sub != "demote" {
		return usagef("unknown subcommand %q: want list, promote NAME, demote NAME or remove NAME", sub)
	}
	if len(pos) != 1 {
		return usagef("want exactly one node NAME")
	}
	name := pos[0]
	switch sub {
	case "remove":
		if err := c.RemoveNode(name); err != nil {
			return err
		}
		if g.json {
			return printJSON(g, map[string]string{"removed": name})
		}
		fmt.Fprintf(g.out, "%s is removed: no node of this user talks to it any more\n", name)
	case "promote":
		res, err := c.Promote(name)
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, res)
		}
		fmt.Fprintf(g.out, "%s is an admin: it holds the user key and can invite, remove, share and change the policy\n", name)
	case "demote":
		res, err := c.Demote(name)
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(g, res)
		}
		fmt.Fprintf(g.out, "%s is no longer an admin; it deletes its copy of the user key when its new certificate reaches it\n", name)
	}
	return nil
}

func nodesList(g *globals, c *api.Client) error {
	ns, err := c.Nodes()
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(g, ns)
	}
	tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NAME\tIPV4\tIPV6\tADMIN\tONLINE\tCERT EXPIRES\tENDPOINTS\n")
	for _, n := range ns {
		if n.Revoked {
			fmt.Fprintf(tw, "(removed %s)\t-\t-\t-\t-\t-\t-\n", n.ID)
			continue
		}
		name := n.Name
		if n.Self {
			name += " (this node)"
		}
		exp := n.Expires
		if t, err := time.Parse(time.RFC3339, n.Expires); err == nil {
			exp = t.Local().Format("2006-01-02 15:04")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, n.IPv4, n.IPv6, yesNo(n.Admin), yesNo(n.Online), exp, orDash(strings.Join(n.Addrs, ",")))
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
