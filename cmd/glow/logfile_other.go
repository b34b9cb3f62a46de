//go:build !linux

package main

import "os"

// redirectStdio does nothing here: stdio keeps the file the daemon was
// started with.
func redirectStdio(*os.File) error { return nil }
