package main

import (
	"fmt"

	"glow/internal/qrterm"
)

// printCode prints a join or friend code as the last line of stdout (what
// scripts take). With qr, a terminal QR code of it comes first, on stdout
// too, so that `glow invite --qr > code.txt` keeps both; a phone's camera
// reads the code off the screen.
func printCode(g *globals, code string, qr bool) error {
	if qr {
		s, err := qrterm.Render(code)
		if err != nil {
			return err
		}
		fmt.Fprint(g.out, s)
	}
	_, err := fmt.Fprintln(g.out, code)
	return err
}

// printCodeJSON prints {"code": code, ...extra}, with the terminal QR
// code's text as "qr" when asked for.
func printCodeJSON(g *globals, code string, qr bool, extra map[string]any) error {
	extra["code"] = code
	if qr {
		s, err := qrterm.Render(code)
		if err != nil {
			return err
		}
		extra["qr"] = s
	}
	return printJSON(g, extra)
}
