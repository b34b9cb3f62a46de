package dns

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// OSConfig says how to point the operating system's resolver at glow.
type OSConfig struct {
	// ResolvConf is the resolver configuration file. Default
	// /etc/resolv.conf. Tests point it at a temporary file.
	ResolvConf string
	// StateDir holds the backup of ResolvConf and the markers that let a
	// later run restore it after a crash. Required.
	StateDir string
	// Interface is the overlay's network interface (the TUN), which
	// systemd-resolved attaches the glow DNS server and domains to.
	// Required when resolved manages the system.
	Interface string
	// Nameservers are glow's resolver addresses. Default [ServiceV4].
	Nameservers []netip.Addr
	// SearchDomains go first in the search list, e.g. "alice.glow" so that
	// "ssh nas" works.
	SearchDomains []string
	// Suffix is the glow domain, routed to glow by systemd-resolved.
	// Default "glow".
	Suffix string
	// Resolvectl is the resolvectl program. Empty: "resolvectl" from
	// $PATH. Tests point it at a fake script.
	Resolvectl string
	// Logf logs what was done. Nil: no logging.
	Logf func(format string, args ...any)
}

// Files in StateDir.
const (
	backupFile     = "resolv.conf.orig"        // exact bytes of the user's resolv.conf
	stateFile      = "resolv.conf.glow.json"   // marker: a backup exists; how to put it back
	resolvedMarker = "resolved.glow-interface" // marker: resolved was configured on this interface
)

// backupState is the marker written beside the backup. It is written after
// the backup bytes, so its presence means the backup is complete.
type backupState struct {
	Path    string      `json:"path"`              // the resolv.conf backed up
	Symlink string      `json:"symlink,omitempty"` // its link target, if it was a symlink
	Missing bool        `json:"missing,omitempty"` // there was no file: Restore removes glow's
	Mode    fs.FileMode `json:"mode"`              // its permission bits
	Written string      `json:"written"`           // sha256 of the file glow wrote in its place
}

// rename is os.Rename; tests replace it to simulate a bind-mounted file.
var rename = os.Rename

