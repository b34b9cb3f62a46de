package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"glow/internal/sdnotify"
	"glow/overlay"
	"glow/overlay/api"
)

// Running under systemd (dist/glow.service: Type=notify, WatchdogSec=):
// the daemon says READY=1 once its interface is up and its local API
// answers, pings WATCHDOG=1 while its control loop ticks, and says
// STOPPING=1 on its way out. Without $NOTIFY_SOCKET all of it is a no-op.

// notifyReady waits (bounded) until the local API of state answers, then
// tells the service manager the daemon is ready, with a status line.
func notifyReady(state string, logf func(string, ...any)) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	c := api.NewClient(state)
	var s api.Status
	var err error
	for i := 0; i < 100; i++ {
		if s, err = c.Status(); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		logf("glow: systemd: the local API does not answer (%v); not telling systemd we are ready", err)
		return
	}
	status := fmt.Sprintf("STATUS=%s.%s %s %s", s.Self.Name, s.Self.User, s.Self.IPv4, s.Self.IPv6)
	if _, err := sdnotify.Notify(sdnotify.Ready + "\n" + status); err != nil {
		logf("glow: systemd: notify: %v", err)
	}
}

// loopHealth tells a stuck control loop from an idle one: the loop ticks
// at least every few seconds, so a tick count that has not moved for
// stall (overlay.LoopStall) means it is stuck.
type loopHealth struct {
	last    uint64
	changed time.Time
}

// healthy takes the loop's tick count now (ok false: the node's lock could
// not be had, or the node stopped) and says whether to ping the watchdog.
func (h *loopHealth) healthy(ticks uint64, ok bool, now time.Time, stall time.Duration) bool {
	if !ok {
		return false
	}
	if ticks != h.last || h.changed.IsZero() {
		h.last, h.changed = ticks, now
	}
	return now.Sub(h.changed) <= stall
}

// watchdog pings the service manager's watchdog every interval/2 while
// the node's control loop is healthy, until ctx is done. A stuck loop
// gets no ping, and systemd restarts the daemon (Restart=on-failure).
func watchdog(ctx context.Context, interval time.Duration, n *overlay.Node, logf func(string, ...any)) {
	if interval <= 0 {
		return
	}
	every := interval / 2
	t := time.NewTicker(every)
	defer t.Stop()
	var h loopHealth
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ticks, ok := n.LoopTicks(every / 2)
		if !h.healthy(ticks, ok, time.Now(), overlay.LoopStall) {
			if !warned {
				logf("glow: systemd: the control loop is stuck (ticks %d, lock %v); no watchdog ping", ticks, ok)
				warned = true
			}
			continue
		}
		warned = false
		if _, err := sdnotify.Notify(sdnotify.Watchdog); err != nil {
			logf("glow: systemd: watchdog: %v", err)
		}
	}
}

// underJournal reports whether stderr goes to journald, which stamps each
// line itself.
func underJournal() bool { return os.Getenv("JOURNAL_STREAM") != "" }

// slogLogf returns a printf-style logger (what overlay.Config.Logf wants)
// writing structured lines with log/slog to w: key=value text, or JSON
// lines with asJSON. The node's messages read "glow: COMPONENT: what
// happened"; the component becomes a field of its own. A message that
// reports a failure is logged at WARN. Without time stamps under journald.
func slogLogf(w io.Writer, asJSON, journal bool) func(string, ...any) {
	opts := &slog.HandlerOptions{}
	if journal {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if asJSON {
		h = slog.NewJSONHandler(w, opts)
	}
	l := slog.New(h)
	return func(format string, a ...any) {
		msg := strings.TrimPrefix(fmt.Sprintf(format, a...), "glow: ")
		var attrs []any
		if comp, rest, ok := strings.Cut(msg, ": "); ok && comp != "" && len(comp) <= 24 && !strings.ContainsAny(comp, " =\"'") {
			attrs = append(attrs, "component", comp)
			msg = rest
		}
		level := slog.LevelInfo
		lower := strings.ToLower(msg)
		for _, w := range []string{"error", "failed", "cannot", "refused"} {
			if strings.Contains(lower, w) {
				level = slog.LevelWarn
				break
			}
		}
		l.Log(context.Background(), level, msg, attrs...)
	}
}
