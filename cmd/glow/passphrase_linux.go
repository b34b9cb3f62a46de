package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// promptPassphrase asks for a passphrase on the terminal (/dev/tty), with
// echo off; confirm asks for it twice.
func promptPassphrase(prompt string, confirm bool) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, errors.New("no terminal to ask the passphrase on: use --passphrase-file FILE")
	}
	defer tty.Close()
	fd := int(tty.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, errors.New("no terminal to ask the passphrase on: use --passphrase-file FILE")
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	r := bufio.NewReader(tty)
	read := func(p string) (string, error) {
		fmt.Fprint(tty, p)
		line, err := r.ReadString('\n')
		fmt.Fprintln(tty)
		if err != nil {
			return "", fmt.Errorf("reading the passphrase: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	p1, err := read(prompt)
	if err != nil || !confirm {
		return []byte(p1), err
	}
	p2, err := read("Again: ")
	if err != nil {
		return nil, err
	}
	if p1 != p2 {
		return nil, errors.New("the two passphrases differ")
	}
	return []byte(p1), nil
}
