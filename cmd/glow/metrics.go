package main

import (
	"context"
	"fmt"
	"net"

	"glow/metrics"
	"glow/overlay"
	"glow/overlay/api"
)

// cmdMetrics prints the daemon's metrics: the Prometheus text that `glow up
// --metrics ADDR` serves, or with --json the snapshot it is made from.
func cmdMetrics(g *globals, args []string) error {
	fs := newFlags(g, "metrics")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	c := api.NewClient(g.state)
	if g.json {
		m, err := c.Metrics()
		if err != nil {
			return err
		}
		return printJSON(g, m)
	}
	text, err := c.MetricsText()
	if err != nil {
		return err
	}
	_, err = g.out.Write(text)
	return err
}

// listenMetrics opens the --metrics listener (metrics.ListenAddr's rules:
// loopback unless an IP address says otherwise).
func listenMetrics(ctx context.Context, arg string) (net.Listener, error) {
	addr, err := metrics.ListenAddr(ctx, arg)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", arg, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", arg, err)
	}
	return ln, nil
}

// serveMetrics serves n's metrics on ln until ctx is done.
func serveMetrics(ctx context.Context, ln net.Listener, n *overlay.Node, logf func(string, ...any)) {
	logf("glow: metrics on http://%s/metrics", ln.Addr())
	if err := metrics.Serve(ctx, ln, n.MetricsHandler()); err != nil {
		logf("glow: metrics: %v", err)
	}
}
