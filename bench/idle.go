package main

// The idle phase: idle daemon CPU and RSS in the steady state. Every daemon
// configuration of every round is set up side by side, in labs of their
// own (namespaces gb-<pid>-i<round><key>-...), then all of them sit idle
// for o.settle, so that the set-up's bursts (beacons, probing, the first
// gossip) are over and glow's quiet pace (digests and beacons every 30 s
// once nothing has changed for a minute) is in force, and are measured in
// one window of o.idle. wireguard-go and glow are thus measured at the
// same time, under the same load: their ratio is what counts. Idle daemons
// cost about a millisecond of CPU per second each, so they do not disturb
// each other; the throughput rounds run after this phase, with none of
// these daemons left.

import (
	"context"
	"fmt"
	"os"
	"time"
)

// measureIdle runs the idle phase for the daemon configurations of cfgs and
// adds idlecpu, rss_idle and rss_anon per configuration and round to res.
func measureIdle(ctx context.Context, work string, rounds int, cfgs []config, bins binaries, o options, res *results, logf, vlogf func(string, ...any)) error {
	type up struct {
		c     config
		round int
		l     *lab
		inst  *instance
	}
	var ups []up
	defer func() {
		for _, u := range ups {
			u.l.close()
		}
	}()
	fail := func(round int, c config, err error) {
		logf("idle phase, round %d, %s: %v", round, c.title, err)
		res.errors = append(res.errors, fmt.Sprintf("idle phase, round %d, %s: %v", round, c.title, err))
	}
	t0 := time.Now()
	for r := 1; r <= rounds; r++ {
		for _, c := range cfgs {
			if !c.daemon || c.noIdle || c.setup == nil {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			l, err := newLab(ctx, work, r, "idle-"+c.key, vlogf)
			if err != nil {
				fail(r, c, err)
				continue
			}
			// Labs of one round stand side by side here: namespaces of
			// their own (wireguard-go's interface names already carry the
			// round, and only one wireguard-go lab exists per round).
			l.prefix = fmt.Sprintf("%s%d-i%d%s-", nsFamily, os.Getpid(), r, c.key)
			inst, err := c.setup(l, bins)
			if err == nil {
				err = waitPing(l, inst, 30*time.Second)
			}
			if err != nil {
				l.close()
				fail(r, c, fmt.Errorf("setup: %w", err))
				continue
			}
			ups = append(ups, up{c, r, l, inst})
		}
	}
	if len(ups) == 0 {
		return nil
	}
	logf("idle phase: %d instances up in %s; settling %s, then measuring %s", len(ups), time.Since(t0).Round(time.Second), o.settle, o.idle)
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := sleep(o.settle); err != nil {
		return err
	}
	cpu0 := make([]float64, len(ups))
	for i, u := range ups {
		cpu0[i] = onCPU(u.inst.daemons)
	}
	start := time.Now()
	if err := sleep(o.idle); err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	for i, u := range ups {
		m := map[string]float64{
			"idlecpu":  1000 * (onCPU(u.inst.daemons) - cpu0[i]) / secs,
			"rss_idle": maxRSS(u.inst.daemons, "VmRSS"),
			"rss_anon": maxRSS(u.inst.daemons, "RssAnon"),
		}
		res.add(u.c.key, u.round, m)
		logf("idle phase, round %d, %-14s idle CPU %.2f ms/s, RSS %.1f MiB (anon %.1f)", u.round, u.c.title, m["idlecpu"], m["rss_idle"], m["rss_anon"])
	}
	return nil
}
