package api

import (
	"fmt"
	"time"
)

// The JSON bodies of the local API. The daemon (package overlay) fills
// them in; its names for them are aliases of these. Field names of Status
// follow CLI.md.

// Status is what `glow status` shows.
type Status struct {
	Self  SelfStatus        `json:"self"`
	Peers []PeerStatus      `json:"peers"`
	Drops map[string]uint64 `json:"drops"`
	// Conflicts are friends' addresses this node does not route (overlay's shadow.go).
	Conflicts []AddrConflict `json:"conflicts"`
}

// AddrConflict is an address a friend's certificate claims that another
// user's node holds too (or that lies in our /48): not routed to the friend.
type AddrConflict struct {
	Addr   string `json:"addr"`
	Node   string `json:"node"`   // the friend's node claiming it (node.user)
	Holder string `json:"holder"` // who keeps it (node.user)
}

// SelfStatus describes this node.
type SelfStatus struct {
	Name      string   `json:"name"`
	User      string   `json:"user"`
	IPv4      string   `json:"ipv4"`
	IPv6      string   `json:"ipv6"`
	ID        string   `json:"id"`
	Admin     bool     `json:"admin"`
	Port      uint16   `json:"port"`
	Endpoints []string `json:"endpoints"`
	Expires   string   `json:"cert_expires"`
	// Offered are the prefixes this node offers to route (0.0.0.0/0 and
	// ::/0 for an exit node); ExitNode is the exit node it is told to use.
	Offered  []string `json:"offered_routes"`
	ExitNode string   `json:"exit_node,omitempty"`
	// ExitNodeInUse: the exit node offers the default routes, they are
	// routed to it and it is online; while not, Internet traffic is
	// blocked (fail closed).
	ExitNodeInUse bool `json:"exit_node_in_use,omitempty"`
	// Warning says when the certificate expired, or is near its expiry
	// with no admin reachable to renew it ("" when it is fine).
	Warning string `json:"warning,omitempty"`
}

// PeerStatus describes one known peer.
type PeerStatus struct {
	Name     string   `json:"name"`
	User     string   `json:"user"`
	IPv4     string   `json:"ipv4"`
	IPv6     string   `json:"ipv6"`
	ID       string   `json:"id"`
	Online   bool     `json:"online"`
	Path     string   `json:"path"` // direct, relay, none
	Endpoint string   `json:"endpoint,omitempty"`
	Via      []string `json:"via"`
	RTTms    float64  `json:"rtt_ms"`
	Loss     float64  `json:"loss"` // share of recent heartbeats unanswered on the current path
	LastSeen string   `json:"last_seen,omitempty"`
	// Standby: the relays of the second path kept warm while the peer is
	// busy on a direct path, once proven; traffic moves there when the
	// direct path goes silent.
	Standby []string `json:"standby,omitempty"`
	// Session: the peer is configured in WireGuard now (it carried traffic
	// in the last minutes; idle peers are configured on demand).
	Session bool `json:"session"`
	// Offered are the prefixes the peer offers to route; Routes those
	// this node routes through it (a prefix two peers offer goes to one).
	Offered []string `json:"offered_routes,omitempty"`
	Routes  []string `json:"routes,omitempty"`
	Expires string   `json:"cert_expires"` // RFC 3339; renewed at half its lifetime
}

// PingResult is one overlay-level ping reply.
type PingResult struct {
	Peer     string        `json:"peer"`
	Path     string        `json:"path"`     // direct, relay
	Endpoint string        `json:"endpoint"` // address the reply came from
	Via      []string      `json:"via"`      // relay nodes, in order
	RTT      time.Duration `json:"rtt_ns"`
	Err      string        `json:"error,omitempty"`
}

// Netcheck is what `glow netcheck` reports.
type Netcheck struct {
	Mapping   string           `json:"mapping"` // endpoint-independent, endpoint-dependent, unknown
	Reflexive []string         `json:"reflexive"`
	Servers   []NetcheckServer `json:"servers"`
	PortMap   PortMapProbe     `json:"portmap"`
	Mapped    string           `json:"mapped,omitempty"`
	Relays    []NetcheckRelay  `json:"relays"`
	LocalPort uint16           `json:"local_port"`           // this node's UDP port
	PortClash string           `json:"port_clash,omitempty"` // a LAN neighbour on the same port, and what was done
}

// NetcheckServer is one STUN server's answer.
type NetcheckServer struct {
	Server    string  `json:"server"`
	Reflexive string  `json:"reflexive,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
}

// NetcheckRelay is a peer with a public address, usable as a relay and STUN server.
type NetcheckRelay struct {
	Name  string  `json:"name"`
	Addr  string  `json:"addr"`
	RTTms float64 `json:"rtt_ms"`
}

// PortMapProbe says which port mapping protocols the gateway answered. It
// has the fields of nat.PortMapProbe (the daemon converts one to the
// other), so this package need not import nat and its dependencies.
type PortMapProbe struct {
	UPnP, PMP, PCP bool
}

func (p PortMapProbe) String() string {
	return fmt.Sprintf("UPnP=%v NAT-PMP=%v PCP=%v", p.UPnP, p.PMP, p.PCP)
}

// FriendInfo is one line of `glow friend list`.
type FriendInfo struct {
	Name   string   `json:"name"`
	Key    string   `json:"key"`
	Nodes  []string `json:"nodes"`  // their nodes this node knows
	Shared []string `json:"shared"` // what they may reach of ours
}

// PolicyInfo is the policy in force.
type PolicyInfo struct {
	Version uint64 `json:"version"`
	Text    string `json:"text"`
}

// PolicyVersion is one entry of the policy history.
type PolicyVersion struct {
	Version uint64 `json:"version"`
	Time    string `json:"time"`
	Rules   int    `json:"rules"`
	Current bool   `json:"current"`
}

// LinkStatus describes a configured or live stream link for `glow link list`.
type LinkStatus struct {
	URL    string `json:"url,omitempty"` // configured links
	Peer   string `json:"peer,omitempty"`
	Via    string `json:"via,omitempty"` // the live link's name
	Up     bool   `json:"up"`
	InUse  bool   `json:"in_use"` // carries the peer's traffic (no UDP path)
	Status string `json:"status,omitempty"`
}
