package overlay

import (
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"glow/internal/testns"
)

// TestIfaceWatch: an address added to a new interface reaches hostAddrs
// through the netlink watch (the loop's wake-up, changed, fires), without
// any timer; the cached reading before it does not hold the address.
// Needs root: the interface is created in a namespace of the test's own.
func TestIfaceWatch(t *testing.T) {
	name := testns.New(t, "glowifw-")
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// The watch's socket and every reading of the interfaces are made on
	// this thread, in the namespace.
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	ns, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatalf("setns: %v", err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			t.Fatalf("setns back: %v", err) // the thread stays locked and is retired
		}
		runtime.UnlockOSThread()
	}()

	w, err := watchInterfaces()
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	want := netip.MustParseAddr("192.0.2.7")
	if got := w.hostAddrs(); len(got) != 0 {
		t.Fatalf("a new namespace has addresses %v", got)
	}
	ip("-n", name, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	ip("-n", name, "addr", "add", want.String()+"/24", "dev", "d0")
	ip("-n", name, "link", "set", "d0", "up")
	deadline := time.After(10 * time.Second)
	for {
		select {
		case <-w.changed:
		case <-deadline:
			t.Fatalf("no notification read within 10 s (gen %d); hostAddrs %v", w.gen.Load(), w.hostAddrs())
		}
		if slices.Contains(w.hostAddrs(), want) {
			break
		}
	}
	t.Logf("%d notifications; hostAddrs %v", w.gen.Load(), w.hostAddrs())
}
