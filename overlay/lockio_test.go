package overlay

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lockWatch is a state-write hook (Config.stateWrite) that checks, for
// each write, that Node.mu comes free while the write waits: if the writing
// goroutine holds it, or another goroutine holding it waits for the write,
// it never does. The wait is bounded (lockWatchBound), and a write that
// outlasts it is recorded as made under the lock.
type lockWatch struct {
	node atomic.Pointer[Node]

	mu     sync.Mutex
	writes map[string]int // by file
	held   map[string]int // by file: made with Node.mu held
}

// lockWatchBound is how long a write waits for Node.mu to come free; the
// control loop holds it for microseconds at a time.
const lockWatchBound = 5 * time.Second

func newLockWatch() *lockWatch {
	return &lockWatch{writes: map[string]int{}, held: map[string]int{}}
}

func (w *lockWatch) hook(name string) {
	n := w.node.Load()
	if n == nil {
		return // Start: no lock yet
	}
	free := false
	for deadline := time.Now().Add(lockWatchBound); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if n.mu.TryLock() {
			n.mu.Unlock()
			free = true
			break
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes[name]++
	if !free {
		w.held[name]++
	}
}

func (w *lockWatch) count(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes[name]
}

// TestStateWritesOutsideLock: every state file write a node makes (the
// records cache, saved in the background and by document changes; policy
// history; bootstrap; links) and every IpcSet of a WireGuard peer (one
// configured by traffic, removed by nodes remove) is made without Node.mu
// held, so the control loop and the API never wait for an fsync or for
// wireguard-go. The invites file is written without it when a code is
// issued, and under it when one is redeemed (Node.mu's comment says why).
func TestStateWritesOutsideLock(t *testing.T) {
	w := newLockWatch()
	admin := testNode(t, "n1", func(c *Config) {
		c.UserName = "alice"
		c.stateWrite = w.hook
		c.beforeIpcSet = func() { w.hook("IpcSet") }
	})
	w.node.Store(admin)

	saved := w.count("records")
	code, err := admin.Invite(time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	issued, issuedHeld := w.writes["invites"], w.held["invites"]
	w.mu.Unlock()
	t.Logf("issuing a code: %d of %d invites writes with Node.mu held", issuedHeld, issued)
	if issued != 1 || issuedHeld != 0 {
		t.Errorf("issuing a code: %d of %d invites writes with Node.mu held, want 0 of 1", issuedHeld, issued)
	}
	n2 := testNode(t, "n2", func(c *Config) { c.JoinCode = code })
	waitFor(t, 20*time.Second, "n1 sees n2 direct", func() bool { return directPeers(admin) == 1 })
	// Traffic makes n2 a WireGuard peer of n1: nodes remove takes it out.
	serveEcho(t, n2, 8080)
	if dialCount(admin, n2.Cert().IPv4, 8080, 1) != 1 {
		t.Fatal("n1 cannot reach n2:8080")
	}
	// The admission dirtied the records cache: the background save.
	waitFor(t, 20*time.Second, "a records save after the admission", func() bool { return w.count("records") > saved })

	if _, _, err := admin.Share("n1:8080/tcp", "bob", true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := admin.Share("n1:8080/tcp", "bob", false); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ApplyPolicy(defaultPolicy + "# again\n"); err != nil {
		t.Fatal(err)
	}
	if err := admin.AddLink("udp://127.0.0.1:9"); err != nil {
		t.Fatal(err)
	}
	if err := admin.AddLink("tcp://127.0.0.1:9"); err != nil {
		t.Fatal(err)
	}
	if err := admin.RemoveLink("tcp://127.0.0.1:9"); err != nil {
		t.Fatal(err)
	}
	ipcs := w.count("IpcSet")
	if err := admin.RemoveNode(n2.Cert().Name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "n2's WireGuard peer removed", func() bool { return w.count("IpcSet") > ipcs })
	admin.Close() // the last records save

	w.mu.Lock()
	defer w.mu.Unlock()
	total, held := 0, 0
	for name, c := range w.writes {
		if name == "invites" {
			continue
		}
		total += c
		held += w.held[name]
	}
	t.Logf("writes and IpcSets %v, with Node.mu held %v: %d of %d (invites aside)", w.writes, w.held, held, total)
	for _, name := range []string{"records", "bootstrap", "links", "IpcSet"} {
		if w.writes[name] == 0 {
			t.Errorf("no %s write seen: the test does not exercise it", name)
		}
	}
	if held > 0 {
		t.Errorf("%d of %d state writes and IpcSets made with Node.mu held: %v", held, total, w.held)
	}
}

// TestSlowDiskDoesNotStall: while a policy change waits for its records
// cache write (held by the test, as a slow or stuck disk would), the node
// goes on: status and the policy in force answer (the old policy, the new
// one not yet in force); once the write is done the change takes effect,
// the caller hears of it, and it survives a restart.
func TestSlowDiskDoesNotStall(t *testing.T) {
	var armed atomic.Bool
	entered, release := make(chan struct{}, 1), make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	dir := t.TempDir()
	admin := testNode(t, "n1", func(c *Config) {
		c.UserName, c.StateDir = "alice", dir
		c.stateWrite = func(name string) {
			if name == "records" && armed.CompareAndSwap(true, false) {
				entered <- struct{}{}
				<-release
			}
		}
	})
	armed.Store(true)
	shared := make(chan error, 1)
	go func() {
		_, _, err := admin.Share("n1:8080/tcp", "bob", true)
		shared <- err
	}()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the share never wrote the records cache")
	}
	answered := make(chan PolicyInfo, 1)
	go func() {
		admin.Status()
		answered <- admin.Policy()
	}()
	var during PolicyInfo
	select {
	case during = <-answered:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("status and policy did not answer while a records write was held: the write holds Node.mu")
	}
	close(release)
	if err := <-shared; err != nil {
		t.Fatal(err)
	}
	after := admin.Policy()
	t.Logf("while the write was held: policy version %d answered; after: version %d", during.Version, after.Version)
	if during.Version != 0 || after.Version != 1 {
		t.Fatalf("policy version %d during the write, %d after; want 0 and 1", during.Version, after.Version)
	}
	admin.Close()
	again := testNode(t, "n1", func(c *Config) { c.StateDir = dir })
	if p := again.Policy(); p.Version != 1 || !strings.Contains(p.Text, "bob") {
		t.Fatalf("after a restart: policy version %d, %q", p.Version, p.Text)
	}
}

// fakeRoutes is a routeTable that records what it is given; the first call
// waits for release, and fail makes calls fail.
type fakeRoutes struct {
	entered chan struct{}
	release chan struct{}
	fail    atomic.Bool

	mu  sync.Mutex
	got [][]netip.Prefix
}

func (f *fakeRoutes) SetRoutes(p []netip.Prefix, _ ...netip.Addr) error {
	f.mu.Lock()
	f.got = append(f.got, p)
	first := len(f.got) == 1
	f.mu.Unlock()
	if first {
		f.entered <- struct{}{}
		<-f.release
	}
	if f.fail.Load() {
		return errors.New("netlink says no")
	}
	return nil
}

func (f *fakeRoutes) calls() [][]netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got)
}

