package policy

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Parse reads a policy document. Errors are *ParseError values naming the
// line at fault. Parse never panics and its work is linear in len(src),
// which it caps at MaxDocumentSize.
func Parse(src []byte) (*Document, error) {
	if len(src) > MaxDocumentSize {
		return nil, errorf(0, "document is %d bytes, over the limit of %d", len(src), MaxDocumentSize)
	}
	d := new(Document)
	var (
		lines      docLines
		pending    []string // comment lines waiting for their statement
		sawStmt    bool
		headerDone bool
	)
	for n := 1; len(src) > 0 || n == 1; n++ {
		var raw []byte
		if i := bytes.IndexByte(src, '\n'); i >= 0 {
			raw, src = src[:i], src[i+1:]
		} else {
			raw, src = src, nil
		}
		if err := checkChars(n, raw); err != nil {
			return nil, err
		}
		line := strings.TrimSpace(string(raw))
		switch {
		case line == "":
			if pending != nil && !sawStmt && !headerDone {
				d.Header, pending, headerDone = pending, nil, true
			}
			continue
		case line[0] == '#':
			c := line[1:]
			c = strings.TrimPrefix(c, " ")
			pending = append(pending, c)
			continue
		}
		stmt, note, _ := strings.Cut(line, "#")
		stmt, note = strings.TrimSpace(stmt), strings.TrimSpace(note)
		kw, rest := stmt, ""
		if i := strings.IndexAny(stmt, " \t"); i >= 0 {
			kw, rest = stmt[:i], strings.TrimSpace(stmt[i:])
		}
		switch kw {
		case "group", "tag":
			if len(d.Groups)+len(d.Tags) >= MaxDefinitions {
				return nil, errorf(n, "more than %d group and tag definitions", MaxDefinitions)
			}
			name, members, err := parseDefinition(n, kw, rest)
			if err != nil {
				return nil, err
			}
			if members := lines.members + len(members); members > MaxMembers {
				return nil, errorf(n, "more than %d group members and tag nodes", MaxMembers)
			}
			lines.members += len(members)
			if kw == "group" {
				d.Groups = append(d.Groups, Group{Name: name, Members: members, Comments: pending, Note: note})
				lines.groups = append(lines.groups, n)
			} else {
				d.Tags = append(d.Tags, Tag{Name: name, Nodes: members, Comments: pending, Note: note})
				lines.tags = append(lines.tags, n)
			}
		case "allow":
			if len(d.Rules) >= MaxRules {
				return nil, errorf(n, "more than %d rules", MaxRules)
			}
			r, err := parseRule(n, rest)
			if err != nil {
				return nil, err
			}
			r.Comments, r.Note = pending, note
			d.Rules = append(d.Rules, r)
			lines.rules = append(lines.rules, n)
		default:
			return nil, errorf(n, "unknown statement %q (want group, tag or allow)", kw)
		}
		pending, sawStmt = nil, true
	}
	if pending != nil {
		if !sawStmt && !headerDone {
			d.Header = pending
		} else {
			d.Trailer = pending
		}
	}
	if err := d.check(&lines); err != nil {
		return nil, err
	}
	return d, nil
}

// docLines remembers where each statement was, for error messages.
type docLines struct {
	groups, tags, rules []int
	members             int // group members and tag nodes so far
}

// checkChars rejects bytes that would not survive a round trip through an
// editor: invalid UTF-8 and control characters other than tab (and the \r
// of a CRLF line end).
func checkChars(n int, raw []byte) *ParseError {
	raw = bytes.TrimSuffix(raw, []byte{'\r'})
	if !utf8.Valid(raw) {
		return errorf(n, "invalid UTF-8")
	}
	for _, c := range raw {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return errorf(n, "control character %#02x", c)
		}
	}
	return nil
}

