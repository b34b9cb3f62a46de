package relay

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseTURNURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want TURNClientConfig
	}{
		{"turn://user:pass@198.51.100.7:3478", TURNClientConfig{Server: netip.MustParseAddrPort("198.51.100.7:3478"), Username: "user", Password: "pass"}},
		{"turn://user:pass@198.51.100.7", TURNClientConfig{Server: netip.MustParseAddrPort("198.51.100.7:3478"), Username: "user", Password: "pass"}},
		{"TURN://u:p%40ss%3Aw@127.0.0.1:5000/", TURNClientConfig{Server: netip.MustParseAddrPort("127.0.0.1:5000"), Username: "u", Password: "p@ss:w"}},
		{"turn://u:p@turn.example.net:3479?transport=udp&realm=example.net", TURNClientConfig{ServerName: "turn.example.net:3479", Username: "u", Password: "p", Realm: "example.net"}},
		{"turn:198.51.100.7?transport=UDP", TURNClientConfig{Server: netip.MustParseAddrPort("198.51.100.7:3478")}},
		{"turn:turn.example.net:443", TURNClientConfig{ServerName: "turn.example.net:443"}},
		{"turn://[::ffff:192.0.2.1]:1", TURNClientConfig{Server: netip.MustParseAddrPort("192.0.2.1:1")}},
	} {
		got, err := ParseTURNURL(tc.in)
		if err != nil {
			t.Errorf("ParseTURNURL(%q): %v", tc.in, err)
			continue
		}
		if urlFields(got) != urlFields(tc.want) {
			t.Errorf("ParseTURNURL(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// urlFields is what ParseTURNURL fills, comparable (the config holds a func).
type turnURLFields struct {
	server                        netip.AddrPort
	serverName, user, pass, realm string
}

func urlFields(c TURNClientConfig) turnURLFields {
	return turnURLFields{c.Server, c.ServerName, c.Username, c.Password, c.Realm}
}

func TestParseTURNURLErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "no scheme"},
		{"198.51.100.7:3478", "scheme"},
		{"turns://u:p@198.51.100.7", "TLS"},
		{"stun:198.51.100.7", "STUN"},
		{"http://u:p@198.51.100.7", "not turn"},
		{"turn://u:s3cret@198.51.100.7:0", "port"},
		{"turn://u:s3cret@198.51.100.7:99999", "port"},
		{"turn://u:s3cret@198.51.100.7:", "empty port"},
		{"turn://u:s3cret@[2001:db8::1]:3478", "IPv4"},
		{"turn://u:s3cret@[fe80::1%25eth0]:3478", "IPv4"},
		{"turn://u:s3cret@198.51.100.7?transport=tcp", "transport"},
		{"turn://u:s3cret@198.51.100.7?foo=bar", "unknown query"},
		{"turn://u:s3cret@198.51.100.7/path", "path"},
		{"turn://u:s3cret@198.51.100.7#frag", "fragment"},
		{"turn://u@198.51.100.7", "no password"},
		{"turn://:s3cret@198.51.100.7", "no username"},
		{"turn://u:s3cret@", "no host"},
		{"turn://u:s3cret@bad_host!:1", "neither"},
		{"turn://u:s3cret@999.1.1.1", "neither"},
		{"turn://u:s3cret@-x.example", "neither"},
		{"turn://u:s3%cret@198.51.100.7", "malformed"},
		{"turn://u:s3cret@198.51.100.7 ", "white space"},
	} {
		_, err := ParseTURNURL(tc.in)
		if err == nil {
			t.Errorf("ParseTURNURL(%q) succeeded, want an error about %s", tc.in, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTURNURL(%q): %v, want an error about %s", tc.in, err, tc.want)
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "s3%cret") {
			t.Errorf("ParseTURNURL(%q) error repeats the password: %v", tc.in, err)
		}
	}
}

// FuzzParseTURNURL checks that any string either fails or yields a config
// DialTURN can use: one server (an IPv4 address or a host:port name) with
// a port, and credentials both present or both absent.
func FuzzParseTURNURL(f *testing.F) {
	for _, s := range []string{
		"turn://user:pass@198.51.100.7:3478",
		"turn:198.51.100.7?transport=udp",
		"turn://u:p%40ss@turn.example.net:3479?realm=r",
		"turns://u:p@[2001:db8::1]",
		"turn://u:p@[::ffff:1.2.3.4]:1",
		"turn:%zz",
		"turn://@:",
		"turn:0:a@",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := ParseTURNURL(s)
		if err != nil {
			if urlFields(cfg) != (turnURLFields{}) {
				t.Fatalf("%q: error %v with a config %+v", s, err, cfg)
			}
			return
		}
		switch {
		case cfg.Server.IsValid() == (cfg.ServerName != ""):
			t.Fatalf("%q: want exactly one of Server (%v) and ServerName (%q)", s, cfg.Server, cfg.ServerName)
		case cfg.Server.IsValid() && (!cfg.Server.Addr().Is4() || cfg.Server.Port() == 0):
			t.Fatalf("%q: Server %v is not IPv4 with a port", s, cfg.Server)
		case (cfg.Username == "") != (cfg.Password == ""):
			t.Fatalf("%q: user %q with password set %v", s, cfg.Username, cfg.Password != "")
		}
		if cfg.ServerName != "" {
			cfg2, err := ParseTURNURL("turn://" + cfg.ServerName)
			if err != nil || cfg2.ServerName != cfg.ServerName {
				t.Fatalf("%q: ServerName %q does not parse back: %v %+v", s, cfg.ServerName, err, cfg2)
			}
		}
	})
}
