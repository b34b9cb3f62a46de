package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this binary as glow (GLOW_TEST_CLI=1), for the
// commands that run until a signal (glow web).
func TestMain(m *testing.M) {
	if os.Getenv("GLOW_TEST_CLI") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// jsonValues reports whether out is one or more JSON values and nothing
// else (glow ping prints one per ping).
func jsonValues(out string) error {
	if strings.TrimSpace(out) == "" {
		return errors.New("nothing on stdout")
	}
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var v any
		if err := dec.Decode(&v); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// TestEveryCommandJSON: every command, run with --json against a test
// daemon, prints only JSON on stdout (a failure too: {"error", "code"}),
// or refuses --json with exit status 2 and says so. Each command of the
// list has a row here or is run bare (glow NAME --json).
func TestEveryCommandJSON(t *testing.T) {
	state := testDaemon(t)
	policy := filepath.Join(t.TempDir(), "policy")
	var out, errOut bytes.Buffer
	if rc := run([]string{"--state", state, "policy", "show"}, &out, &errOut); rc != 0 {
		t.Fatalf("policy show: %d %s", rc, errOut.String())
	}
	os.WriteFile(policy, out.Bytes(), 0o600)
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600)

	rows := [][]string{
		{"up", "--userspace"}, // already up: its status
		{"status"},
		{"ping", "-c", "1", "nosuch"}, // fails: JSON error, exit 1
		{"netcheck"},
		{"ip"},
		{"ip", "nosuch"},
		{"invite"},
		{"invite", "--qr"},
		{"friend", "invite"},
		{"friend", "invite", "--qr"},
		{"friend", "list"},
		{"friend", "add", "not-a-code"}, // usage: exit 2
		{"friend", "remove", "nobody"},
		{"share", "n1:22/tcp", "--with", "bob"},
		{"unshare", "n1:22/tcp", "--with", "bob"},
		{"policy", "show"},
		{"policy", "history"},
		{"policy", "apply", policy},
		{"policy", "rollback", "1"},
		{"nodes", "remove", "nosuch"},
		{"nodes", "list"},
		{"nodes", "promote", "nosuch"},
		{"device", "add", "phone"},
		{"device", "add", "tablet", "--qr"},
		{"device", "list"},
		{"device", "remove", "nosuch"},
		{"set", "--exit-node-allow-lan-access=false"},
		{"user", "export", filepath.Join(dir, "user.key"), "--passphrase-file", pass},
		{"link", "list"},
		{"link", "add", "tcp://127.0.0.1:9"},
		{"link", "remove", "tcp://127.0.0.1:9"},
		{"link", "stdio"}, // refused: exit 2
		{"metrics"},
		{"version"},
		{"web"},  // runs until a signal: its own process below
		{"down"}, // last: it stops the daemon
	}
	covered := map[string]bool{}
	for _, r := range rows {
		covered[r[0]] = true
	}
	for _, c := range commands {
		if !covered[c.name] {
			rows = append(rows[:len(rows)-1:len(rows)-1], []string{c.name}, rows[len(rows)-1])
		}
	}
	counts := map[string]int{}
	for _, r := range rows {
		argv := append([]string{"--state", state}, r...)
		argv = append(argv, "--json")
		var rc int
		var stdout, stderr string
		if r[0] == "web" {
			rc, stdout, stderr = runUntilJSON(t, argv)
		} else {
			var out, errOut bytes.Buffer
			rc = run(argv, &out, &errOut)
			stdout, stderr = out.String(), errOut.String()
		}
		what := "glow " + strings.Join(r, " ") + " --json"
		switch {
		case rc == 2:
			counts["refused or bad usage (2)"]++
			if stderr == "" {
				t.Errorf("%s: exit 2 and nothing on stderr", what)
			}
		case jsonValues(stdout) != nil:
			t.Errorf("%s: exit %d, stdout is not JSON (%v):\n%s\nstderr: %s", what, rc, jsonValues(stdout), stdout, stderr)
		case rc == 0:
			counts["JSON (0)"]++
		default:
			counts["JSON error (1)"]++
			var e struct{ Error string }
			if json.Unmarshal([]byte(lastJSON(stdout)), &e); e.Error == "" {
				t.Errorf("%s: exit %d without an error in its JSON: %s", what, rc, stdout)
			}
		}
		t.Logf("%s: exit %d", what, rc)
	}
	t.Logf("%d runs: %v", len(rows), counts)

	// --json before the command counts as after it.
	var out1, errOut1 bytes.Buffer
	if rc := run([]string{"--json", "--state", state, "version"}, &out1, &errOut1); rc != 0 || jsonValues(out1.String()) != nil {
		t.Errorf("glow --json version: exit %d, %q", rc, out1.String())
	}

	// No daemon: the code says so.
	var out2, errOut2 bytes.Buffer
	rc := run([]string{"--state", t.TempDir(), "status", "--json"}, &out2, &errOut2)
	var e struct{ Error, Code string }
	if json.Unmarshal(out2.Bytes(), &e); rc != 1 || e.Code != "not-running" || e.Error == "" {
		t.Errorf("status --json without a daemon: exit %d, %q; want 1 and code not-running", rc, out2.String())
	}
}

// lastJSON is the last JSON value of out.
func lastJSON(out string) string {
	dec := json.NewDecoder(strings.NewReader(out))
	var last json.RawMessage
	for {
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return string(last)
		}
		last = v
	}
}

// runUntilJSON runs this test binary as glow with argv until it has
// printed one JSON value (or exited), then interrupts it.
func runUntilJSON(t *testing.T, argv []string) (rc int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], argv...)
	cmd.Env = append(os.Environ(), "GLOW_TEST_CLI=1")
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		var v json.RawMessage
		if json.NewDecoder(bufio.NewReader(pipe)).Decode(&v) != nil {
			got <- ""
			return
		}
		got <- string(v)
		io.Copy(io.Discard, pipe)
	}()
	select {
	case stdout = <-got:
	case <-time.After(20 * time.Second):
		t.Errorf("%v: no JSON within 20s", argv)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) && !(ee.ExitCode() == -1 && stdout != "") {
		rc = ee.ExitCode() // (-1: killed by the interrupt before it took signals: fine once it printed)
	}
	return rc, stdout, errBuf.String()
}
