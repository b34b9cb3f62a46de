package policy

import "sync"

// Flow and fragment tables: bounded maps with least-recently-used eviction
// and per-entry expiry. Time is passed in as Unix nanoseconds; nothing here
// reads the clock or starts a goroutine, so expired entries go when a lookup
// finds them or when they reach the cold end of the LRU list.

// lru is a map with a recency list threaded through a dense slice, so that
// steady-state lookups, refreshes and replacements do not allocate. It is
// not safe for concurrent use.
type lru[K comparable] struct {
	m          map[K]int32
	e          []lruEntry[K]
	head, tail int32 // most and least recently used; -1 when empty
	max        int
}

type lruEntry[K comparable] struct {
	key        K
	expires    int64
	prev, next int32
	local      bool // flows: this node initiated the flow
	closing    bool // flows: TCP FIN or RST seen
}

func newLRU[K comparable](max int) lru[K] {
	return lru[K]{m: make(map[K]int32), head: -1, tail: -1, max: max}
}

// get returns the live entry for k, marked most recently used, or nil.
// The pointer is valid until the next put or del.
func (l *lru[K]) get(k K, now int64) *lruEntry[K] {
	i, ok := l.m[k]
	if !ok {
		return nil
	}
	if l.e[i].expires <= now {
		l.delAt(i)
		return nil
	}
	l.unlink(i)
	l.pushFront(i)
	return &l.e[i]
}

// put returns the entry for k, creating it (evicting the least recently
// used entry when full) if needed; created says it is new, with zero fields.
func (l *lru[K]) put(k K, now int64) (e *lruEntry[K], created bool) {
	if e := l.get(k, now); e != nil {
		return e, false
	}
	if l.tail >= 0 && (len(l.e) >= l.max || l.e[l.tail].expires <= now) {
		l.delAt(l.tail)
	}
	i := int32(len(l.e))
	l.e = append(l.e, lruEntry[K]{key: k})
	l.m[k] = i
	l.pushFront(i)
	return &l.e[i], true
}

func (l *lru[K]) del(k K) {
	if i, ok := l.m[k]; ok {
		l.delAt(i)
	}
}

func (l *lru[K]) len() int { return len(l.e) }

func (l *lru[K]) delAt(i int32) {
	l.unlink(i)
	delete(l.m, l.e[i].key)
	last := int32(len(l.e) - 1)
	if i != last {
		// Move the last entry into the hole.
		l.e[i] = l.e[last]
		l.m[l.e[i].key] = i
		if p := l.e[i].prev; p >= 0 {
			l.e[p].next = i
		} else {
			l.head = i
		}
		if n := l.e[i].next; n >= 0 {
			l.e[n].prev = i
		} else {
			l.tail = i
		}
	}
	var zero lruEntry[K]
	l.e[last] = zero
	l.e = l.e[:last]
}

func (l *lru[K]) unlink(i int32) {
	e := &l.e[i]
	if e.prev >= 0 {
		l.e[e.prev].next = e.next
	} else {
		l.head = e.next
	}
	if e.next >= 0 {
		l.e[e.next].prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (l *lru[K]) pushFront(i int32) {
	e := &l.e[i]
	e.prev, e.next = -1, l.head
	if l.head >= 0 {
		l.e[l.head].prev = i
	}
	l.head = i
	if l.tail < 0 {
		l.tail = i
	}
}

// flowShards spreads the flow table over independently locked shards so
// that packets of different flows decoded in parallel rarely contend.
const flowShards = 16

// flowTable remembers flows and who initiated each.
type flowTable struct {
	closingTTL int64 // immutable
	shards     [flowShards]flowShard
}

type flowShard struct {
	mu sync.Mutex // guards lru; a leaf lock, never held while calling out
	lru[flowKey]
}

func (t *flowTable) init(max int, closingTTL int64) {
	t.closingTTL = closingTTL
	per := max / flowShards
	if per < 1 {
		per = 1
	}
	for i := range t.shards {
		t.shards[i].lru = newLRU[flowKey](per)
	}
}

func (t *flowTable) shard(k *flowKey) *flowShard {
	h := uint32(k.rport)*31 + uint32(k.lport)
	h ^= uint32(k.remote[15]) | uint32(k.remote[3])<<8 | uint32(k.remote[14])<<16
	h ^= h >> 7
	return &t.shards[h%flowShards]
}

// touch refreshes the flow k if it is known: its expiry moves to now+ttl
// (or the closing timeout once closing has been seen). It reports whether
// the flow was found and whether this node initiated it.
func (t *flowTable) touch(k flowKey, now, ttl int64, closing bool) (found, local bool) {
	s := t.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.get(k, now)
	if e == nil {
		return false, false
	}
	e.closing = e.closing || closing
	if e.closing {
		ttl = min(ttl, t.closingTTL)
	}
	e.expires = now + ttl
	return true, e.local
}

// peek reports whether k is a live flow and whether this node initiated
// it, without refreshing it.
func (t *flowTable) peek(k flowKey, now int64) (found, local bool) {
	s := t.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.m[k]
	if !ok || s.e[i].expires <= now {
		return false, false
	}
	return true, s.e[i].local
}

// add records the flow k, initiated by this node if local. An existing
// flow keeps its initiator.
func (t *flowTable) add(k flowKey, now, ttl int64, local, closing bool) {
	s := t.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, created := s.put(k, now)
	if created {
		e.local = local
	}
	e.closing = e.closing || closing
	if e.closing {
		ttl = min(ttl, t.closingTTL)
	}
	e.expires = now + ttl
}

func (t *flowTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += s.lru.len()
		s.mu.Unlock()
	}
	return n
}

// fragTable remembers datagrams whose first fragment was allowed.
type fragTable struct {
	ttl int64      // immutable
	mu  sync.Mutex // guards lru; a leaf lock
	lru[fragKey]
}

func (t *fragTable) init(max int, ttl int64) {
	t.ttl = ttl
	t.lru = newLRU[fragKey](max)
}

func (t *fragTable) add(k fragKey, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, _ := t.put(k, now)
	e.expires = now + t.ttl
}

func (t *fragTable) has(k fragKey, now int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.get(k, now) != nil
}
