package main

import (
	"bytes"
	"image"
	"image/color"
	"slices"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	gzqr "github.com/makiuchi-d/gozxing/qrcode"
)

// TestInviteQRDecodes: glow invite --qr and glow friend invite --qr print
// a terminal QR code that a QR reader (gozxing, a port of ZXing) decodes
// back to the code, which stays the last line of stdout.
func TestInviteQRDecodes(t *testing.T) {
	state := testDaemon(t)
	for _, argv := range [][]string{{"invite", "--qr"}, {"friend", "invite", "--qr"}} {
		var out, errOut bytes.Buffer
		if rc := run(append([]string{"--state", state}, argv...), &out, &errOut); rc != 0 {
			t.Fatalf("glow %v: exit %d: %s", argv, rc, errOut.String())
		}
		lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
		code := lines[len(lines)-1]
		if !strings.HasPrefix(code, "glow") || len(lines) < 10 {
			t.Fatalf("glow %v: want QR lines then the code, got:\n%s", argv, out.String())
		}
		got, err := decodeTerminalQR(lines[:len(lines)-1])
		if err != nil {
			t.Fatalf("glow %v: the QR code does not decode: %v\n%s", argv, err, out.String())
		}
		if got != code {
			t.Errorf("glow %v: the QR code says %q, the code is %q", argv, got, code)
		}
		t.Logf("glow %v: %d-byte code, a QR code of %d lines decodes to it", argv, len(code), len(lines)-1)

		// Without --qr: the code alone.
		out.Reset()
		if rc := run(append([]string{"--state", state}, argv[:len(argv)-1]...), &out, &errOut); rc != 0 || strings.Count(out.String(), "\n") != 1 {
			t.Errorf("glow %v without --qr: exit %d, stdout %q; want one line", argv, rc, out.String())
		}
	}
}

// decodeTerminalQR turns half-block lines (a drawn half is a light module,
// as qrterm draws them) into an image, 4 pixels a module, and decodes it.
func decodeTerminalQR(lines []string) (string, error) {
	const px = 4
	var rows [][]bool // true: light
	for _, l := range lines {
		var top, bottom []bool
		for _, c := range l {
			t, b := c == '█' || c == '▀', c == '█' || c == '▄'
			top, bottom = append(top, t), append(bottom, b)
		}
		rows = append(rows, top, bottom)
	}
	// An odd number of module rows leaves the last line's lower half
	// blank: not part of the code.
	if last := rows[len(rows)-1]; !slices.Contains(last, true) {
		rows = rows[:len(rows)-1]
	}
	w := 0
	for _, r := range rows {
		w = max(w, len(r))
	}
	img := image.NewGray(image.Rect(0, 0, w*px, len(rows)*px))
	for y, r := range rows {
		for x := 0; x < w; x++ {
			v := color.Gray{0}
			if x < len(r) && r[x] {
				v = color.Gray{255}
			}
			for dy := range px {
				for dx := range px {
					img.SetGray(x*px+dx, y*px+dy, v)
				}
			}
		}
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return "", err
	}
	res, err := gzqr.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	if err != nil {
		return "", err
	}
	return res.GetText(), nil
}
