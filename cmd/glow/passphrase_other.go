//go:build !linux

package main

import "errors"

// promptPassphrase has no terminal support here: scripts and users give
// --passphrase-file.
func promptPassphrase(string, bool) ([]byte, error) {
	return nil, errors.New("use --passphrase-file FILE to give the passphrase")
}
