package api

import (
	"net/netip"
	neturl "net/url"
)

// DeviceInfo is one plain WireGuard device of the user (glow device list).
type DeviceInfo struct {
	Name      string     `json:"name"`
	FQDN      string     `json:"fqdn"`
	IPv4      netip.Addr `json:"ipv4"`
	IPv6      netip.Addr `json:"ipv6"`
	Via       string     `json:"via"`        // the via node's name
	PublicKey string     `json:"public_key"` // the device's WireGuard key, base64
	// On the via node only: where the device was last seen, and when its
	// last handshake was (RFC 3339); empty if never.
	Endpoint      string `json:"endpoint,omitempty"`
	LastHandshake string `json:"last_handshake,omitempty"`
}

// DeviceAdded is what glow device add gets: the device and its wg-quick
// configuration, which holds its private key (printed once, kept nowhere).
type DeviceAdded struct {
	Device DeviceInfo `json:"device"`
	Config string     `json:"config"`
}

// AddDevice creates a device (admin node): via "" is the node asked,
// endpoint "" the via node's public endpoint.
func (c *Client) AddDevice(name, via, endpoint string) (DeviceAdded, error) {
	var out DeviceAdded
	q := neturl.Values{"name": {name}, "via": {via}, "endpoint": {endpoint}}
	err := c.do("POST", "/v1/devices/add?"+q.Encode(), &out)
	return out, err
}

// RemoveDevice removes a device everywhere (admin node).
func (c *Client) RemoveDevice(name string) error {
	return c.do("POST", "/v1/devices/remove?name="+neturl.QueryEscape(name), nil)
}

// Devices lists the user's devices.
func (c *Client) Devices() ([]DeviceInfo, error) {
	var out []DeviceInfo
	err := c.do("GET", "/v1/devices", &out)
	return out, err
}
