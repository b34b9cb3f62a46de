package dns

import (
	"net/netip"
	"strings"
	"sync"
)

// Names is the directory the resolver answers from. The overlay implements it
// over its verified records; [Table] is a ready-made implementation.
//
// Implementations must be safe for concurrent use: the server calls them from
// many goroutines at once and never caches what they return, so a change is
// visible to the very next query. Calls must not block on the network.
type Names interface {
	// LookupHost returns the overlay addresses of node NODE of user USER
	// (lowercase labels, no suffix). An invalid v4 or v6 means the node has
	// no address of that family. ok is false when the node is unknown.
	LookupHost(user, node string) (v4, v6 netip.Addr, ok bool)
	// LookupAddr returns the node and user names (lowercase) that own an
	// overlay address.
	LookupAddr(ip netip.Addr) (node, user string, ok bool)
}

// Host is one named node in a [Table].
type Host struct {
	User, Node string     // labels; stored lowercase
	V4, V6     netip.Addr // either may be invalid (no address of that family)
}

type hostKey struct{ user, node string }

// Table is a concurrency-safe, in-memory [Names]. The zero value is an empty
// table ready to use. Changes are visible to the next lookup.
type Table struct {
	mu    sync.RWMutex
	hosts map[hostKey]Host       // guarded by mu
	addrs map[netip.Addr]hostKey // guarded by mu; reverse index of hosts
}

// NewTable returns a table holding hosts.
func NewTable(hosts ...Host) *Table {
	t := new(Table)
	t.Replace(hosts)
	return t
}

func normHost(h Host) Host {
	h.User = strings.ToLower(h.User)
	h.Node = strings.ToLower(h.Node)
	h.V4 = h.V4.Unmap()
	return h
}

// Set adds h or replaces the host with the same user and node.
func (t *Table) Set(h Host) {
	h = normHost(h)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.setLocked(h)
}

func (t *Table) setLocked(h Host) {
	if t.hosts == nil {
		t.hosts = make(map[hostKey]Host)
		t.addrs = make(map[netip.Addr]hostKey)
	}
	k := hostKey{h.User, h.Node}
	t.removeLocked(k)
	t.hosts[k] = h
	for _, a := range [2]netip.Addr{h.V4, h.V6} {
		if a.IsValid() {
			t.addrs[a] = k
		}
	}
}

// Remove deletes the host user/node, if present.
func (t *Table) Remove(user, node string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeLocked(hostKey{strings.ToLower(user), strings.ToLower(node)})
}

func (t *Table) removeLocked(k hostKey) {
	old, ok := t.hosts[k]
	if !ok {
		return
	}
	delete(t.hosts, k)
	for _, a := range [2]netip.Addr{old.V4, old.V6} {
		if a.IsValid() && t.addrs[a] == k {
			delete(t.addrs, a)
		}
	}
}

// Replace swaps the whole table for hosts in one step: a lookup sees either
// the old set or the new one, never a mix.
func (t *Table) Replace(hosts []Host) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hosts, t.addrs = nil, nil
	for _, h := range hosts {
		t.setLocked(normHost(h))
	}
}

// LookupHost implements [Names].
func (t *Table) LookupHost(user, node string) (v4, v6 netip.Addr, ok bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	h, ok := t.hosts[hostKey{user, node}]
	return h.V4, h.V6, ok
}

// LookupAddr implements [Names].
func (t *Table) LookupAddr(ip netip.Addr) (node, user string, ok bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	k, ok := t.addrs[ip.Unmap()]
	return k.node, k.user, ok
}