func parseDefinition(n int, kw, rest string) (string, []string, error) {
	name, list, ok := strings.Cut(rest, "=")
	if !ok {
		return "", nil, errorf(n, "%s needs \"=\": %s NAME = a, b", kw, kw)
	}
	name = strings.TrimSpace(name)
	if err := checkName(n, kw, name); err != nil {
		return "", nil, err
	}
	what := "user"
	if kw == "tag" {
		what = "node"
	}
	list = strings.TrimSpace(list)
	if list == "" {
		return name, nil, nil
	}
	var members []string
	for m := range strings.SplitSeq(list, ",") {
		m = strings.TrimSpace(m)
		if err := checkName(n, what, m); err != nil {
			return "", nil, err
		}
		members = append(members, m)
	}
	if dup := firstDuplicate(members); dup != "" {
		return "", nil, errorf(n, "%s %q listed twice in %s %q", what, dup, kw, name)
	}
	return name, members, nil
}

func parseRule(n int, rest string) (Rule, error) {
	from, to, ok := strings.Cut(rest, "->")
	if !ok {
		return Rule{}, errorf(n, "allow needs \"->\": allow SOURCE -> NODE:PORTS")
	}
	from, to = strings.TrimSpace(from), strings.TrimSpace(to)
	p, err := parsePeer(n, from)
	if err != nil {
		return Rule{}, err
	}
	if t, ok, err := parseForward(n, to); err != nil {
		return Rule{}, err
	} else if ok {
		return Rule{From: p, To: t}, nil
	}
	t, err := parseTarget(n, to, ProtoTCP|ProtoUDP)
	if err != nil {
		return Rule{}, err
	}
	return Rule{From: p, To: t}, nil
}

func parsePeer(n int, s string) (Peer, *ParseError) {
	switch {
	case s == "*":
		return Peer{Kind: PeerAny}, nil
	case strings.HasPrefix(s, "group:"):
		p := Peer{Kind: PeerGroup, Name: s[len("group:"):]}
		return p, checkName(n, "group", p.Name)
	case strings.HasPrefix(s, "tag:"):
		p := Peer{Kind: PeerTag, Name: s[len("tag:"):]}
		return p, checkName(n, "tag", p.Name)
	}
	if user, node, ok := strings.Cut(s, "/"); ok {
		if err := checkName(n, "user", user); err != nil {
			return Peer{}, err
		}
		return Peer{Kind: PeerNode, Name: user, Node: node}, checkName(n, "node", node)
	}
	if s == "" {
		return Peer{}, errorf(n, "missing source before \"->\"")
	}
	return Peer{Kind: PeerUser, Name: s}, checkName(n, "user", s)
}

// parseTarget parses NODE:PORTS[/PROTO]; def is the protocol set of a port
// list without "/PROTO".
func parseTarget(n int, s string, def Proto) (Target, *ParseError) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Target{}, errorf(n, "destination %q needs \":\" and ports, as in nas:8080/tcp, nas:icmp or nas:*", s)
	}
	host, spec := s[:i], s[i+1:]
	var t Target
	switch {
	case host == "*":
		t.Kind = TargetAny
	case strings.HasPrefix(host, "tag:"):
		t.Kind, t.Name = TargetTag, host[len("tag:"):]
		if err := checkName(n, "tag", t.Name); err != nil {
			return Target{}, err
		}
	default:
		t.Kind, t.Name = TargetNode, host
		if err := checkName(n, "node", t.Name); err != nil {
			return Target{}, err
		}
	}
	switch spec {
	case "*":
		t.Proto = ProtoAny
		return t, nil
	case "icmp":
		t.Proto = ProtoICMP
		return t, nil
	}
	ports, proto, hasProto := strings.Cut(spec, "/")
	t.Proto = def
	if hasProto {
		switch proto {
		case "tcp":
			t.Proto = ProtoTCP
		case "udp":
			t.Proto = ProtoUDP
		case "tcp+udp":
			t.Proto = ProtoTCP | ProtoUDP
		case "icmp":
			if ports != "*" {
				return Target{}, errorf(n, "icmp has no ports: write %s:icmp", host)
			}
			t.Proto = ProtoICMP
			return t, nil
		default:
			return Target{}, errorf(n, "unknown protocol %q (want tcp, udp, tcp+udp or icmp)", proto)
		}
	}
	if ports == "*" {
		return t, nil
	}
	if ports == "" {
		return Target{}, errorf(n, "missing ports after %q", host+":")
	}
	for p := range strings.SplitSeq(ports, ",") {
		r, err := parsePortRange(n, p)
		if err != nil {
			return Target{}, err
		}
		t.Ports = append(t.Ports, r)
	}
	return t, nil
}

