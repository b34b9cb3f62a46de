package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// redirectStdio points file descriptors 1 and 2 at f.
func redirectStdio(f *os.File) error {
	for _, fd := range []int{1, 2} {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("redirect fd %d: %w", fd, err)
		}
	}
	return nil
}
