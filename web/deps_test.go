package web

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientOnly: the page is a client of the local API; it never links
// the node (overlay, wireguard-go, gVisor).
func TestClientOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "glow/web").Output()
	if err != nil {
		t.Fatalf("go list -deps glow/web: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		switch {
		case d == "glow/web", d == "glow/overlay/api", d == "glow/internal/qrterm", strings.HasPrefix(d, "github.com/skip2/go-qrcode"):
		default:
			t.Errorf("glow/web imports %s: it is a client of the local API only", d)
		}
	}
}
