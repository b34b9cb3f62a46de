package linktest

// FilterBind: a conn.Bind wrapper that drops the packets of blocked paths.
//
//	send:    Send(bufs, ep) ─► blocked(local, ep)? drop all, count : inner.Send
//	receive: inner ReceiveFunc ─► for each packet: blocked(src, local)? size 0, count
//	         (reads again while every packet of a batch was dropped)
//
// A dropped send returns nil, as a lossy network would.

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// Filter is a set of blocked paths shared by any number of FilterBinds. An
// address with port 0 stands for every port of that IP. The zero value is
// not ready; use NewFilter.
type Filter struct {
	dropped atomic.Uint64

	mu    sync.Mutex // guards pairs and all
	pairs map[[2]netip.AddrPort]bool
	all   map[netip.AddrPort]bool
}

// NewFilter returns a Filter that blocks nothing.
func NewFilter() *Filter {
	return &Filter{pairs: map[[2]netip.AddrPort]bool{}, all: map[netip.AddrPort]bool{}}
}

// Block drops packets between a and b, both ways.
func (f *Filter) Block(a, b netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pairs[pairKey(a, b)] = true
}

// Unblock undoes Block(a, b).
func (f *Filter) Unblock(a, b netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pairs, pairKey(a, b))
}

// BlockAll drops every packet to or from a.
func (f *Filter) BlockAll(a netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all[a] = true
}

// UnblockAll undoes BlockAll(a).
func (f *Filter) UnblockAll(a netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.all, a)
}

// Reset unblocks everything (the drop count stays).
func (f *Filter) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.pairs)
	clear(f.all)
}

// Dropped returns how many packets the filter dropped.
func (f *Filter) Dropped() uint64 { return f.dropped.Load() }

// Blocked reports whether a packet between a and b is dropped.
func (f *Filter) Blocked(a, b netip.AddrPort) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pairs) == 0 && len(f.all) == 0 {
		return false
	}
	wa, wb := wildcard(a), wildcard(b)
	if f.all[a] || f.all[b] || f.all[wa] || f.all[wb] {
		return true
	}
	return f.pairs[pairKey(a, b)] || f.pairs[pairKey(wa, b)] ||
		f.pairs[pairKey(a, wb)] || f.pairs[pairKey(wa, wb)]
}

func wildcard(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr(), 0) }

func pairKey(a, b netip.AddrPort) [2]netip.AddrPort {
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	b = netip.AddrPortFrom(b.Addr().Unmap(), b.Port())
	if b.Compare(a) < 0 {
		a, b = b, a
	}
	return [2]netip.AddrPort{a, b}
}

// FilterBind is a conn.Bind whose packets pass a Filter. Its own address is
// the IP given to Wrap and the port the inner Bind opened on.
type FilterBind struct {
	conn.Bind
	*Filter
	ip netip.Addr

	local atomic.Pointer[netip.AddrPort] // set by Open
}

// Wrap returns inner filtered by f; ip is the address inner's packets
// leave from (127.0.0.1 on loopback, the host's address in natlab).
func (f *Filter) Wrap(inner conn.Bind, ip netip.Addr) *FilterBind {
	return &FilterBind{Bind: inner, Filter: f, ip: ip.Unmap()}
}

// Local returns the bind's address, valid after Open.
func (b *FilterBind) Local() netip.AddrPort {
	if p := b.local.Load(); p != nil {
		return *p
	}
	return netip.AddrPort{}
}

// Open opens the inner Bind and wraps its ReceiveFuncs.
func (b *FilterBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	if err != nil {
		return nil, 0, err
	}
	local := netip.AddrPortFrom(b.ip, actual)
	b.local.Store(&local)
	out := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		out[i] = func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			for {
				n, err := fn(packets, sizes, eps)
				if err != nil {
					return n, err
				}
				kept := 0
				for j := range n {
					if sizes[j] > 0 && b.Blocked(endpointAddr(eps[j]), local) {
						sizes[j] = 0
						b.dropped.Add(1)
						continue
					}
					if sizes[j] > 0 {
						kept++
					}
				}
				if kept > 0 || n == 0 {
					return n, nil
				}
			}
		}
	}
	return out, actual, nil
}

// Send drops bufs if the path to ep is blocked, else passes them on.
func (b *FilterBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if b.Blocked(b.Local(), endpointAddr(ep)) {
		b.dropped.Add(uint64(len(bufs)))
		return nil
	}
	return b.Bind.Send(bufs, ep)
}

func endpointAddr(ep conn.Endpoint) netip.AddrPort {
	if se, ok := ep.(*conn.StdNetEndpoint); ok {
		return se.AddrPort
	}
	ap, _ := netip.ParseAddrPort(ep.DstToString())
	return ap
}

// NewFilterBind wraps inner with a Filter of its own (b.Block and the
// other Filter methods act on it).
func NewFilterBind(inner conn.Bind, ip netip.Addr) *FilterBind {
	return NewFilter().Wrap(inner, ip)
}
