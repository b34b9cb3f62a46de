package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"glow/e2e/lab"
)

var (
	glowBin  string // the binary under test
	buildErr error  // why there is none
)

// TestMain builds cmd/glow once for every test (GLOW_BIN=/path/to/glow uses
// a prebuilt binary instead, with glow-userspace beside it) and says loudly
// when the tier cannot run.
func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "\n!!!!!!!! %s !!!!!!!!\n\n", lab.SkipMessage)
		if os.Getenv("GLOW_E2E") == "require" {
			fmt.Fprintln(os.Stderr, "GLOW_E2E=require: failing instead of skipping")
			os.Exit(1)
		}
		os.Exit(m.Run())
	}
	tmp, err := os.MkdirTemp("", "glow-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = tmp
	if glowBin = os.Getenv("GLOW_BIN"); glowBin == "" {
		glowBin, buildErr = buildGlow(filepath.Join(tmp, "glow"))
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// buildDir holds the binaries the tests build (glow, glow-userspace, the
// reference wireguard-go); TestMain removes it.
var buildDir string

// buildGlow runs `go build -o out ./cmd/glow` in the module root, and
// builds glow-userspace beside it (glow with the glow_netstack tag, which
// `glow up --userspace` hands its daemon to: cmd/glow/userspace.go).
func buildGlow(out string) (string, error) {
	if _, err := goBuild(filepath.Join(filepath.Dir(out), "glow-userspace"), "./cmd/glow", "-tags="+withTag(os.Getenv("GOFLAGS"), "glow_netstack")); err != nil {
		return "", err
	}
	return goBuild(out, "./cmd/glow")
}

// withTag returns the build tags GOFLAGS gives (make's -tags=...) and tag.
func withTag(goflags, tag string) string {
	for _, f := range strings.Fields(goflags) {
		if tags, ok := strings.CutPrefix(f, "-tags="); ok && tags != "" {
			return tags + "," + tag
		}
	}
	return tag
}

// goBuild runs `go build [flags] -o out pkg` in the module root.
func goBuild(out, pkg string, flags ...string) (string, error) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	root, err := moduleRoot(goTool)
	if err != nil {
		return "", err
	}
	cmd := exec.Command(goTool, append(append([]string{"build"}, flags...), "-o", out, pkg)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s in %s: %v\n%s", pkg, root, err, b)
	}
	return out, nil
}

func moduleRoot(goTool string) (string, error) {
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := string(bytes.TrimSpace(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the glow module")
	}
	return filepath.Dir(mod), nil
}

// needGlow fails t when the glow binary could not be built.
func needGlow(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("no glow binary: %v", buildErr)
	}
	if glowBin == "" {
		t.Fatalf("no glow binary")
	}
	if strings.Contains(glowBin, " ") {
		t.Fatalf("glow binary path %q has a space", glowBin)
	}
}
