package testns

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRemoveLeftovers makes namespaces as dead, live and pid-reusing runs
// would leave them and checks that only those whose owner is gone go.
func TestRemoveLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING: needs root for network namespaces")
	}
	family := "glowtestns-" + strconv.Itoa(os.Getpid()) + "x-"
	// A live process that started before its namespace: a live run.
	early := sleeper(t, "")
	time.Sleep(1100 * time.Millisecond) // start times have 1 s grain
	add := func(pid int) string {
		ns := family + strconv.Itoa(pid) + "-1"
		if err := ip("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = Remove(ns) })
		if err := os.MkdirAll(filepath.Join("/etc/netns", ns), 0o755); err != nil {
			t.Fatal(err)
		}
		return ns
	}
	live := add(early.Process.Pid)
	self := add(os.Getpid())
	dead := add(999999999)
	inside := sleeper(t, dead) // still running inside the dead run's namespace
	// A pid reused by a process that started after the namespace: the
	// name's owner is gone even though its pid is alive.
	time.Sleep(1100 * time.Millisecond)
	late := sleeper(t, "")
	reused := family + strconv.Itoa(late.Process.Pid) + "-1"
	// Made "before" the late process: back-date its /etc/netns entry only,
	// so no /run/netns file exists to pin a newer time.
	if err := os.MkdirAll(filepath.Join("/etc/netns", reused), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove(reused) })
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(filepath.Join("/etc/netns", reused), old, old); err != nil {
		t.Fatal(err)
	}

	msgs := RemoveLeftovers(family)
	t.Logf("RemoveLeftovers: %q", msgs)
	exists := func(ns string) bool {
		_, errRun := os.Stat(filepath.Join("/run/netns", ns))
		_, errEtc := os.Stat(filepath.Join("/etc/netns", ns))
		return !errors.Is(errRun, os.ErrNotExist) || !errors.Is(errEtc, os.ErrNotExist)
	}
	for _, ns := range []string{dead, reused} {
		if exists(ns) {
			t.Errorf("leftover %s still there", ns)
		}
	}
	for _, ns := range []string{live, self} {
		if !exists(ns) {
			t.Errorf("namespace %s of a live run removed", ns)
		}
	}
	done := make(chan error, 1)
	go func() { done <- inside.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Errorf("process inside the leftover namespace not killed")
	}
}

// TestNew checks a namespace is made with lo up and removed at cleanup.
func TestNew(t *testing.T) {
	var ns string
	t.Run("make", func(t *testing.T) {
		ns = New(t, "glowtestns-")
		out, err := output("ip", "-n", ns, "-o", "link", "show", "lo")
		if err != nil {
			t.Fatal(err)
		}
		if !containsUp(out) {
			t.Errorf("lo not up in %s: %s", ns, out)
		}
	})
	if ns == "" {
		t.Skip("no namespace made")
	}
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there after its test: %v", ns, err)
	}
}

func containsUp(link string) bool {
	return strings.Contains(link, ",UP") || strings.Contains(link, "<UP")
}

// sleeper starts `sleep 60`, inside ns unless ns is "", and kills it at
// cleanup.
func sleeper(t *testing.T, ns string) *exec.Cmd {
	t.Helper()
	argv := []string{"sleep", "60"}
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	if ns == "" {
		return cmd
	}
	for range 100 { // until ip netns exec has entered the namespace
		if pids, _ := Pids(ns); len(pids) > 0 {
			return cmd
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("sleeper never entered %s", ns)
	return nil
}
