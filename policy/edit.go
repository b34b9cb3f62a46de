package policy

import (
	"cmp"
	"fmt"
	"slices"
)

// ParseShareTarget parses what "glow share" and "glow unshare" take:
// NODE:PORTS[/PROTO] as in a rule, except that a port list without a
// protocol means TCP ("nas:8080" is "nas:8080/tcp"). "nas:icmp" and "nas:*"
// (every port and protocol) mean what they mean in a document.
//
// "route NODE PREFIX" and "exit NODE" share forwarding through a node, as
// in a document ("glow share NODE --route PREFIX", "glow share NODE --exit").
func ParseShareTarget(s string) (Target, error) {
	if t, ok, err := parseForward(0, s); ok {
		if err != nil {
			return Target{}, fmt.Errorf("share target: %s", err.Msg)
		}
		return t, nil
	}
	t, err := parseTarget(0, s, ProtoTCP)
	if err != nil {
		return Target{}, fmt.Errorf("share target: %s", err.Msg)
	}
	return t, nil
}

// ParsePeer parses a rule source as written in a document: "bob",
// "bob/laptop", "group:friends", "tag:web" or "*".
func ParsePeer(s string) (Peer, error) {
	p, err := parsePeer(0, s)
	if err != nil {
		return Peer{}, fmt.Errorf("source: %s", err.Msg)
	}
	return p, nil
}

// Share adds the rule "allow who -> t" unless an equal rule exists. who is
// a source as ParsePeer reads it, normally a friend's user name. It reports
// whether d changed; on error d is unchanged.
func (d *Document) Share(who string, t Target) (bool, error) {
	p, err := ParsePeer(who)
	if err != nil {
		return false, err
	}
	if err := checkTarget(t); err != nil {
		return false, fmt.Errorf("share target: %s", err.Msg)
	}
	if d.find(p, t) >= 0 {
		return false, nil
	}
	if len(d.Rules) >= MaxRules {
		return false, fmt.Errorf("policy already has %d rules", MaxRules)
	}
	d.Rules = append(d.Rules, Rule{From: p, To: t})
	if err := d.check(nil); err != nil {
		d.Rules = d.Rules[:len(d.Rules)-1]
		return false, fmt.Errorf("share: %s", err.Msg)
	}
	return true, nil
}

// Unshare removes every rule "allow who -> t" exactly as Share writes it
// and reports whether any was removed. Rules that grant more (a wider port
// list, a group containing who) are left alone; Shares shows them.
func (d *Document) Unshare(who string, t Target) bool {
	p, err := ParsePeer(who)
	if err != nil {
		return false
	}
	n := len(d.Rules)
	d.Rules = slices.DeleteFunc(d.Rules, func(r Rule) bool { return r.From == p && r.To.Equal(t) })
	if len(d.Rules) == 0 {
		d.Rules = nil
	}
	return len(d.Rules) != n
}

func (d *Document) find(p Peer, t Target) int {
	return slices.IndexFunc(d.Rules, func(r Rule) bool { return r.From == p && r.To.Equal(t) })
}

// Grant is one thing a friend may reach, for "glow friend list".
type Grant struct {
	// Who is the user the grant applies to, or "*" (everyone) or
	// "tag:NAME" (nodes certified with that tag).
	Who  string
	From Peer   // the rule's source (a group when granted via a group)
	To   Target // what they reach
}

// Shares lists every grant of d per user, expanding groups, sorted by Who
// and then in rule order.
func (d *Document) Shares() []Grant {
	groups := make(map[string][]string, len(d.Groups))
	for _, g := range d.Groups {
		groups[g.Name] = g.Members
	}
	var out []Grant
	for _, r := range d.Rules {
		switch r.From.Kind {
		case PeerUser, PeerNode:
			out = append(out, Grant{Who: r.From.Name, From: r.From, To: r.To})
		case PeerGroup:
			for _, m := range groups[r.From.Name] {
				out = append(out, Grant{Who: m, From: r.From, To: r.To})
			}
		default:
			out = append(out, Grant{Who: r.From.String(), From: r.From, To: r.To})
		}
	}
	slices.SortStableFunc(out, func(a, b Grant) int { return cmp.Compare(a.Who, b.Who) })
	return out
}