// parseForward parses the targets that grant forwarding through a node:
// "route NODE PREFIX" and "exit NODE". ok is false for any other target.
func parseForward(n int, s string) (t Target, ok bool, err *ParseError) {
	f := strings.Fields(s)
	if len(f) == 0 || f[0] != "route" && f[0] != "exit" {
		return Target{}, false, nil
	}
	switch {
	case f[0] == "exit" && len(f) == 2:
		t = Target{Kind: TargetExit, Name: f[1], Proto: ProtoAny}
	case f[0] == "route" && len(f) == 3:
		pfx, perr := netip.ParsePrefix(f[2])
		if perr != nil {
			return Target{}, true, errorf(n, "route %s %q: want a prefix such as 10.71.1.0/24", f[1], f[2])
		}
		t = Target{Kind: TargetRoute, Name: f[1], Proto: ProtoAny, Prefix: pfx}
	case f[0] == "exit":
		return Target{}, true, errorf(n, "want \"exit NODE\"")
	default:
		return Target{}, true, errorf(n, "want \"route NODE PREFIX\"")
	}
	if err := checkTarget(t); err != nil {
		err.Line = n
		return Target{}, true, err
	}
	return t, true, nil
}

func parsePortRange(n int, s string) (PortRange, *ParseError) {
	a, b, isRange := strings.Cut(s, "-")
	first, err := parsePort(n, a)
	if err != nil {
		return PortRange{}, err
	}
	last := first
	if isRange {
		if last, err = parsePort(n, b); err != nil {
			return PortRange{}, err
		}
		if last < first {
			return PortRange{}, errorf(n, "port range %q is reversed", s)
		}
	}
	return PortRange{first, last}, nil
}

func parsePort(n int, s string) (uint16, *ParseError) {
	if s == "" || len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return 0, errorf(n, "bad port %q", s)
	}
	v, _ := strconv.Atoi(s)
	if v == 0 || v > 65535 {
		return 0, errorf(n, "port %d out of range 1-65535", v)
	}
	return uint16(v), nil
}

// Validate checks a document built or edited in code the way Parse checks
// text: names, ports, protocols, references to groups and tags, duplicate
// definitions, limits. Errors are *ParseError with Line 0.
func (d *Document) Validate() error {
	if err := d.check(nil); err != nil {
		return err
	}
	return nil
}

