package link

// Stream links over a command's stdin/stdout: ssh to a machine that runs
// `glow link stdio`, or any program that moves bytes (a serial line through
// a tool such as socat). The dialing side starts the command and runs
// Handshake over its pipes (DialCommand); the serving side runs Handshake
// over its own stdin/stdout (StdioStream).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// StdioStream joins r and w into one io.ReadWriteCloser for Handshake on the
// serving side (r, w: os.Stdin, os.Stdout). Close closes both if they are
// io.Closers. Note that closing a terminal or a blocking stdin does not
// always unblock a pending Read; the serving process is expected to exit
// when its Stream ends.
func StdioStream(r io.Reader, w io.Writer) io.ReadWriteCloser {
	return &stdio{r: r, w: w}
}

type stdio struct {
	r io.Reader
	w io.Writer
}

func (s *stdio) Read(b []byte) (int, error)  { return s.r.Read(b) }
func (s *stdio) Write(b []byte) (int, error) { return s.w.Write(b) }
func (s *stdio) Close() error {
	var errs []error
	if c, ok := s.w.(io.Closer); ok {
		errs = append(errs, c.Close())
	}
	if c, ok := s.r.(io.Closer); ok {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// DialCommand starts argv (argv[0] looked up in PATH) and runs Handshake
// over its stdin/stdout; ctx bounds the start and the handshake, not the
// Stream's life. The command's stderr is kept (its last 4 KiB) and quoted
// in a handshake error, where ssh says why it failed. Closing the Stream
// closes the pipes, kills the command and waits for it.
func DialCommand(ctx context.Context, argv []string, self Identity, verify Verify) (*Stream, error) {
	if len(argv) == 0 {
		return nil, errors.New("link: DialCommand: empty command")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	// Own pipes rather than cmd.StdoutPipe: Wait closes those, racing
	// with a reader, while these stay ours until the Stream closes them.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	stderr := &tailBuffer{max: 4096}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, stderr
	cmd.WaitDelay = 2 * time.Second // a child that keeps stderr open must not hang Wait
	if err := cmd.Start(); err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("link: command %q: %w", argv[0], err)
	}
	inR.Close()
	outW.Close()
	var waitOnce sync.Once
	var waitErr error
	kill := func() error {
		waitOnce.Do(func() {
			cmd.Process.Kill()
			waitErr = cmd.Wait()
		})
		return nil // the command's exit status after a kill says nothing
	}
	s, err := Handshake(ctx, &stdio{r: outR, w: inW}, self, verify)
	if err != nil {
		kill()
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("link: command %q: %w (stderr: %s)", argv[0], err, msg)
		}
		if waitErr != nil {
			return nil, fmt.Errorf("link: command %q: %w (%v)", argv[0], err, waitErr)
		}
		return nil, fmt.Errorf("link: command %q: %w", argv[0], err)
	}
	s.onClose = kill
	return s, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}

// SSHArgv builds the command line that links to u (ssh://[user@]host[:port])
// by running remoteGlow ("" means "glow") with `link stdio` over ssh, with
// --state remoteState if that is not empty. ssh runs in batch mode (no
// password prompts: keys or an agent only), without a TTY (which would
// mangle the binary stream) and with keepalives, so a dead link is noticed.
// The remote words are shell-quoted, since ssh hands them to a shell.
func SSHArgv(u *url.URL, remoteGlow, remoteState string) []string {
	if remoteGlow == "" {
		remoteGlow = "glow"
	}
	argv := []string{"ssh",
		"-o", "BatchMode=yes",
		"-o", "ServerAliveInterval=15",
		"-o", "ServerAliveCountMax=3",
		"-T", "-e", "none",
	}
	if p := u.Port(); p != "" {
		argv = append(argv, "-p", p)
	}
	dest := u.Hostname()
	if u.User != nil && u.User.Username() != "" {
		dest = u.User.Username() + "@" + dest
	}
	argv = append(argv, "--", dest, shellQuote(remoteGlow))
	if remoteState != "" {
		argv = append(argv, "--state", shellQuote(remoteState))
	}
	return append(argv, "link", "stdio")
}

// shellQuote quotes s for a POSIX shell unless it is plainly safe.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:@%+,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
