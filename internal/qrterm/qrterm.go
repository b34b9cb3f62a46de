// Package qrterm renders text as a QR code made of Unicode half blocks, for
// a terminal: `glow device add --qr` prints a WireGuard configuration that a
// phone's WireGuard app scans, `glow invite --qr` a join code. The encoding
// is github.com/skip2/go-qrcode's; two module rows make one text line, with
// the quiet zone the standard asks for around the code. Light modules are
// drawn (as qrencode -t UTF8 does), so the code reads on a terminal with a
// dark background, the common case. SVG draws the same code as an image,
// for the invite panel of `glow web`.
package qrterm

import (
	"fmt"

	qrcode "github.com/skip2/go-qrcode"
)

// MaxLen is the longest text Render takes: what a QR code holds at the
// medium error correction level (version 40, binary).
const MaxLen = 2331

// Render returns text as a QR code for a terminal, at the medium error
// correction level (15% of the code may be unreadable), one line per two
// module rows, each line ending in a newline.
func Render(text string) (string, error) {
	if len(text) > MaxLen {
		return "", fmt.Errorf("qr code: %d bytes is more than a QR code holds (%d)", len(text), MaxLen)
	}
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	return q.ToSmallString(false), nil
}
