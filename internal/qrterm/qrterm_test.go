package qrterm

import (
	"strings"
	"testing"

	qrcode "github.com/skip2/go-qrcode"
)

// TestRenderModules reads the rendered lines back into modules and compares
// them with the code's bitmap: every module drawn where it belongs, light
// drawn, dark blank, quiet zone included.
func TestRenderModules(t *testing.T) {
	for _, text := range []string{"x", "glow-" + strings.Repeat("ab", 60), strings.Repeat("[Interface]\nPrivateKey = 0123\n", 12)} {
		out, err := Render(text)
		if err != nil {
			t.Fatal(err)
		}
		q, err := qrcode.New(text, qrcode.Medium)
		if err != nil {
			t.Fatal(err)
		}
		want := q.Bitmap() // true: dark
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != (len(want)+1)/2 {
			t.Fatalf("%d lines for %d module rows", len(lines), len(want))
		}
		for i, line := range lines {
			cells := []rune(line)
			if len(cells) != len(want[0]) {
				t.Fatalf("line %d: %d cells, want %d", i, len(cells), len(want[0]))
			}
			for x, c := range cells {
				top, bottom := light(c)
				if top != !want[2*i][x] {
					t.Fatalf("line %d cell %d (%q): top module wrong", i, x, c)
				}
				if 2*i+1 < len(want) && bottom != !want[2*i+1][x] {
					t.Fatalf("line %d cell %d (%q): bottom module wrong", i, x, c)
				}
			}
		}
		// The quiet zone: the first line is all light.
		if strings.Trim(lines[0], "█") != "" {
			t.Fatalf("first line %q is not quiet", lines[0])
		}
	}
}

// light returns which halves of a cell are drawn (light modules).
func light(c rune) (top, bottom bool) {
	switch c {
	case '█':
		return true, true
	case '▀':
		return true, false
	case '▄':
		return false, true
	}
	return false, false
}

func TestRenderTooLong(t *testing.T) {
	if _, err := Render(strings.Repeat("a", MaxLen+1)); err == nil {
		t.Fatal("a text longer than a QR code holds was rendered")
	}
	if _, err := Render(strings.Repeat("a", MaxLen)); err != nil {
		t.Fatalf("the longest text: %v", err)
	}
}