// check validates d; lines, when not nil, gives the line of each statement
// for error messages.
func (d *Document) check(lines *docLines) *ParseError {
	at := func(ls []int, i int, what string) (int, string) {
		if lines == nil {
			return 0, what + " " + strconv.Itoa(i+1) + ": "
		}
		return ls[i], ""
	}
	if len(d.Rules) > MaxRules {
		return errorf(0, "%d rules, over the limit of %d", len(d.Rules), MaxRules)
	}
	if len(d.Groups)+len(d.Tags) > MaxDefinitions {
		return errorf(0, "%d definitions, over the limit of %d", len(d.Groups)+len(d.Tags), MaxDefinitions)
	}
	members := 0
	for _, g := range d.Groups {
		members += len(g.Members)
	}
	for _, t := range d.Tags {
		members += len(t.Nodes)
	}
	if members > MaxMembers {
		return errorf(0, "%d group members and tag nodes, over the limit of %d", members, MaxMembers)
	}
	if err := checkComments(0, d.Header, ""); err != nil {
		return err
	}
	if err := checkComments(0, d.Trailer, ""); err != nil {
		return err
	}
	groups := make(map[string]int, len(d.Groups))
	for i, g := range d.Groups {
		n, pre := at(lineSlice(lines, 'g'), i, "group")
		if first, dup := groups[g.Name]; dup {
			return errorf(n, "%sduplicate group %q (first defined on line %d)", pre, g.Name, first)
		}
		groups[g.Name] = n
		if lines == nil {
			if err := checkMembers(n, pre, "group", g.Name, "user", g.Members); err != nil {
				return err
			}
		}
		if err := checkComments(n, g.Comments, g.Note); err != nil {
			return err
		}
	}
	tags := make(map[string]int, len(d.Tags))
	for i, t := range d.Tags {
		n, pre := at(lineSlice(lines, 't'), i, "tag")
		if first, dup := tags[t.Name]; dup {
			return errorf(n, "%sduplicate tag %q (first defined on line %d)", pre, t.Name, first)
		}
		tags[t.Name] = n
		if lines == nil {
			if err := checkMembers(n, pre, "tag", t.Name, "node", t.Nodes); err != nil {
				return err
			}
		}
		if err := checkComments(n, t.Comments, t.Note); err != nil {
			return err
		}
	}
	for i, r := range d.Rules {
		n, pre := at(lineSlice(lines, 'r'), i, "rule")
		if lines == nil {
			if err := checkPeer(r.From); err != nil {
				return errorf(n, "%s%s", pre, err.Msg)
			}
			if err := checkTarget(r.To); err != nil {
				return errorf(n, "%s%s", pre, err.Msg)
			}
		}
		switch r.From.Kind {
		case PeerGroup:
			if _, ok := groups[r.From.Name]; !ok {
				return errorf(n, "%sunknown group %q", pre, r.From.Name)
			}
		case PeerTag:
			if _, ok := tags[r.From.Name]; !ok {
				return errorf(n, "%sunknown tag %q", pre, r.From.Name)
			}
		}
		if r.To.Kind == TargetTag {
			if _, ok := tags[r.To.Name]; !ok {
				return errorf(n, "%sunknown tag %q", pre, r.To.Name)
			}
		}
		if err := checkComments(n, r.Comments, r.Note); err != nil {
			return err
		}
	}
	return nil
}

func lineSlice(l *docLines, kind byte) []int {
	switch {
	case l == nil:
		return nil
	case kind == 'g':
		return l.groups
	case kind == 't':
		return l.tags
	}
	return l.rules
}

func checkMembers(n int, pre, kw, name, what string, members []string) *ParseError {
	if err := checkName(n, kw, name); err != nil {
		return errorf(n, "%s%s", pre, err.Msg)
	}
	for _, m := range members {
		if err := checkName(n, what, m); err != nil {
			return errorf(n, "%s%s", pre, err.Msg)
		}
	}
	if dup := firstDuplicate(members); dup != "" {
		return errorf(n, "%s%s %q listed twice in %s %q", pre, what, dup, kw, name)
	}
	return nil
}

// firstDuplicate returns the first name listed twice in names, or "".
func firstDuplicate(names []string) string {
	seen := make(map[string]bool, len(names))
	for _, s := range names {
		if seen[s] {
			return s
		}
		seen[s] = true
	}
	return ""
}

// checkComments rejects comments that Format could not write back: line
// breaks, control characters, and notes or comments with outer spaces.
func checkComments(n int, comments []string, note string) *ParseError {
	for _, c := range comments {
		if err := checkChars(n, []byte(c)); err != nil || strings.ContainsRune(c, '\r') || strings.TrimRight(c, " \t") != c {
			return errorf(n, "comment %q cannot be written", c)
		}
	}
	if err := checkChars(n, []byte(note)); err != nil || strings.ContainsRune(note, '\r') || strings.TrimSpace(note) != note {
		return errorf(n, "note %q cannot be written", note)
	}
	return nil
}

