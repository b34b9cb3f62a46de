// Package main is glow, the daemon and its command line: `glow up` joins this
// machine to the user's private network, the other commands ask the running
// daemon (over STATE/glow.sock) what it knows. See CLI.md for the contract
// and README.md for a walk through.
//
// This package only parses flags and prints; the node lives in package overlay.
// The runtime re-reads the CPU affinity and cgroup limit every second to
// update GOMAXPROCS (Go 1.25's default): a wake-up an idle daemon does not
// need. GOMAXPROCS is still taken from them at start (overlay/doc.go).
//
//go:debug updatemaxprocs=0
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"glow/overlay/api"
)

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

type command struct {
	name, args, help string
	run              func(g *globals, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"up", "[flags]", "bring this node up (creates a user on first run, or joins one with --join)", cmdUp},
		{"set", "[--advertise-routes P,..] [--advertise-exit-node] [--exit-node NODE] [--accept-routes-from FRIEND,..]", "change a running node: routes it offers, the exit node it uses", cmdSet},
		{"down", "", "stop the daemon and remove the interface", cmdDown},
		{"status", "[--json]", "this node and its peers", cmdStatus},
		{"ping", "TARGET [-c N]", "ping a peer at the overlay level", cmdPing},
		{"netcheck", "[--json]", "NAT behaviour, public endpoints, port mapping, nearest relays", cmdNetcheck},
		{"ip", "[TARGET]", "overlay addresses of this node or a peer, IPv4 first", cmdIP},
		{"invite", "[--ttl D] [--uses N] [--qr]", "print a join code for another device of this user", cmdInvite},
		{"friend", "invite [--qr]|add CODE|list|remove NAME", "friends: other users who may reach what you share", cmdFriend},
		{"share", "NODE:PORT[/PROTO] | NODE --route PREFIX | NODE --exit  --with USER", "let a friend reach one service, a subnet or an exit node", cmdShare(false)},
		{"unshare", "NODE:PORT[/PROTO] | NODE --route PREFIX | NODE --exit  --with USER", "take a share back; open flows are cut", cmdShare(true)},
		{"policy", "show|apply FILE|history|rollback V", "the whole policy", cmdPolicy},
		{"nodes", "list|promote NAME|demote NAME|remove NAME", "the user's nodes; make one an admin or not; revoke one", cmdNodes},
		{"device", "add NAME [--via NODE] [--qr]|list|remove NAME", "plain WireGuard devices (a phone, a router) reached through a node", cmdDevice},
		{"user", "export FILE [--passphrase-file F]", "back up the user key, sealed with a passphrase (glow up --restore FILE)", cmdUser},
		{"link", "add URL|remove URL|list|stdio", "links to neighbours over UDP, TCP, WebSocket, ssh", cmdLink},
		{"web", "[--listen IP:PORT]", "a live map of the mesh in the browser (a local page)", cmdWeb},
		{"metrics", "[--json]", "the daemon's metrics, as Prometheus scrapes them (glow up --metrics ADDR)", cmdMetrics},
		{"version", "", "version and build information", cmdVersion},
	}
}

// globals are the flags every command takes.
type globals struct {
	state string
	json  bool
	out   io.Writer
}

func defaultState() string {
	if s := os.Getenv("GLOW_STATE"); s != "" {
		return s
	}
	if os.Geteuid() == 0 {
		return "/var/lib/glow"
	}
	if x := os.Getenv("XDG_STATE_HOME"); x != "" {
		return filepath.Join(x, "glow")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "state", "glow")
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: glow [--state DIR] [--json] COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %-22s %s\n", c.name, c.args, c.help)
	}
	fmt.Fprintf(w, "\nThe state directory defaults to $GLOW_STATE, /var/lib/glow as root, else ~/.local/state/glow.\n")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	g := &globals{out: stdout}
	fs := flag.NewFlagSet("glow", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&g.state, "state", defaultState(), "state directory")
	fs.BoolVar(&g.json, "json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "glow: %v\n", err)
		usage(stderr)
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		usage(stderr)
		return 2
	}
	if rest[0] == "help" || rest[0] == "-h" || rest[0] == "--help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands {
		if c.name != rest[0] {
			continue
		}
		err := c.run(g, rest[1:])
		if err == nil {
			return 0
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "glow %s: %v\nUsage: glow %s %s\n", c.name, err, c.name, c.args)
			return 2
		}
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: glow %s %s\n  %s\n", c.name, c.args, c.help)
			return 0
		}
		if g.json {
			// Scripts read stdout: the failure is JSON there too, with
			// the local API's code when the daemon gave one.
			printJSON(g, api.ErrorBody{Error: sentence(err.Error()), Code: api.CodeOf(err)})
		}
		fmt.Fprintf(stderr, "glow %s: %s\n", c.name, sentence(err.Error()))
		return 1
	}
	fmt.Fprintf(stderr, "glow: unknown command %q; run 'glow help' for the list\n", rest[0])
	return 2
}

func sentence(s string) string {
	if s == "" {
		return s
	}
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// newFlags makes a command's flag set with the shared --state and --json.
func newFlags(g *globals, name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&g.state, "state", g.state, "state directory")
	fs.BoolVar(&g.json, "json", g.json, "print JSON") // glow --json CMD as CMD --json
	return fs
}

// parse parses flags that may come before or after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// subcommand finds the subcommand of a two-word command (glow friend add,
// glow policy show, glow link list), allowing the global flags (--state,
// --json) before it: "glow friend --state DIR invite" works.
func subcommand(g *globals, args []string) (string, []string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--state" || a == "-state":
			if i+1 == len(args) {
				return "", nil, usagef("--state needs a directory")
			}
			g.state = args[i+1]
			i++
		case strings.HasPrefix(a, "--state=") || strings.HasPrefix(a, "-state="):
			g.state = a[strings.IndexByte(a, '=')+1:]
		case a == "--json" || a == "-json":
			g.json = true
		case strings.HasPrefix(a, "-"):
			return "", nil, usagef("unknown flag %s before the subcommand", a)
		default:
			rest = append(rest, args[i+1:]...)
			return a, rest, nil
		}
	}
	return "", nil, usagef("missing subcommand")
}
