package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Limits on a document. A policy arrives over gossip from the user's other
// nodes, so its parser must bound the work any input can cause.
const (
	MaxDocumentSize = 1 << 20 // bytes
	MaxRules        = 10000
	MaxDefinitions  = 10000 // groups plus tags
	MaxMembers      = 10000 // group members plus tag nodes, over all definitions
	maxNameLen      = 63
)

// Document is a parsed policy: group and tag definitions and allow rules,
// with the comments that were written above each of them. The zero value is
// the empty policy (own nodes only). Format writes it back as text.
type Document struct {
	Header  []string // comment block at the top of the file, before a blank line
	Groups  []Group
	Tags    []Tag
	Rules   []Rule
	Trailer []string // comments after the last statement
}

// Group names a set of users: "group friends = bob, carol".
type Group struct {
	Name     string
	Members  []string // user names
	Comments []string // comment lines written directly above, without "#"
	Note     string   // comment at the end of the line
}

// Tag names a set of the owner's nodes: "tag web = nas, desk".
type Tag struct {
	Name     string
	Nodes    []string
	Comments []string
	Note     string
}

// Rule allows From to reach To: "allow bob -> nas:8080/tcp".
type Rule struct {
	From     Peer
	To       Target
	Comments []string
	Note     string
}

// PeerKind says what a Peer names.
type PeerKind uint8

// Kinds of Peer.
const (
	PeerAny   PeerKind = iota + 1 // "*": every authenticated user
	PeerUser                      // "bob": every node of user bob
	PeerNode                      // "bob/laptop": one node of a user
	PeerGroup                     // "group:friends"
	PeerTag                       // "tag:web"
)

// Peer is the source of a rule.
type Peer struct {
	Kind PeerKind
	Name string // user, group or tag name; empty for PeerAny
	Node string // node name for PeerNode
}

func (p Peer) String() string {
	switch p.Kind {
	case PeerAny:
		return "*"
	case PeerUser:
		return p.Name
	case PeerNode:
		return p.Name + "/" + p.Node
	case PeerGroup:
		return "group:" + p.Name
	case PeerTag:
		return "tag:" + p.Name
	}
	return "?"
}

// TargetKind says what a Target names.
type TargetKind uint8

// Kinds of Target.
const (
	TargetAny   TargetKind = iota + 1 // "*": every node of the owner
	TargetNode                        // "nas": one node of the owner
	TargetTag                         // "tag:web": the owner's nodes in a tag
	TargetRoute                       // "route nas 10.71.1.0/24": a prefix a node routes (a subnet router)
	TargetExit                        // "exit vps": the Internet through a node (an exit node)
)

// Proto is a set of protocols a rule allows.
type Proto uint8

// Protocol bits. ProtoOther covers every IP protocol other than TCP, UDP
// and ICMP; only "*" (ProtoAny) grants it.
const (
	ProtoTCP Proto = 1 << iota
	ProtoUDP
	ProtoICMP // ICMP and ICMPv6
	ProtoOther
	ProtoAny = ProtoTCP | ProtoUDP | ProtoICMP | ProtoOther
)

func (p Proto) String() string {
	switch p {
	case ProtoAny:
		return "*"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoTCP | ProtoUDP:
		return "tcp+udp"
	case ProtoICMP:
		return "icmp"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

// PortRange is an inclusive range of ports, 1..65535.
type PortRange struct{ First, Last uint16 }

func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return strconv.Itoa(int(r.First)) + "-" + strconv.Itoa(int(r.Last))
}

// Target is the destination of a rule, and what "glow share" shares:
// "nas:8080/tcp", "tag:web:80,443", "nas:icmp", "*:*".
//
// TargetRoute and TargetExit grant forwarding through a node rather than a
// service on it: every protocol and port (Proto is ProtoAny, Ports nil) to
// the addresses of Prefix, or to public Internet addresses (exit).
type Target struct {
	Kind   TargetKind
	Name   string      // node or tag name; empty for TargetAny
	Ports  []PortRange // nil means every port
	Proto  Proto
	Prefix netip.Prefix // TargetRoute's prefix
}

// String formats t as in a document: node, then ":" and the ports and
// protocol ("nas:80,443/tcp", "nas:icmp", "nas:*").
func (t Target) String() string {
	var b strings.Builder
	switch t.Kind {
	case TargetRoute:
		return "route " + t.Name + " " + t.Prefix.String()
	case TargetExit:
		return "exit " + t.Name
	case TargetAny:
		b.WriteString("*")
	case TargetTag:
		b.WriteString("tag:" + t.Name)
	default:
		b.WriteString(t.Name)
	}
	b.WriteByte(':')
	switch {
	case t.Proto == ProtoAny:
		b.WriteString("*")
		return b.String()
	case t.Proto == ProtoICMP:
		b.WriteString("icmp")
		return b.String()
	case t.Ports == nil:
		b.WriteString("*")
	default:
		for i, r := range t.Ports {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(r.String())
		}
	}
	if t.Proto != ProtoTCP|ProtoUDP || t.Ports == nil {
		b.WriteString("/" + t.Proto.String())
	}
	return b.String()
}

// Equal reports whether t and u grant exactly the same (ports compared in
// order, as written).
func (t Target) Equal(u Target) bool {
	return t.Kind == u.Kind && t.Name == u.Name && t.Proto == u.Proto && t.Prefix == u.Prefix &&
		(t.Ports == nil) == (u.Ports == nil) && slices.Equal(t.Ports, u.Ports)
}

// ParseError is the error Parse returns: the 1-based line at fault (0 for
// the document as a whole) and what is wrong with it.
type ParseError struct {
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return "policy: " + e.Msg
	}
	return "line " + strconv.Itoa(e.Line) + ": " + e.Msg
}

func errorf(line int, format string, args ...any) *ParseError {
	return &ParseError{Line: line, Msg: fmt.Sprintf(format, args...)}
}

// validName reports whether s is a user, node, group or tag name: 1 to 63
// lowercase letters, digits and '-'.
func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func checkName(line int, what, s string) *ParseError {
	if !validName(s) {
		return errorf(line, "invalid %s name %q (want 1 to 63 of a-z, 0-9, -)", what, s)
	}
	return nil
}