// TestRouteSetterTakesLatest: routes to friends' networks are set by the
// route setter, off Node.mu; while it is busy, newer sets replace older
// ones not yet taken, and a set that fails is sent again at the next change.
func TestRouteSetterTakesLatest(t *testing.T) {
	n := &Node{routesWant: make(chan []netip.Prefix, 1), logf: t.Logf}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	f := &fakeRoutes{entered: make(chan struct{}, 1), release: make(chan struct{})}
	n.wg.Add(1)
	go n.routeSetter(f, netip.Addr{}, netip.Addr{})
	defer func() { n.cancel(); n.wg.Wait() }()

	set := func(s string) []netip.Prefix {
		want := []netip.Prefix{netip.MustParsePrefix(s)}
		n.mu.Lock()
		n.paths.friendRoutes = want
		n.setRoutesLocked(want) // never waits for the setter
		n.mu.Unlock()
		return want
	}
	a := set("fd01::/48")
	<-f.entered // the setter is inside SetRoutes(a)
	set("fd02::/48")
	c := set("fd03::/48")
	close(f.release)
	waitFor(t, 30*time.Second, "the setter to apply the latest set", func() bool { return len(f.calls()) >= 2 })
	got := f.calls()
	t.Logf("SetRoutes calls: %v", got)
	if len(got) != 2 || !slices.Equal(got[0], a) || !slices.Equal(got[1], c) {
		t.Fatalf("SetRoutes got %v, want %v then %v (the middle set replaced)", got, a, c)
	}

	f.fail.Store(true)
	set("fd04::/48")
	waitFor(t, 30*time.Second, "a failed set to be forgotten, so the next change sends it again", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.paths.friendRoutes == nil
	})
}
