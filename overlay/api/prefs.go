package api

import (
	"bytes"
	"encoding/json"
	"net/netip"
)

// Prefs are the settings of a node that `glow up` flags set and
// `glow set` changes on a running node (POST /v1/set); the node keeps them
// in its state directory across restarts.
type Prefs struct {
	// AdvertiseRoutes are the prefixes this node offers to route for the
	// user's other nodes (a subnet router), masqueraded.
	AdvertiseRoutes []netip.Prefix `json:"advertise_routes"`
	// AdvertiseExitNode offers 0.0.0.0/0 and ::/0 (an exit node).
	AdvertiseExitNode bool `json:"advertise_exit_node"`
	// ExitNode is the node (NAME, NAME.USER or its id) this node sends its
	// Internet traffic through; "" for none.
	ExitNode string `json:"exit_node"`
	// ExitNodeAllowLANAccess keeps the local LAN's prefixes off the exit
	// node while one is in use.
	ExitNodeAllowLANAccess bool `json:"exit_node_allow_lan_access"`
	// AcceptRoutesFrom names the friends (users) whose nodes' subnet
	// routes this node takes; a friend not named here offers none to it.
	// The user's own nodes' routes are always taken.
	AcceptRoutesFrom []string `json:"accept_routes_from,omitempty"`
}

// PrefsChange says which Prefs fields to change: nil fields are left as
// they are.
type PrefsChange struct {
	AdvertiseRoutes        *[]netip.Prefix `json:"advertise_routes,omitempty"`
	AdvertiseExitNode      *bool           `json:"advertise_exit_node,omitempty"`
	ExitNode               *string         `json:"exit_node,omitempty"`
	ExitNodeAllowLANAccess *bool           `json:"exit_node_allow_lan_access,omitempty"`
	AcceptRoutesFrom       *[]string       `json:"accept_routes_from,omitempty"`
}

// Empty reports whether c changes nothing.
func (c PrefsChange) Empty() bool {
	return c.AdvertiseRoutes == nil && c.AdvertiseExitNode == nil && c.ExitNode == nil && c.ExitNodeAllowLANAccess == nil &&
		c.AcceptRoutesFrom == nil
}

// Apply returns p with c's fields changed.
func (c PrefsChange) Apply(p Prefs) Prefs {
	if c.AdvertiseRoutes != nil {
		p.AdvertiseRoutes = append([]netip.Prefix(nil), (*c.AdvertiseRoutes)...)
	}
	if c.AdvertiseExitNode != nil {
		p.AdvertiseExitNode = *c.AdvertiseExitNode
	}
	if c.ExitNode != nil {
		p.ExitNode = *c.ExitNode
	}
	if c.ExitNodeAllowLANAccess != nil {
		p.ExitNodeAllowLANAccess = *c.ExitNodeAllowLANAccess
	}
	if c.AcceptRoutesFrom != nil {
		p.AcceptRoutesFrom = append([]string(nil), (*c.AcceptRoutesFrom)...)
	}
	return p
}

// Set changes the running node's prefs and returns them as they are now.
func (c *Client) Set(ch PrefsChange) (Prefs, error) {
	var p Prefs
	body, err := json.Marshal(ch)
	if err != nil {
		return p, err
	}
	err = c.doBody("POST", "/v1/set", bytes.NewReader(body), &p)
	return p, err
}
