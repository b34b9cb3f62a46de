package main

// Configurations: each is a column of the table. A configuration's setup
// builds its topology in a fresh lab, brings its tunnel up and returns an
// instance; the lab's close is its teardown (setup registers extra steps
// with lab.onClose). To add a column (glow through 1 or 2 relays), write a
// setup that uses more namespaces and append it to configs().

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// config is one column of the table.
type config struct {
	key   string // metric keys and scratch directory names
	title string // column header
	// daemon says whether the configuration has daemon processes whose
	// CPU and memory are measured (raw veth has none).
	daemon bool
	setup  func(l *lab, bins binaries) (*instance, error)
}

// instance is a configuration that is up: iperf3 and ping run in client
// against target; the iperf3 server runs in server.
type instance struct {
	client, server string
	target         string
	daemons        []int // pids of the tunnel daemons on both ends
}

type binaries struct {
	glow, wireguard string
}

func configs() []config {
	return []config{
		{key: "raw", title: "raw veth", setup: setupRaw},
		{key: "wg", title: "wireguard-go", daemon: true, setup: setupWireguard},
		{key: "glow", title: "glow direct", daemon: true, setup: setupGlowDirect},
	}
}

func setupRaw(l *lab, _ binaries) (*instance, error) {
	a, b, err := l.pair()
	if err != nil {
		return nil, err
	}
	return &instance{client: a, server: b, target: "10.78.0.2"}, nil
}

// setupWireguard runs the reference wireguard-go on both ends of the pair,
// configured with wg(8): tunnel 10.79.0.1 <-> 10.79.0.2, MTU 1420, UDP
// port 51820 over the veth.
func setupWireguard(l *lab, bins binaries) (*instance, error) {
	a, b, err := l.pair()
	if err != nil {
		return nil, err
	}
	type end struct {
		ns, ifname, addr, underlay string
		key, pub                   string
		pid                        int
	}
	ends := []*end{
		{ns: a, addr: "10.79.0.1", underlay: "10.78.0.1"},
		{ns: b, addr: "10.79.0.2", underlay: "10.78.0.2"},
	}
	for i, e := range ends {
		// /var/run/wireguard is shared by all namespaces: unique names.
		e.ifname = fmt.Sprintf("gw%dr%d%c", os.Getpid(), l.round, 'a'+i)
		if len(e.ifname) > 15 {
			return nil, fmt.Errorf("interface name %s too long", e.ifname)
		}
		key, err := run(l.ctx, cmdTimeout, "wg", "genkey")
		if err != nil {
			return nil, err
		}
		e.key = filepath.Join(l.dir, e.ifname+".key")
		if err := os.WriteFile(e.key, []byte(key), 0o600); err != nil {
			return nil, err
		}
		pub, err := runStdin(l.ctx, key, "wg", "pubkey")
		if err != nil {
			return nil, err
		}
		e.pub = strings.TrimSpace(pub)
		sock := "/var/run/wireguard/" + e.ifname + ".sock"
		os.Remove(sock)
		cmd, err := l.start(e.ns, e.ifname+".log", []string{"WG_PROCESS_FOREGROUND=1"}, bins.wireguard, "-f", e.ifname)
		if err != nil {
			return nil, err
		}
		e.pid = cmd.Process.Pid
		l.onClose(func() { os.Remove(sock) })
		err = waitFor(l.ctx, 10*time.Second, 50*time.Millisecond, "wireguard-go socket "+sock, func() (bool, error) {
			if cmd.ProcessState != nil {
				return false, fmt.Errorf("wireguard-go exited (log %s)", filepath.Join(l.dir, e.ifname+".log"))
			}
			_, err := os.Stat(sock)
			return err == nil, nil
		})
		if err != nil {
			return nil, err
		}
	}
	for i, e := range ends {
		peer := ends[1-i]
		if _, err := l.exec(e.ns, "wg", "set", e.ifname, "private-key", e.key, "listen-port", "51820",
			"peer", peer.pub, "allowed-ips", peer.addr+"/32", "endpoint", peer.underlay+":51820"); err != nil {
			return nil, err
		}
		if _, err := l.exec(e.ns, "ip", "addr", "add", e.addr+"/24", "dev", e.ifname); err != nil {
			return nil, err
		}
		if _, err := l.exec(e.ns, "ip", "link", "set", e.ifname, "mtu", "1420", "up"); err != nil {
			return nil, err
		}
	}
	return &instance{client: a, server: b, target: "10.79.0.2", daemons: []int{ends[0].pid, ends[1].pid}}, nil
}

// setupGlowDirect runs one glow daemon in each namespace: a creates user
// bench, b joins with an invite code (found by LAN beacons on the veth);
// it is up when a's status shows b online on a direct path.
func setupGlowDirect(l *lab, bins binaries) (*instance, error) {
	a, b, err := l.pair()
	if err != nil {
		return nil, err
	}
	stA, stB := filepath.Join(l.dir, "a"), filepath.Join(l.dir, "b")
	for _, d := range []string{stA, stB} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	glow := func(ns, state string, args ...string) (string, error) {
		return run(l.ctx, 60*time.Second, "ip", append([]string{"netns", "exec", ns, bins.glow, "--state", state}, args...)...)
	}
	down := func(ns, state string) func() {
		return func() {
			if _, err := glow(ns, state, "down"); err != nil {
				l.log("glow down in %s: %v", ns, err)
			}
		}
	}
	if _, err := glow(a, stA, "up", "--user", "bench", "--name", "a", "--no-dns"); err != nil {
		return nil, fmt.Errorf("%w (log %s/glow.log)", err, stA)
	}
	l.onClose(down(a, stA))
	out, err := glow(a, stA, "invite")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	code := strings.TrimSpace(lines[len(lines)-1])
	if _, err := glow(b, stB, "up", "--join", code, "--name", "b", "--no-dns"); err != nil {
		return nil, fmt.Errorf("%w (log %s/glow.log)", err, stB)
	}
	l.onClose(down(b, stB))

	err = waitFor(l.ctx, 30*time.Second, 100*time.Millisecond, "glow path direct from a to b", func() (bool, error) {
		out, err := glow(a, stA, "status", "--json")
		if err != nil {
			return false, err
		}
		var st struct {
			Peers []struct {
				Name   string `json:"name"`
				Online bool   `json:"online"`
				Path   string `json:"path"`
			} `json:"peers"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return false, err
		}
		for _, p := range st.Peers {
			if p.Name == "b" && p.Online && p.Path == "direct" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	out, err = glow(b, stB, "ip")
	if err != nil {
		return nil, err
	}
	target := strings.Fields(out)
	if len(target) == 0 {
		return nil, fmt.Errorf("glow ip in b printed nothing")
	}
	var pids []int
	for _, st := range []string{stA, stB} {
		pid, err := readPidFile(filepath.Join(st, "glow.pid"))
		if err != nil {
			return nil, err
		}
		pids = append(pids, pid)
	}
	return &instance{client: a, server: b, target: target[0], daemons: pids}, nil
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %v", path, err)
	}
	return pid, nil
}
