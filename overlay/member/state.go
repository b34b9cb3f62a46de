package member

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// State is a node's state directory. Layout:
//
//	node.key     the node's private keys (0600)
//	user.key     the user's private key, on admin nodes only (0600)
//	cert         the node's certificate
//	records      the records cache: certificates, endpoints, user documents
//	invites      pending invite codes (admin nodes)
//	glow.sock    the local API (0600), glow.pid, glow.log (and glow.log.1)
//
// Every write is atomic (temp file, fsync, rename, fsync of the directory).
// A damaged file gives an error that names it; keys are never overwritten.
type State struct {
	Dir string

	// BeforeWrite, when set (tests, through Config.stateWrite), is called
	// with the file's name before each write.
	BeforeWrite func(name string)
}

// ErrDamaged marks a state file that exists but cannot be read back.
var ErrDamaged = errors.New("damaged")

// DamagedError names the state file at fault.
type DamagedError struct {
	Path string
	Err  error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("state file %s is damaged (%v); restore it from a backup or move it away to start this node afresh", e.Path, e.Err)
}

func (e *DamagedError) Unwrap() error { return ErrDamaged }

// Path returns the path of a file in the state directory.
func (s State) Path(name string) string { return filepath.Join(s.Dir, name) }

// Init creates the directory if needed and makes its mode 0700 either way:
// it holds keys, the local API socket and the log, which no other local
// user may read or reach (a directory made 0755 by hand or by an older
// version would otherwise stay open).
func (s State) Init() error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("state directory %s: %w", s.Dir, err)
	}
	if err := os.Chmod(s.Dir, 0o700); err != nil {
		return fmt.Errorf("state directory %s: make it private (0700): %w", s.Dir, err)
	}
	return nil
}

// WriteFile writes name atomically with the given mode.
func (s State) WriteFile(name string, data []byte, mode os.FileMode) error {
	if s.BeforeWrite != nil {
		s.BeforeWrite(name)
	}
	return WriteAtomic(s.Path(name), data, mode)
}

func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ReadFile reads name; a missing file gives an error matching fs.ErrNotExist.
func (s State) ReadFile(name string) ([]byte, error) { return os.ReadFile(s.Path(name)) }

// Exists reports whether name exists.
func (s State) Exists(name string) bool {
	_, err := os.Stat(s.Path(name))
	return err == nil
}

// CreateKeyFile writes a key file that must not exist yet: keys are never replaced.
func (s State) CreateKeyFile(name string, data []byte) error {
	path := s.Path(name)
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s already exists; glow never replaces keys", path)
	}
	return WriteAtomic(path, data, 0o600)
}

const (
	NodeKeyHeader = "glow node key v1"
	UserKeyHeader = "glow user key v1"
)

// fields parses "header\nkey value\n..." files.
func parseKV(path string, data []byte, header string) (map[string]string, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	if !sc.Scan() || strings.TrimSpace(sc.Text()) != header {
		return nil, &DamagedError{path, fmt.Errorf("first line is not %q", header)}
	}
	kv := map[string]string{}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			return nil, &DamagedError{path, fmt.Errorf("line %q has no value", line)}
		}
		kv[k] = strings.TrimSpace(v)
	}
	return kv, nil
}

func keyField(path string, kv map[string]string, name string, n int) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(kv[name])
	if err != nil || len(b) != n {
		return nil, &DamagedError{path, fmt.Errorf("field %q is not a %d-byte base64 key", name, n)}
	}
	return b, nil
}

// SaveNodeKeys writes node.key; it fails if one exists.
func (s State) SaveNodeKeys(k *NodeKeys) error {
	data := fmt.Sprintf("%s\n# This node's private keys. Keep this file secret.\nsign %s\nwg %s\nctl %s\n",
		NodeKeyHeader,
		base64.StdEncoding.EncodeToString(k.Sign.Seed()),
		base64.StdEncoding.EncodeToString(k.WG[:]),
		base64.StdEncoding.EncodeToString(k.Ctl[:]))
	return s.CreateKeyFile("node.key", []byte(data))
}

// LoadNodeKeys reads node.key. A missing file matches fs.ErrNotExist.
func (s State) LoadNodeKeys() (*NodeKeys, error) {
	path := s.Path("node.key")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseNodeKeys(path, data)
}

