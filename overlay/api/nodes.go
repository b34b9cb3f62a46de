package api

import (
	"bytes"
	neturl "net/url"
	"strconv"
)

// NodeInfo is one node of the user in `glow nodes list`.
type NodeInfo struct {
	Name  string   `json:"name"`
	ID    string   `json:"id"`
	IPv4  string   `json:"ipv4"`
	IPv6  string   `json:"ipv6"`
	Addrs []string `json:"endpoints"` // underlay addresses it last published
	Admin bool     `json:"admin"`     // its certificate says admin (it holds the user key)
	Self  bool     `json:"self"`      // the node answering
	// Expires is when its certificate ends (RFC 3339, UTC); "" for a
	// removed node whose certificate is gone.
	Expires string `json:"cert_expires"`
	Online  bool   `json:"online"`
	Revoked bool   `json:"revoked"` // removed (glow nodes remove)
}

// Nodes lists every node of this node's user.
func (c *Client) Nodes() ([]NodeInfo, error) {
	var out []NodeInfo
	err := c.do("GET", "/v1/nodes", &out)
	return out, err
}

// AdminChange is the answer to promote and demote.
type AdminChange struct {
	Node  string `json:"node"`
	Admin bool   `json:"admin"`
	// Confirmed: the node answered that it stored the user key (promote).
	// A demoted node deletes its copy when its new certificate reaches it.
	Confirmed bool `json:"confirmed"`
}

// Promote gives the user key to another node of the user (admin nodes only).
func (c *Client) Promote(name string) (AdminChange, error) {
	var out AdminChange
	err := c.do("POST", "/v1/nodes/promote?name="+neturl.QueryEscape(name), &out)
	return out, err
}

// Demote takes the admin role back from a node (admin nodes only).
func (c *Client) Demote(name string) (AdminChange, error) {
	var out AdminChange
	err := c.do("POST", "/v1/nodes/demote?name="+neturl.QueryEscape(name), &out)
	return out, err
}

// ApplyPolicyOn applies a policy text written from version base; the
// daemon refuses it (ErrConflict) if the policy in force is another version.
func (c *Client) ApplyPolicyOn(text []byte, base uint64) (PolicyInfo, error) {
	var p PolicyInfo
	err := c.doBody("POST", "/v1/policy?base="+strconv.FormatUint(base, 10), bytes.NewReader(text), &p)
	return p, err
}
