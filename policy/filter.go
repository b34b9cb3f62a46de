package policy

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Options tunes a Filter. Zero fields take the defaults shown.
type Options struct {
	MaxFlows     int // flow table size (65536); least recently used flows go first
	MaxFragments int // fragmented datagrams remembered (4096)

	TCPTimeout          time.Duration // idle TCP flow (2h)
	TCPHandshakeTimeout time.Duration // TCP flow after a SYN (30s)
	TCPClosingTimeout   time.Duration // TCP flow after FIN or RST (30s)
	UDPTimeout          time.Duration // idle UDP or other-protocol flow (60s)
	ICMPTimeout         time.Duration // echo request awaiting replies (30s)
	FragmentTimeout     time.Duration // wait for later fragments (30s)
}

func (o *Options) setDefaults() error {
	ints := []struct {
		v   *int
		def int
		key string
	}{{&o.MaxFlows, 65536, "MaxFlows"}, {&o.MaxFragments, 4096, "MaxFragments"}}
	for _, f := range ints {
		if *f.v < 0 {
			return fmt.Errorf("policy: filter: %s is negative", f.key)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	durs := []struct {
		v   *time.Duration
		def time.Duration
		key string
	}{
		{&o.TCPTimeout, 2 * time.Hour, "TCPTimeout"},
		{&o.TCPHandshakeTimeout, 30 * time.Second, "TCPHandshakeTimeout"},
		{&o.TCPClosingTimeout, 30 * time.Second, "TCPClosingTimeout"},
		{&o.UDPTimeout, 60 * time.Second, "UDPTimeout"},
		{&o.ICMPTimeout, 30 * time.Second, "ICMPTimeout"},
		{&o.FragmentTimeout, 30 * time.Second, "FragmentTimeout"},
	}
	for _, f := range durs {
		if *f.v < 0 {
			return fmt.Errorf("policy: filter: %s is negative", f.key)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	return nil
}

// Filter enforces compiled Rules on the packets of one node. Outbound and
// Inbound may be called concurrently from any number of goroutines; they do
// not allocate and never block on anything but short table locks.
type Filter struct {
	opts Options // immutable after NewFilter

	rules  atomic.Pointer[Rules]
	counts [numReasons]atomic.Uint64

	flows flowTable // locks inside; see flowShard
	frags fragTable
}

// NewFilter returns a filter enforcing rules with the given options.
func NewFilter(rules *Rules, opts Options) (*Filter, error) {
	if rules == nil {
		return nil, errors.New("policy: filter: rules are nil")
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	f := &Filter{opts: opts}
	f.rules.Store(rules)
	f.flows.init(opts.MaxFlows, int64(opts.TCPClosingTimeout))
	f.frags.init(opts.MaxFragments, int64(opts.FragmentTimeout))
	return f, nil
}

// SetRules replaces the rules at once. Packets of flows the remote side
// initiated are checked against the new rules from the next packet on, so
// removing a rule cuts the flows it allowed. Flows this node initiated keep
// passing replies.
func (f *Filter) SetRules(r *Rules) {
	if r != nil {
		f.rules.Store(r)
	}
}

// Rules returns the rules in force.
func (f *Filter) Rules() *Rules { return f.rules.Load() }

// Counts returns how many packets were decided for each reason, leaving
// out reasons that never occurred. Reason marshals as text, so the map
// encodes as a JSON object keyed by reason name.
func (f *Filter) Counts() map[Reason]uint64 {
	m := make(map[Reason]uint64)
	for r := Reason(1); r < numReasons; r++ {
		if n := f.counts[r].Load(); n > 0 {
			m[r] = n
		}
	}
	return m
}

// Flows returns the number of flows in the table, for status output.
func (f *Filter) Flows() int { return f.flows.len() }

func (f *Filter) verdict(r Reason) Verdict {
	f.counts[r].Add(1)
	return Verdict{Allow: r.Allowed(), Reason: r}
}

// flowTTL is how long a flow stays after packet p, and whether p closes it.
func (f *Filter) flowTTL(p *packet) (ttl int64, closing bool) {
	switch {
	case p.proto == ipProtoTCP:
		switch {
		case p.tcpFlags&(tcpFIN|tcpRST) != 0:
			return int64(f.opts.TCPClosingTimeout), true
		case p.tcpFlags&tcpSYN != 0:
			return int64(f.opts.TCPHandshakeTimeout), false
		}
		return int64(f.opts.TCPTimeout), false
	case p.isICMP():
		return int64(f.opts.ICMPTimeout), false
	}
	return int64(f.opts.UDPTimeout), false
}
