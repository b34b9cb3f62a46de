package policy

import "fmt"

// Reason says why the filter let a packet through or dropped it. Every
// decision has one, and the Filter counts each.
type Reason uint8

// Reasons. The ok-* ones allow the packet; the others drop it.
const (
	ReasonOK                 Reason = iota + 1 // "ok": a rule allows it
	ReasonOwn                                  // "ok-own": from one of the owner's own nodes
	ReasonReply                                // "ok-reply": part of a flow this node initiated
	ReasonFragment                             // "ok-fragment": later fragment of an allowed datagram
	ReasonRelated                              // "ok-icmp-error": ICMP error about a known flow
	ReasonOutbound                             // "ok-outbound": leaving this node
	ReasonNotShared                            // "not-shared": no rule allows it
	ReasonUnknownSource                        // "unknown-source": the source address has no owner
	ReasonMalformed                            // "malformed": not a well-formed IPv4/IPv6 packet
	ReasonFragmentUnmatched                    // "fragment-unmatched": later fragment without an allowed first one
	ReasonICMPErrorUnmatched                   // "icmp-error-unmatched": ICMP error about no known flow
	ReasonUnsolicited                          // "unsolicited-reply": echo reply to no echo request
	ReasonWrongDst                             // "wrong-destination": not to this node's own overlay address
	numReasons
)

var reasonNames = [numReasons]string{
	0:                        "none",
	ReasonOK:                 "ok",
	ReasonOwn:                "ok-own",
	ReasonReply:              "ok-reply",
	ReasonFragment:           "ok-fragment",
	ReasonRelated:            "ok-icmp-error",
	ReasonOutbound:           "ok-outbound",
	ReasonNotShared:          "not-shared",
	ReasonUnknownSource:      "unknown-source",
	ReasonMalformed:          "malformed",
	ReasonFragmentUnmatched:  "fragment-unmatched",
	ReasonICMPErrorUnmatched: "icmp-error-unmatched",
	ReasonUnsolicited:        "unsolicited-reply",
	ReasonWrongDst:           "wrong-destination",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// MarshalText makes a Reason a readable JSON value and map key.
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// Allowed reports whether packets with this reason pass.
func (r Reason) Allowed() bool { return r >= ReasonOK && r <= ReasonOutbound }

// Verdict is the filter's decision on one packet.
type Verdict struct {
	Allow  bool
	Reason Reason
}

func (v Verdict) String() string {
	if v.Allow {
		return "allow (" + v.Reason.String() + ")"
	}
	return "drop (" + v.Reason.String() + ")"
}