func checkPeer(p Peer) *ParseError {
	switch p.Kind {
	case PeerAny:
		if p.Name != "" || p.Node != "" {
			return errorf(0, "source * takes no name")
		}
		return nil
	case PeerUser, PeerGroup, PeerTag:
		if p.Node != "" {
			return errorf(0, "source %s takes no node", p)
		}
	case PeerNode:
		if err := checkName(0, "node", p.Node); err != nil {
			return err
		}
	default:
		return errorf(0, "source has no kind")
	}
	return checkName(0, "source", p.Name)
}

func checkTarget(t Target) *ParseError {
	switch t.Kind {
	case TargetAny:
		if t.Name != "" {
			return errorf(0, "destination * takes no name")
		}
	case TargetNode, TargetTag:
		if err := checkName(0, "destination", t.Name); err != nil {
			return err
		}
	case TargetRoute, TargetExit:
		if err := checkName(0, "node", t.Name); err != nil {
			return err
		}
		if t.Proto != ProtoAny || t.Ports != nil {
			return errorf(0, "route and exit grant every protocol and port")
		}
		p := t.Prefix
		if t.Kind == TargetExit && p.IsValid() {
			return errorf(0, "exit takes no prefix")
		}
		if t.Kind == TargetRoute && (!p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() || p != p.Masked() || p.Bits() == 0) {
			return errorf(0, "route %s %s: want a prefix without host bits (and not /0: use exit)", t.Name, p)
		}
		return nil
	default:
		return errorf(0, "destination has no kind")
	}
	switch t.Proto {
	case ProtoAny, ProtoICMP:
		if t.Ports != nil {
			return errorf(0, "protocol %s takes no ports", t.Proto)
		}
	case ProtoTCP, ProtoUDP, ProtoTCP | ProtoUDP:
		if t.Ports != nil && len(t.Ports) == 0 {
			return errorf(0, "empty port list (use nil for every port)")
		}
		for _, r := range t.Ports {
			if r.First == 0 || r.Last < r.First {
				return errorf(0, "bad port range %d-%d", r.First, r.Last)
			}
		}
	default:
		return errorf(0, "protocol set %s cannot be written", t.Proto)
	}
	return nil
}

// Format writes d as canonical text: the header, then groups, tags and
// rules in their order, each section after a blank line, each statement
// under its comments, then the trailer. For every document Parse returns
// (and every valid one built in code whose comments sit where Parse would
// put them), Parse(d.Format()) is equal to d.
func (d *Document) Format() []byte {
	var b bytes.Buffer
	section := func() {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
	}
	comments := func(cs []string) {
		for _, c := range cs {
			if c == "" {
				b.WriteString("#\n")
			} else {
				b.WriteString("# " + c + "\n")
			}
		}
	}
	stmt := func(cs []string, s, note string) {
		comments(cs)
		b.WriteString(s)
		if note != "" {
			b.WriteString(" # " + note)
		}
		b.WriteByte('\n')
	}
	def := func(kw, name string, members []string) string {
		s := kw + " " + name + " ="
		if len(members) > 0 {
			s += " " + strings.Join(members, ", ")
		}
		return s
	}
	comments(d.Header)
	if len(d.Groups) > 0 {
		section()
		for _, g := range d.Groups {
			stmt(g.Comments, def("group", g.Name, g.Members), g.Note)
		}
	}
	if len(d.Tags) > 0 {
		section()
		for _, t := range d.Tags {
			stmt(t.Comments, def("tag", t.Name, t.Nodes), t.Note)
		}
	}
	if len(d.Rules) > 0 {
		section()
		for _, r := range d.Rules {
			stmt(r.Comments, "allow "+r.From.String()+" -> "+r.To.String(), r.Note)
		}
	}
	if len(d.Trailer) > 0 {
		section()
		comments(d.Trailer)
	}
	return b.Bytes()
}
