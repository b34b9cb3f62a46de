package qrterm

import (
	"fmt"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// SVG returns text as a QR code in an SVG image (for `glow web`'s invite
// panel): the same code as Render, one unit per module, dark modules
// black on a white ground with the quiet zone, scaled by whoever shows it.
func SVG(text string) (string, error) {
	if len(text) > MaxLen {
		return "", fmt.Errorf("qr code: %d bytes is more than a QR code holds (%d)", len(text), MaxLen)
	}
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	bm := q.Bitmap() // true: dark, quiet zone included
	n := len(bm)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges">`, n, n)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n)
	for y, row := range bm {
		for x, dark := range row {
			if dark {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x, y)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return b.String(), nil
}
