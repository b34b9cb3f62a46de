package overlay

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"glow/overlay/api"
	"glow/overlay/member"
)

// Concurrent changes from two admins. A user document (policy, friends,
// removed nodes, devices) is versioned; an admin signs version v+1 of the
// version v it holds, naming v as its parent (UserDoc.Parent). Two admins
// that change a document at once (or apart, during a partition) both sign
// a version v+1. Every node keeps the same one of the two (the greater
// hash: UserDoc.Rank), so the network converges at once; the admin whose
// version lost does not drop its change: it merges it into the winner and
// signs v+2, which every node then takes. Nothing is lost, nobody is asked
// to retry, and the end state does not depend on who heard what first.
//
// The merge is by lines, three ways: the lines this admin's change added
// (to the version it was built on) are added to the winner unless there
// already, the lines it removed are removed from it. Every document is
// line based, and a policy has no order (its rules only add), so this is
// the edit the admin meant; the result is checked like any change (a
// policy is parsed and compiled) and, if it does not hold (both admins
// defined one group two ways), the change is reported in the log as not
// merged, its text kept in policy.d, never applied half.
//
// An admin watches its last change of each document until a later
// version says it was seen: one that names it as parent, or (further on)
// one that holds its edit. A version that follows a sibling of it, or the
// sibling that won, means it was lost: it is merged. This is in memory: a
// change made just before a restart and lost while the node was down is
// not merged (its policy text is still in policy.d).

// ownDocLocked remembers c, a change this node made and committed.
func (n *Node) ownDocLocked(c *docChange) {
	if n.admin.own == nil {
		n.admin.own = map[member.RecordKind]*docChange{}
	}
	n.admin.own[c.doc.Kind] = c
}

// docArrivedLocked looks at the document of kind just taken from a peer:
// if it did not see this node's last change of it, that change is merged
// into it (off n.mu, by mergeDoc).
func (n *Node) docArrivedLocked(kind member.RecordKind) {
	o := n.admin.own[kind]
	held := n.mem.store.Doc(kind)
	if o == nil || held == nil || bytes.Equal(held.Marshal(), o.doc.Marshal()) {
		return
	}
	delete(n.admin.own, kind)
	var lost bool
	switch {
	case held.Parent == member.DocHash(o.doc.Marshal()):
		return // built on ours
	case held.Version <= o.doc.Version+1:
		lost = true // the sibling that won, or a version built on it
	default: // further on: we missed the versions between
		lost = !bytes.Equal(mergeLines(o.base, o.doc.Body, held.Body), normLines(held.Body))
	}
	if !lost || n.mem.user == nil || n.admin.merging[kind] {
		return
	}
	if n.admin.merging == nil {
		n.admin.merging = map[member.RecordKind]bool{}
	}
	n.admin.merging[kind] = true
	n.logf("glow: %v version %d of this node and %d of another admin were made at once; merging", kind, o.doc.Version, held.Version)
	n.wg.Add(1)
	go n.mergeDoc(o)
}

// mergeDoc applies this node's lost change o to the document in force.
func (n *Node) mergeDoc(o *docChange) {
	defer n.wg.Done()
	kind := o.doc.Kind
	defer func() {
		n.mu.Lock()
		delete(n.admin.merging, kind)
		n.mu.Unlock()
	}()
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	var (
		d   uint64
		err error
	)
	if kind == member.KindPolicy {
		n.mu.Lock()
		cur, _ := n.policyTextLocked()
		n.mu.Unlock()
		merged := mergeLines(o.base, o.doc.Body, []byte(cur))
		if bytes.Equal(merged, normLines([]byte(cur))) {
			n.logf("glow: policy: this node's change (version %d) is in force already", o.doc.Version)
			return
		}
		var pi PolicyInfo
		pi, err = n.applyPolicy(string(merged))
		d = pi.Version
	} else {
		var doc *member.UserDoc
		doc, _, err = n.changeDoc(kind, func() ([]byte, error) {
			cur := emptyDocBody(kind)
			if h := n.mem.store.Doc(kind); h != nil {
				cur = h.Body
			}
			merged := mergeLines(o.base, o.doc.Body, cur)
			if bytes.Equal(merged, normLines(cur)) {
				return nil, nil // nothing to do
			}
			return merged, nil
		}, nil)
		if doc != nil {
			d = doc.Version
		}
	}
	switch {
	case err != nil:
		n.logf("glow: CONFLICT: %v version %d of this node was overtaken by another admin's and does not merge: %v; apply it again by hand (a policy's text is in %s)",
			kind, o.doc.Version, err, n.state.Path(fmt.Sprintf("policy.d/%08d.policy", o.doc.Version)))
	case d != 0:
		n.logf("glow: %v: this node's change (version %d) merged into another admin's as version %d", kind, o.doc.Version, d)
	}
}

// emptyDocBody is the body in force before a document's first version.
func emptyDocBody(kind member.RecordKind) []byte {
	if kind == member.KindPolicy {
		return []byte(defaultPolicy)
	}
	return nil
}

// mergeLines applies the edit from base to mine onto theirs, by lines:
// lines mine added (not blank, not in theirs) are appended in mine's
// order, lines mine removed are removed. Blank lines are kept as theirs
// has them.
func mergeLines(base, mine, theirs []byte) []byte {
	bl, ml, tl := splitLines(base), splitLines(mine), splitLines(theirs)
	var added []string
	for _, l := range ml {
		if strings.TrimSpace(l) != "" && !slices.Contains(bl, l) && !slices.Contains(tl, l) && !slices.Contains(added, l) {
			added = append(added, l)
		}
	}
	var out []string
	for _, l := range tl {
		if strings.TrimSpace(l) != "" && slices.Contains(bl, l) && !slices.Contains(ml, l) {
			continue // removed by mine
		}
		out = append(out, l)
	}
	return joinLines(append(out, added...))
}

// normLines is b as mergeLines writes it (one newline after each line).
func normLines(b []byte) []byte { return joinLines(splitLines(b)) }

func splitLines(b []byte) []string {
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func joinLines(ls []string) []byte {
	if len(ls) == 0 {
		return nil
	}
	return []byte(strings.Join(ls, "\n") + "\n")
}

// ApplyPolicyOn is ApplyPolicy for a text written from version base: it is
// refused (api.CodeConflict) when the policy in force is another version,
// so a whole-text apply never undoes a change it did not see.
func (n *Node) ApplyPolicyOn(base uint64, text string) (PolicyInfo, error) {
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	n.mu.Lock()
	_, cur := n.policyTextLocked()
	n.mu.Unlock()
	if cur != base {
		return PolicyInfo{}, api.Errorf(api.CodeConflict, "policy not applied: it is at version %d now, not %d (another admin changed it); see 'glow policy show', edit and apply again", cur, base)
	}
	return n.applyPolicy(text)
}