func (c OSConfig) withDefaults() (OSConfig, error) {
	if c.ResolvConf == "" {
		c.ResolvConf = "/etc/resolv.conf"
	}
	if c.StateDir == "" {
		return c, errors.New("dns: OSConfig.StateDir is empty")
	}
	if len(c.Nameservers) == 0 {
		c.Nameservers = []netip.Addr{ServiceV4}
	}
	c.Suffix = strings.ToLower(strings.Trim(c.Suffix, "."))
	if c.Suffix == "" {
		c.Suffix = "glow"
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c, nil
}

// Apply points the system's resolver at glow and returns the resolvers it
// used before, for Config.Upstreams.
//
// With systemd-resolved (resolv.conf links into /run/systemd/resolve/ or
// names its stub 127.0.0.53, and resolvectl exists) it sets split DNS on
// cfg.Interface: glow's nameservers for ~SUFFIX and the search domains only;
// resolved keeps answering every other name itself. resolv.conf is not
// touched.
//
// Otherwise it backs up resolv.conf byte for byte into StateDir and writes a
// new one naming glow's nameservers, the search domains, and the old search
// domains and options. The file is replaced atomically (temp file, fsync,
// rename), or rewritten in place when it is a bind mount (as under
// "ip netns exec"), where rename fails with EBUSY.
//
// If a previous run left its changes in place (it crashed), Apply first
// undoes them with [Restore], so the backup always holds the user's file.
func Apply(cfg OSConfig) (upstreams []netip.AddrPort, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := Restore(cfg); err != nil {
		return nil, fmt.Errorf("dns: undo previous run: %w", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("dns: state dir: %w", err)
	}
	if rc, ok := cfg.resolved(); ok {
		ups, err := applyResolved(cfg, rc)
		if err == nil {
			return ups, nil
		}
		cfg.Logf("dns: systemd-resolved: %v; writing %s instead", err, cfg.ResolvConf)
		if rerr := restoreResolved(cfg); rerr != nil {
			cfg.Logf("dns: %v", rerr)
		}
	}
	return applyDirect(cfg)
}

// resolved reports whether systemd-resolved manages the system, and the
// resolvectl program to configure it with.
func (c OSConfig) resolved() (string, bool) {
	managed := false
	if target, err := os.Readlink(c.ResolvConf); err == nil && strings.Contains(target, "systemd/resolve/") {
		managed = true
	}
	for _, ns := range ReadUpstreams(c.ResolvConf) {
		if a := ns.Addr(); a == netip.AddrFrom4([4]byte{127, 0, 0, 53}) || a == netip.AddrFrom4([4]byte{127, 0, 0, 54}) {
			managed = true
		}
	}
	if !managed {
		return "", false
	}
	rc := c.Resolvectl
	if rc == "" {
		rc = "resolvectl"
	}
	path, err := exec.LookPath(rc)
	if err != nil {
		c.Logf("dns: %s names systemd-resolved but there is no %s: %v", c.ResolvConf, rc, err)
		return "", false
	}
	return path, true
}

func runResolvectl(rc string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, rc, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("resolvectl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func applyResolved(cfg OSConfig, rc string) ([]netip.AddrPort, error) {
	if cfg.Interface == "" {
		return nil, errors.New("OSConfig.Interface is empty")
	}
	// Marker first, so that a crash half-way is still undone.
	if err := writeFileAtomic(filepath.Join(cfg.StateDir, resolvedMarker), []byte(cfg.Interface+"\n"), 0o600); err != nil {
		return nil, err
	}
	args := []string{"dns", cfg.Interface}
	for _, ns := range cfg.Nameservers {
		args = append(args, ns.String())
	}
	if err := runResolvectl(rc, args...); err != nil {
		return nil, err
	}
	args = append([]string{"domain", cfg.Interface, "~" + cfg.Suffix}, cfg.SearchDomains...)
	if err := runResolvectl(rc, args...); err != nil {
		return nil, err
	}
	// Routing-only domains already keep this link out of the default
	// route; say so explicitly where resolvectl knows the verb.
	if err := runResolvectl(rc, "default-route", cfg.Interface, "false"); err != nil {
		cfg.Logf("dns: %v (ignored)", err)
	}
	cfg.Logf("dns: systemd-resolved: %s serves ~%s on %s", cfg.Nameservers, cfg.Suffix, cfg.Interface)
	return cfg.upstreamsFrom(ReadUpstreams(cfg.ResolvConf)), nil
}

// upstreamsFrom drops glow's own addresses from ups.
func (c OSConfig) upstreamsFrom(ups []netip.AddrPort) []netip.AddrPort {
	return slices.DeleteFunc(ups, func(u netip.AddrPort) bool {
		a := u.Addr().WithZone("").Unmap()
		return a == ServiceV4 || a == ServiceV6 || slices.Contains(c.Nameservers, a)
	})
}

func applyDirect(cfg OSConfig) ([]netip.AddrPort, error) {
	orig, err := os.ReadFile(cfg.ResolvConf)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("dns: read %s: %w", cfg.ResolvConf, err)
	}
	st := backupState{Path: cfg.ResolvConf, Mode: 0o644, Missing: err != nil}
	if fi, err := os.Lstat(cfg.ResolvConf); err == nil {
		if fi.Mode()&fs.ModeSymlink != 0 {
			st.Symlink, _ = os.Readlink(cfg.ResolvConf)
		} else {
			st.Mode = fi.Mode().Perm()
		}
	}
	if bytes.Contains(orig, []byte(managedLine)) {
		if other := backupNamedIn(orig); other != "" && other != filepath.Join(cfg.StateDir, backupFile) {
			if _, err := os.Stat(other); err == nil {
				return nil, fmt.Errorf("%w: %s (backup in %s)", ErrManagedElsewhere, cfg.ResolvConf, other)
			}
		}
		cfg.Logf("dns: %s was written by glow but there is no backup; its old nameservers are lost", cfg.ResolvConf)
	}
	rc := parseResolvConf(orig)
	search := dedup(append(slices.Clone(cfg.SearchDomains), rc.search...))
	newConf := renderResolvConf(cfg, search, rc.options)
	sum := sha256.Sum256(newConf)
	st.Written = hex.EncodeToString(sum[:])

	stJSON, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(cfg.StateDir, backupFile), orig, 0o600); err != nil {
		return nil, fmt.Errorf("dns: back up %s: %w", cfg.ResolvConf, err)
	}
	if err := writeFileAtomic(filepath.Join(cfg.StateDir, stateFile), stJSON, 0o600); err != nil {
		return nil, fmt.Errorf("dns: back up %s: %w", cfg.ResolvConf, err)
	}
	if err := writeFileAtomic(cfg.ResolvConf, newConf, st.Mode); err != nil {
		return nil, fmt.Errorf("dns: write %s: %w", cfg.ResolvConf, err)
	}
	cfg.Logf("dns: wrote %s (original saved in %s)", cfg.ResolvConf, cfg.StateDir)
	return cfg.upstreamsFrom(rc.upstreams()), nil
}

const managedLine = "# This file is managed by glow"

// ErrManagedElsewhere is returned by Apply when another glow daemon (another
// state directory) manages the resolver configuration already: two daemons
// on one host must not stack their changes.
var ErrManagedElsewhere = errors.New("dns: another glow daemon manages the resolver configuration")

// backupNamedIn returns the backup path a glow-written resolv.conf names.
func backupNamedIn(conf []byte) string {
	const marker = "it is saved in "
	i := bytes.Index(conf, []byte(marker))
	if i < 0 {
		return ""
	}
	rest := conf[i+len(marker):]
	if j := bytes.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	return strings.TrimSuffix(string(rest), ".")
}

func renderResolvConf(cfg OSConfig, search, options []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s (MagicDNS for .%s).\n", managedLine, cfg.Suffix)
	fmt.Fprintf(&b, "# glow puts the original back when it stops; it is saved in %s.\n", filepath.Join(cfg.StateDir, backupFile))
	for _, ns := range cfg.Nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	for _, o := range options {
		fmt.Fprintf(&b, "%s\n", o)
	}
	return b.Bytes()
}

func dedup(ss []string) []string {
	var out []string
	for _, s := range ss {
		s = strings.TrimSuffix(s, ".")
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// Restore undoes Apply: it reverts the systemd-resolved settings, or puts
// the original resolv.conf back byte for byte (a symlink as a symlink), then
// deletes the backup. With no backup it does nothing. If resolv.conf was
// replaced by someone else since glow wrote it, Restore leaves the new file
// alone and only deletes the backup.
func Restore(cfg OSConfig) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	return errors.Join(restoreResolved(cfg), restoreDirect(cfg))
}

func restoreResolved(cfg OSConfig) error {
	marker := filepath.Join(cfg.StateDir, resolvedMarker)
	b, err := os.ReadFile(marker)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	iface := strings.TrimSpace(string(b))
	rc := cfg.Resolvectl
	if rc == "" {
		rc = "resolvectl"
	}
	if iface != "" {
		if err := runResolvectl(rc, "revert", iface); err != nil {
			// Usually the interface is already gone, and with it
			// its settings.
			cfg.Logf("dns: %v (ignored)", err)
		}
	}
	if err := os.Remove(marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("dns: %w", err)
	}
	return nil
}

func restoreDirect(cfg OSConfig) error {
	statePath := filepath.Join(cfg.StateDir, stateFile)
	backupPath := filepath.Join(cfg.StateDir, backupFile)
	stJSON, err := os.ReadFile(statePath)
	if errors.Is(err, fs.ErrNotExist) {
		os.Remove(backupPath) // a stray from a crash before the marker
		return nil
	}
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	var st backupState
	if err := json.Unmarshal(stJSON, &st); err != nil {
		return fmt.Errorf("dns: damaged backup marker %s: %w", statePath, err)
	}
	orig, err := os.ReadFile(backupPath)
	if err != nil {
		return fmt.Errorf("dns: backup of %s: %w", st.Path, err)
	}
	if st.Path != cfg.ResolvConf {
		return fmt.Errorf("dns: backup in %s is of %s, not %s", cfg.StateDir, st.Path, cfg.ResolvConf)
	}
	cur, err := os.ReadFile(cfg.ResolvConf)
	sum := sha256.Sum256(cur)
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("dns: read %s: %w", cfg.ResolvConf, err)
	case err != nil || hex.EncodeToString(sum[:]) != st.Written:
		cfg.Logf("dns: %s changed since glow wrote it; leaving it as it is", cfg.ResolvConf)
	case st.Missing:
		if err := os.Remove(cfg.ResolvConf); err != nil {
			return fmt.Errorf("dns: restore %s: %w", cfg.ResolvConf, err)
		}
	case st.Symlink != "":
		if err := symlinkAtomic(st.Symlink, cfg.ResolvConf); err != nil {
			// A bind mount cannot become a symlink: write the
			// bytes the link pointed to.
			cfg.Logf("dns: restore symlink %s: %v; writing its contents", cfg.ResolvConf, err)
			if err := writeFileAtomic(cfg.ResolvConf, orig, st.Mode); err != nil {
				return fmt.Errorf("dns: restore %s: %w", cfg.ResolvConf, err)
			}
		}
	default:
		if err := writeFileAtomic(cfg.ResolvConf, orig, st.Mode); err != nil {
			return fmt.Errorf("dns: restore %s: %w", cfg.ResolvConf, err)
		}
	}
	// Marker first: without it the backup is ignored.
	if err := os.Remove(statePath); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	os.Remove(backupPath)
	cfg.Logf("dns: restored %s", cfg.ResolvConf)
	return nil
}

// writeFileAtomic replaces path with data: temp file in the same directory,
// fsync, rename, fsync of the directory. Where rename cannot replace path
// (EBUSY: path is a mount point, as a bind-mounted resolv.conf is; EXDEV) or
// no temp file can be made beside it, it rewrites path in place instead.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".glow-tmp-*")
	if err != nil {
		return writeInPlace(path, data, perm, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := rename(tmp, path); err != nil {
		if errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EXDEV) {
			return writeInPlace(path, data, perm, err)
		}
		return err
	}
	syncDir(dir)
	return nil
}

// writeInPlace truncates and rewrites path. why is the error that ruled out
// an atomic replace, returned if this fails too.
func writeInPlace(path string, data []byte, perm fs.FileMode, why error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC|os.O_CREATE, perm)
	if err != nil {
		return errors.Join(why, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func symlinkAtomic(target, path string) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".glow-link")
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// resolvConf is what glow keeps of a resolv.conf.
type resolvConf struct {
	nameservers []netip.Addr
	search      []string // from search and domain lines
	options     []string // whole "options ..." lines
}

func (rc resolvConf) upstreams() []netip.AddrPort {
	var ups []netip.AddrPort
	for _, a := range rc.nameservers {
		ups = append(ups, netip.AddrPortFrom(a, 53))
	}
	return ups
}

func parseResolvConf(b []byte) resolvConf {
	var rc resolvConf
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		f := strings.Fields(line)
		switch f[0] {
		case "nameserver":
			if len(f) < 2 {
				continue
			}
			if a, err := netip.ParseAddr(f[1]); err == nil {
				rc.nameservers = append(rc.nameservers, a.Unmap())
			}
		case "search", "domain":
			for _, d := range f[1:] {
				if d[0] == '#' || d[0] == ';' {
					break
				}
				rc.search = append(rc.search, d)
			}
		case "options":
			rc.options = append(rc.options, line)
		}
	}
	return rc
}

// ReadUpstreams returns the nameservers listed in the resolv.conf at path, on
// port 53 (IPv6 link-local ones keep their zone). A missing or unreadable
// file gives none.
func ReadUpstreams(path string) []netip.AddrPort {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return parseResolvConf(b).upstreams()
}
