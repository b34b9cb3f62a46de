package link_test

import (
	"net/url"
	"reflect"
	"strings"
	"testing"

	"glow/link"
)

func TestParseURL(t *testing.T) {
	good := []struct {
		in        string
		transport link.Transport
		addr, url string
	}{
		{"udp://1.2.3.4:41641", link.TransportUDP, "1.2.3.4:41641", "udp://1.2.3.4:41641"},
		{"UDP://[2001:db8::1]:5", link.TransportUDP, "[2001:db8::1]:5", "udp://[2001:db8::1]:5"},
		{"tcp://vps.example.net:443", link.TransportTCP, "vps.example.net:443", "tcp://vps.example.net:443"},
		{"ws://proxy:8080", link.TransportWS, "proxy:8080", "ws://proxy:8080/glow/link"},
		{"wss://example.net/x/glow", link.TransportWSS, "example.net", "wss://example.net/x/glow"},
		{"ssh://me@nas", link.TransportSSH, "nas", "ssh://me@nas"},
		{"ssh://nas:2222", link.TransportSSH, "nas:2222", "ssh://nas:2222"},
		{"ssh://me@nas?glow=/opt/glow&state=/srv/g", link.TransportSSH, "nas", "ssh://me@nas?glow=/opt/glow&state=/srv/g"},
	}
	for _, g := range good {
		tg, err := link.ParseURL(g.in)
		if err != nil {
			t.Errorf("%s: %v", g.in, err)
			continue
		}
		if tg.Transport != g.transport || tg.Addr != g.addr || tg.String() != g.url {
			t.Errorf("%s: got %+v (%s)", g.in, tg, tg)
		}
	}
	bad := map[string]string{
		"1.2.3.4:5":                "no scheme",
		"udp://1.2.3.4":            "needs a port",
		"tcp://host:0":             "bad port",
		"tcp://host:99999":         "bad port",
		"tcp://host:80/path":       "only HOST:PORT",
		"http://host":              "unknown scheme",
		"ssh://me:pw@host":         "no passwords",
		"ssh://-oProxyCommand=x":   "may not start with '-'",
		"ssh://host/dir":           "only [USER@]HOST",
		"ssh://host?cmd=rm":        "only the options glow",
		"ws://user:pw@host/":       "credentials",
		"udp://:5":                 "no host",
		"ws://host/glow/link#frag": "fragment",
	}
	for in, want := range bad {
		_, err := link.ParseURL(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error about %q", in, err, want)
		}
	}
}

func TestSSHArgv(t *testing.T) {
	u, _ := url.Parse("ssh://me@nas.local:2222")
	got := link.SSHArgv(u, "", "/var/lib/glow state")
	want := []string{"ssh", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
		"-T", "-e", "none", "-p", "2222", "--", "me@nas.local", "glow", "--state", "'/var/lib/glow state'", "link", "stdio"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	u, _ = url.Parse("ssh://[2001:db8::1]")
	got = link.SSHArgv(u, "/opt/it's/glow", "")
	tail := got[len(got)-5:]
	if want := []string{"--", "2001:db8::1", `'/opt/it'\''s/glow'`, "link", "stdio"}; !reflect.DeepEqual(tail, want) {
		t.Errorf("got %q, want tail %q", got, want)
	}
}
