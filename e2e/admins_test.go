package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"glow/e2e/lab"
)

// nodesList is `glow nodes list --json` on n.
func nodesList(n *node) (map[string]struct {
	Admin  bool `json:"admin"`
	Online bool `json:"online"`
}, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.glow(ctx, "nodes", "list", "--json")
	if err != nil {
		return nil, err
	}
	var list []struct {
		Name   string `json:"name"`
		Admin  bool   `json:"admin"`
		Online bool   `json:"online"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &list); err != nil {
		return nil, fmt.Errorf("glow nodes list --json: %v: %q", err, res.Stdout)
	}
	out := map[string]struct {
		Admin  bool `json:"admin"`
		Online bool `json:"online"`
	}{}
	for _, e := range list {
		out[e.Name] = struct {
			Admin  bool `json:"admin"`
			Online bool `json:"online"`
		}{e.Admin, e.Online}
	}
	return out, nil
}

// TestRestoreUserKeyBinaries: with the real binary on one LAN, n1 (the
// user's only admin) exports the user key and goes down for good; a fresh
// machine restores it (a wrong passphrase first: refused, nothing written),
// finds n2 on the LAN, is listed as an admin there, and admits n4, which
// pings n2. n3 then promotes n2 (glow nodes promote) and demotes it again.
func TestRestoreUserKeyBinaries(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	lan := l.Bridge("lan")
	nodes := map[string]*node{}
	for _, name := range []string{"n1", "n2", "n3", "n4"} {
		h := l.Host(name)
		lan.Attach(h)
		nodes[name] = newNode(t, h, name)
	}
	n1, n2, n3, n4 := nodes["n1"], nodes["n2"], nodes["n3"], nodes["n4"]
	n1.up("--user", "alice", "--name", "n1")
	n2.up("--name", "n2", "--join", n1.invite())

	dir := t.TempDir()
	pass, wrong, backup := filepath.Join(dir, "pass"), filepath.Join(dir, "wrong"), filepath.Join(dir, "alice.key")
	os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600)
	os.WriteFile(wrong, []byte("correct horse battery stapler\n"), 0o600)
	n1.mustGlow(60*time.Second, "user", "export", backup, "--passphrase-file", pass)
	n1.mustGlow(20*time.Second, "down")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	res, err := n3.glow(ctx, "up", "--no-dns", "--name", "n3", "--restore", backup, "--passphrase-file", wrong)
	cancel()
	if err == nil {
		t.Fatalf("restore with a wrong passphrase succeeded: %s", res.Stdout)
	}
	t.Logf("wrong passphrase: %v", err)
	if _, err := os.Stat(filepath.Join(n3.state, "user.key")); err == nil {
		t.Fatal("a refused restore wrote user.key")
	}
	start := time.Now()
	n3.up("--name", "n3", "--restore", backup, "--passphrase-file", pass)
	err = waitFor(reachTimeout, 200*time.Millisecond, func() error {
		l, err := nodesList(n2)
		if err != nil {
			return err
		}
		if e, ok := l["n3"]; !ok || !e.Admin || !e.Online {
			return fmt.Errorf("n2 lists n3 as %+v (present %v)", e, ok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	metric(t, "restore.listed_admin_s", fmt.Sprintf("%.3f", time.Since(start).Seconds()))
	n4.up("--name", "n4", "--join", n3.invite())
	v4n2, _ := n2.ips()
	if _, err := waitPing(n4.host, v4n2, reachTimeout); err != nil {
		t.Fatalf("n4, admitted by the restored n3, cannot ping n2: %v", err)
	}

	n3.mustGlow(30*time.Second, "nodes", "promote", "n2")
	if _, err := os.Stat(filepath.Join(n2.state, "user.key")); err != nil {
		t.Fatalf("n2 promoted has no user.key: %v", err)
	}
	n3.mustGlow(30*time.Second, "nodes", "demote", "n2")
	err = waitFor(reachTimeout, 200*time.Millisecond, func() error {
		if _, err := os.Stat(filepath.Join(n2.state, "user.key")); err == nil {
			return fmt.Errorf("n2 still holds user.key")
		}
		l, err := nodesList(n4)
		if err != nil {
			return err
		}
		if l["n2"].Admin || !l["n3"].Admin {
			return fmt.Errorf("n4 lists %+v", l)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	res = n4.mustGlow(10*time.Second, "nodes", "list")
	t.Logf("n4: glow nodes list:\n%s", res.Stdout)
}
