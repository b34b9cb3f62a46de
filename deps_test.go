package glow

// Guards of the package map in ../shared/STYLE.md: leaves never import the
// overlay (or cmd), policy imports no networking, internal/wire and the
// local-API client overlay/api only the standard library, and every package
// has a doc comment.

import (
	"os/exec"
	"strings"
	"testing"
)

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

func TestImportDirection(t *testing.T) {
	leaves := []string{"glow/tun", "glow/nat", "glow/relay", "glow/link", "glow/dns", "glow/policy", "glow/internal/wire"}
	for _, leaf := range leaves {
		for _, d := range deps(t, leaf) {
			if d == "glow/overlay" || strings.HasPrefix(d, "glow/cmd") {
				t.Errorf("%s imports %s: leaves must not import the overlay or cmd", leaf, d)
			}
		}
	}
	for _, d := range deps(t, "glow/policy") {
		if d != "glow/policy" {
			t.Errorf("glow/policy imports %s: it is stdlib only", d)
		}
	}
	for _, d := range deps(t, "glow/internal/wire") {
		if d != "glow/internal/wire" {
			t.Errorf("glow/internal/wire imports %s: it is stdlib only", d)
		}
	}
}

// TestAPIClientNeedsNoNode: a client of the local API (the CLI's client
// commands, a status bar) links only the standard library, never
// wireguard-go, gVisor or the node (overlay imports overlay/api, never the
// other way).
func TestAPIClientNeedsNoNode(t *testing.T) {
	for _, d := range deps(t, "glow/overlay/api") {
		if d != "glow/overlay/api" {
			t.Errorf("glow/overlay/api imports %s: the local-API client is stdlib only", d)
		}
	}
}

// TestMemberIsPure: certificates, records, user documents, invite codes
// and state files (overlay/member) are data with no node behind them: they
// link neither the node nor wireguard-go nor gVisor.
func TestMemberIsPure(t *testing.T) {
	for _, d := range deps(t, "glow/overlay/member") {
		if d == "glow/overlay" || strings.HasPrefix(d, "golang.zx2c4.com/wireguard") || strings.HasPrefix(d, "gvisor.dev/") {
			t.Errorf("glow/overlay/member imports %s: it needs no node, WireGuard or netstack", d)
		}
	}
}

func TestPackageDocs(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{.Doc}}", "./...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, doc, _ := strings.Cut(line, " ")
		if path == "glow" {
			continue // this directory holds only these guard tests
		}
		if strings.TrimSpace(doc) == "" {
			t.Errorf("package %s has no doc comment", path)
		}
	}
}

// TestOmitDebugEventBus: built as make builds it (-tags=ts_omit_debugeventbus,
// the Makefile's GOTAGS), the glow binary links no HTTP debug handlers:
// tailscale's event-bus debugger and net/http/pprof, pulled in by
// net/portmapper otherwise, are left out (README: Build).
func TestOmitDebugEventBus(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags=ts_omit_debugeventbus", "-deps", "./cmd/glow").Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/glow: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		switch d {
		case "net/http/pprof", "runtime/pprof", "tailscale.com/tsweb":
			t.Errorf("glow built with ts_omit_debugeventbus links %s", d)
		}
	}
}

// TestDaemonLean: the glow binary is the daemon too, and all of its code
// is resident in an idle daemon (the kernel maps a binary's text in large
// pieces), so packages that only widen it stay out: vishvananda/netlink
// (every netlink family; tun uses jsimonetti/rtnetlink, linked anyway by
// the port mapper) and html/template with text/template (the web page
// takes its one token by replacement).
func TestDaemonLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags=ts_omit_debugeventbus", "-deps", "./cmd/glow").Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/glow: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(d, "github.com/vishvananda/netlink"), d == "html/template", d == "text/template":
			t.Errorf("glow links %s", d)
		}
	}
}

// TestUserspaceStackApart: the glow binary, as make builds it, links no
// gVisor (a kernel-TUN daemon carries none of it: its code would be
// resident in every daemon); glow-userspace (-tags glow_netstack) does,
// and the overlay reaches it only through Config.OpenUserspace.
func TestUserspaceStackApart(t *testing.T) {
	list := func(tags string) []string {
		out, err := exec.Command("go", "list", "-tags="+tags, "-deps", "./cmd/glow").Output()
		if err != nil {
			t.Fatalf("go list -tags=%s -deps ./cmd/glow: %v", tags, err)
		}
		return strings.Fields(string(out))
	}
	has := func(deps []string, prefix string) bool {
		for _, d := range deps {
			if strings.HasPrefix(d, prefix) {
				return true
			}
		}
		return false
	}
	if d := list("ts_omit_debugeventbus"); has(d, "gvisor.dev/") || has(d, "glow/tun/userspace") {
		t.Errorf("glow links the userspace stack (gVisor)")
	}
	if d := list("ts_omit_debugeventbus,glow_netstack"); !has(d, "glow/tun/userspace") || !has(d, "gvisor.dev/") {
		t.Errorf("glow-userspace (glow_netstack) lacks the userspace stack")
	}
	for _, pkg := range []string{"glow/overlay", "glow/tun"} {
		for _, d := range deps(t, pkg) {
			if d == "glow/tun/userspace" || strings.HasPrefix(d, "gvisor.dev/") {
				t.Errorf("%s imports %s", pkg, d)
			}
		}
	}
}