// ParseNodeKeys parses the contents of node.key (read from path).
func ParseNodeKeys(path string, data []byte) (*NodeKeys, error) {
	kv, err := parseKV(path, data, NodeKeyHeader)
	if err != nil {
		return nil, err
	}
	seed, err := keyField(path, kv, "sign", ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	wg, err := keyField(path, kv, "wg", 32)
	if err != nil {
		return nil, err
	}
	ctl, err := keyField(path, kv, "ctl", 32)
	if err != nil {
		return nil, err
	}
	k := &NodeKeys{Sign: ed25519.NewKeyFromSeed(seed)}
	copy(k.WG[:], wg)
	copy(k.Ctl[:], ctl)
	return k, nil
}

// SaveUserKey writes user.key; it fails if one exists.
func (s State) SaveUserKey(u *UserKey) error {
	data := fmt.Sprintf("%s\n# The private key of user %s: it admits nodes. Keep this file secret.\nname %s\nkey %s\n",
		UserKeyHeader, u.Name, u.Name, base64.StdEncoding.EncodeToString(u.Priv.Seed()))
	return s.CreateKeyFile("user.key", []byte(data))
}

// LoadUserKey reads user.key. A missing file matches fs.ErrNotExist.
func (s State) LoadUserKey() (*UserKey, error) {
	path := s.Path("user.key")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseUserKey(path, data)
}

// ParseUserKey parses the contents of user.key (read from path).
func ParseUserKey(path string, data []byte) (*UserKey, error) {
	kv, err := parseKV(path, data, UserKeyHeader)
	if err != nil {
		return nil, err
	}
	seed, err := keyField(path, kv, "key", ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	if !ValidName(kv["name"]) {
		return nil, &DamagedError{path, fmt.Errorf("bad user name %q", kv["name"])}
	}
	return &UserKey{Name: kv["name"], Priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// LoadCert reads the node's certificate. A missing file matches fs.ErrNotExist.
func (s State) LoadCert() (*Cert, error) {
	path := s.Path("cert")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseCert(data)
	if err != nil {
		return nil, &DamagedError{path, err}
	}
	return c, nil
}

// The records cache. Version 2 (since documents may exceed 64 KiB with
// their signature) is a magic line and (kind, 4-byte length, bytes)
// entries:
//
//	"glow records v2\n" | kind (1) | length (4, big endian) | record | ...
//
// Version 1, written before, has no magic and 2-byte lengths; it is still
// read (its first byte is a record kind, never 'g'), and the next save
// writes version 2. Entries are written friend lists first, then
// certificates, then the rest, so that loading them in order trusts a
// friend's certificates.
const (
	RecordsMagic = "glow records v2\n"
	// MaxCachedRecord bounds one entry of the records cache.
	MaxCachedRecord = 1 << 20
)

// SaveRecords writes the records cache.
func (s State) SaveRecords(st *Store) error {
	return s.WriteFile("records", MarshalRecordsCache(st), 0o600)
}

// MarshalRecordsCache is the records cache as it will be once docs (nil
// ones aside) replace the store's documents of their kinds: a new document
// is stored before it takes effect.
func MarshalRecordsCache(st *Store, docs ...*UserDoc) []byte {
	docs = slices.DeleteFunc(slices.Clone(docs), func(d *UserDoc) bool { return d == nil })
	d := st.Digest()
	slices.SortStableFunc(d, func(a, b DigestEntry) int { return RecordOrder(a.Kind) - RecordOrder(b.Kind) })
	buf := []byte(RecordsMagic)
	add := func(kind RecordKind, raw []byte) {
		buf = append(buf, byte(kind))
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(raw)))
		buf = append(buf, raw...)
	}
	for _, doc := range docs {
		if doc.Kind == KindFriends {
			add(doc.Kind, doc.Marshal())
		}
	}
	for _, e := range d {
		if slices.ContainsFunc(docs, func(doc *UserDoc) bool { return e.RecordKey == doc.Key() }) {
			continue
		}
		add(e.Kind, st.Raw(e.RecordKey))
	}
	for _, doc := range docs {
		if doc.Kind != KindFriends {
			add(doc.Kind, doc.Marshal())
		}
	}
	return buf
}

// OrderedWriter writes snapshots of one state file in the order they were
// taken (numbered under Node.mu): one older than the last written is
// dropped, as a newer one is on disk. Its mutex is held across the write,
// never while taking Node.mu.
type OrderedWriter struct {
	mu   sync.Mutex
	last uint64 // the newest snapshot written
}

func (w *OrderedWriter) Write(st State, name string, seq uint64, data []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if seq <= w.last {
		return nil
	}
	if err := st.WriteFile(name, data, 0o600); err != nil {
		return err
	}
	w.last = seq
	return nil
}

// LoadRecords feeds the records cache into st. A damaged cache is not fatal
// (records come back by gossip), so it is reported and otherwise ignored.
func (s State) LoadRecords(st *Store, apply func(kind RecordKind, raw []byte) error) error {
	data, err := s.ReadFile("records")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := ParseRecordsCache(data, apply); err != nil {
		return &DamagedError{s.Path("records"), err}
	}
	return nil
}

// ParseRecordsCache calls apply for each entry of a records cache of either
// version, in order, up to the first damaged one. apply's errors (a record
// no longer valid) do not stop it.
func ParseRecordsCache(data []byte, apply func(kind RecordKind, raw []byte) error) error {
	lenSize := 2 // version 1
	if rest, ok := bytes.CutPrefix(data, []byte(RecordsMagic)); ok {
		data, lenSize = rest, 4
	}
	for len(data) > 0 {
		if len(data) < 1+lenSize {
			return errors.New("truncated")
		}
		kind := RecordKind(data[0])
		var n int
		if lenSize == 2 {
			n = int(binary.BigEndian.Uint16(data[1:]))
		} else {
			n = int(min(binary.BigEndian.Uint32(data[1:]), MaxCachedRecord+1))
		}
		data = data[1+lenSize:]
		if n > MaxCachedRecord {
			return fmt.Errorf("a %v record of over %d bytes", kind, MaxCachedRecord)
		}
		if n > len(data) {
			return errors.New("truncated")
		}
		apply(kind, data[:n])
		data = data[n:]
	}
	return nil
}

// Lock takes an exclusive lock on the state directory so that two daemons
// never share one. The lock goes with the process.
func (s State) Lock() (*os.File, error) {
	f, err := os.OpenFile(s.Path("glow.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another glow daemon is running with state %s", s.Dir)
	}
	return f, nil
}

// RecordOrder sorts records so that each is preceded by what verifies it:
// friends documents, then certificates, then the rest.
func RecordOrder(k RecordKind) int {
	switch k {
	case KindFriends:
		return 0
	case KindCert:
		return 1
	}
	return 2
}
