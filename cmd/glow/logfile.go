package main

import (
	"fmt"
	"os"
	"sync"
)

// The background daemon's log, STATE/glow.log, with a size cap: when a write
// would take it past logMaxSize, glow.log becomes glow.log.1 (replacing the
// previous one) and a fresh glow.log is started, so the log never takes more
// than about twice the cap on disk, however long the daemon runs or whatever
// peers make it log.
const (
	logName    = "glow.log"
	logMaxSize = 10 << 20
)

// rotatingLog is an io.Writer onto path with a size cap and one old file
// (path.1). With stdio set it also points file descriptors 1 and 2 at the
// current file, so what the runtime or a library writes there (a panic, a
// crash) lands in the same log and follows its rotation. Its size check
// reads the file's size, so those writes count toward the cap too.
type rotatingLog struct {
	path  string
	max   int64
	stdio bool

	mu sync.Mutex // guards f and serialises writes
	f  *os.File
}

func openRotatingLog(path string, max int64, stdio bool) (*rotatingLog, error) {
	l := &rotatingLog{path: path, max: max, stdio: stdio}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

// open (re)opens path for appending, mode 0600, and redirects stdio to it.
func (l *rotatingLog) open() error {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if l.stdio {
		if err := redirectStdio(f); err != nil {
			f.Close()
			return fmt.Errorf("log %s: %w", l.path, err)
		}
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f = f
	return nil
}

// Write writes p, rotating first if p would take the file past the cap (a
// write longer than the cap goes whole into a fresh file). A failed rotation
// is reported once in the log itself, and writing goes on.
func (l *rotatingLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if fi, err := l.f.Stat(); err == nil && fi.Size() > 0 && fi.Size()+int64(len(p)) > l.max {
		if err := l.rotate(); err != nil {
			fmt.Fprintf(l.f, "glow: rotating %s failed: %v\n", l.path, err)
		}
	}
	return l.f.Write(p)
}

func (l *rotatingLog) rotate() error {
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return err
	}
	return l.open()
}

// Close closes the current file (stdio stays pointed at it).
func (l *rotatingLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
