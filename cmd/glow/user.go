package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"glow/overlay/member"
)

// glow user export FILE: the user key, sealed with a passphrase, for
// glow up --restore FILE on another machine. It reads STATE/user.key
// itself, so it works with the daemon down too.
func cmdUser(g *globals, args []string) error {
	sub, rest, err := subcommand(g, args)
	if err != nil || sub != "export" {
		return usagef("want export FILE")
	}
	fs := newFlags(g, "user export")
	passFile := fs.String("passphrase-file", "", "read the passphrase from this file's first line (default: ask on the terminal)")
	force := fs.Bool("force", false, "replace FILE if it exists")
	pos, err := parse(fs, rest)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one FILE")
	}
	u, err := member.State{Dir: g.state}.LoadUserKey()
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("this node holds no user key (state %s): export it on an admin node ('glow nodes list' shows them)", g.state)
	}
	if err != nil {
		return err
	}
	pass, err := passphrase(*passFile, true)
	if err != nil {
		return err
	}
	data, err := member.SealUserKey(u, pass)
	if err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if *force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(pos[0], flags, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if g.json {
		return printJSON(g, map[string]string{"user": u.Name, "file": pos[0]})
	}
	fmt.Fprintf(g.out, "the key of user %s is in %s, sealed with your passphrase; keep both apart and safe.\nOn a new machine: glow up --restore %s\n", u.Name, pos[0], pos[0])
	return nil
}

// passphrase reads it from file (its first line), or asks on the terminal.
func passphrase(file string, confirm bool) ([]byte, error) {
	if file == "" {
		return promptPassphrase("Passphrase for the user key backup: ", confirm)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--passphrase-file: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return bytes.TrimRight(line, "\r"), nil
}

// restoreUserKey opens a backup and writes its key as STATE/user.key, for
// a daemon that then certifies itself as an admin of that user
// (overlay: a state with a user key and no certificate).
func restoreUserKey(g *globals, file, passFile string) error {
	st := member.State{Dir: g.state}
	if c, err := st.LoadCert(); err == nil {
		return fmt.Errorf("this state (%s) is node %s of user %s already; restore into a fresh one (--state DIR)", g.state, c.Name, c.UserName)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("--restore: %w", err)
	}
	bk, err := member.ParseUserKeyBackup(data)
	if err != nil {
		return fmt.Errorf("--restore %s: %w", file, err)
	}
	fmt.Fprintf(os.Stderr, "restoring the key of user %s (%s)\n", bk.Name, base64.StdEncoding.EncodeToString(bk.User[:]))
	pass, err := passphrase(passFile, false)
	if err != nil {
		return err
	}
	u, err := bk.Open(pass)
	if err != nil {
		return fmt.Errorf("--restore %s: %w", file, err)
	}
	if err := st.Init(); err != nil {
		return err
	}
	if have, err := st.LoadUserKey(); err == nil {
		if !have.Priv.Equal(u.Priv) {
			return fmt.Errorf("%s holds another user's key; restore into a fresh state (--state DIR)", st.Path("user.key"))
		}
		return nil // restored already (an earlier start failed later)
	}
	return st.SaveUserKey(u)
}
