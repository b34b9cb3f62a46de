package qrterm

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	qrcode "github.com/skip2/go-qrcode"
)

// TestSVGModules reads the SVG's squares back into modules and compares
// them with the code's bitmap.
func TestSVGModules(t *testing.T) {
	for _, text := range []string{"x", "glow-" + strings.Repeat("ab", 60)} {
		svg, err := SVG(text)
		if err != nil {
			t.Fatal(err)
		}
		q, err := qrcode.New(text, qrcode.Medium)
		if err != nil {
			t.Fatal(err)
		}
		want := q.Bitmap()
		n := len(want)
		if !strings.Contains(svg, fmt.Sprintf(`viewBox="0 0 %d %d"`, n, n)) {
			t.Fatalf("viewBox not %d modules: %.200s", n, svg)
		}
		got := make([][]bool, n)
		for i := range got {
			got[i] = make([]bool, n)
		}
		for _, m := range regexp.MustCompile(`M(\d+) (\d+)h1v1h-1z`).FindAllStringSubmatch(svg, -1) {
			var x, y int
			fmt.Sscan(m[1], &x)
			fmt.Sscan(m[2], &y)
			if x >= n || y >= n {
				t.Fatalf("module %d,%d outside the %d-module code", x, y, n)
			}
			got[y][x] = true
		}
		for y := range want {
			for x := range want[y] {
				if got[y][x] != want[y][x] {
					t.Fatalf("%q: module %d,%d dark=%v, want %v", text, x, y, got[y][x], want[y][x])
				}
			}
		}
	}
	if _, err := SVG(strings.Repeat("a", MaxLen+1)); err == nil {
		t.Fatal("a text longer than a QR code holds was drawn")
	}
}
