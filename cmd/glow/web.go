package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"glow/overlay/api"
	"glow/web"
)

// cmdWeb is `glow web`: the live map, served on a local port until
// interrupted (package web).
func cmdWeb(g *globals, args []string) error {
	fs := newFlags(g, "web")
	listen := fs.String("listen", "127.0.0.1:0", "address to serve the page on (port 0: one the OS picks)")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if _, err := netip.ParseAddrPort(*listen); err != nil {
		return usagef("--listen %q: want IP:PORT, such as 127.0.0.1:8080", *listen)
	}
	c := api.NewClient(g.state)
	if _, err := c.Status(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	h := web.New(c, web.Options{})
	url := h.URL(ln.Addr())
	if g.json {
		printJSON(g, map[string]string{"url": url, "listen": ln.Addr().String()})
	} else {
		fmt.Fprintf(g.out, "glow web: the map of %s is at\n  %s\n", g.state, url)
		if ap, _ := netip.ParseAddrPort(ln.Addr().String()); !ap.Addr().IsLoopback() {
			fmt.Fprintf(g.out, "(listening on %s, not only loopback: anyone with the URL can see the map and make invites)\n", ln.Addr())
		}
		fmt.Fprintln(g.out, "Ctrl-C stops it.")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx) // event streams end at the deadline
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	fmt.Fprintln(os.Stderr, "glow web: stopped")
	return nil
}
