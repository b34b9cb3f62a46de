package member

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	"glow/internal/wire"
)

// A UserDoc is a statement of a user, signed by the user key and gossiped
// to the user's own nodes: its friend list (KindFriends), its policy
// (KindPolicy) and its revocation list (KindRevoked; friends get that one
// too, and honour it for that user's nodes only). Version orders them; history lives in the admin
// node's state directory.
type UserDoc struct {
	Kind    RecordKind
	User    [32]byte
	Version uint64
	// Parent names the version this one was built on (DocHash of its
	// encoding), zero for a first version; encoded (format 2) only when
	// set. It tells an admin whether a later version saw its change
	// (overlay/docmerge.go).
	Parent [8]byte
	Body   []byte
	Sig    [ed25519.SignatureSize]byte

	raw  []byte
	rank uint64
}

const (
	KindFriends RecordKind = 3
	KindPolicy  RecordKind = 4
	KindRevoked RecordKind = 5 // node ids removed from the user (glow nodes remove)
)

// MaxDocBody is the largest body of a user document, in bytes: the most
// its 16-bit length field holds. A policy of up to 64 KiB, a revocation
// list of up to 1,008 nodes (65 bytes a node) fit. Documents larger than
// one control packet travel in fragments (overlay/fragment.go).
const MaxDocBody = 1<<16 - 1

// MaxDocRaw bounds the encoding of a user document: header, body, signature.
const MaxDocRaw = 1 + 1 + 32 + 8 + 8 + 2 + MaxDocBody + ed25519.SignatureSize

// ErrDocTooLarge marks a user document over MaxDocBody.
var ErrDocTooLarge = errors.New("document too large")

// DocTooLargeError says which document is too large, and by how much.
type DocTooLargeError struct {
	Kind RecordKind
	Size int
}

func (e *DocTooLargeError) Error() string {
	what := map[RecordKind]string{KindFriends: "friend list", KindPolicy: "policy", KindRevoked: "list of removed nodes", KindDevices: "device list"}[e.Kind]
	if what == "" {
		what = e.Kind.String() + " document"
	}
	return fmt.Sprintf("the %s would be %d bytes, over the maximum of %d", what, e.Size, MaxDocBody)
}

func (e *DocTooLargeError) Unwrap() error { return ErrDocTooLarge }

var docContext = []byte("glow user doc v1\x00")

func (d *UserDoc) body() []byte {
	var w wire.Writer
	if d.Parent == ([8]byte{}) {
		w.U8(1)
	} else {
		w.U8(2)
	}
	w.U8(uint8(d.Kind))
	w.Raw(d.User[:])
	w.U64(d.Version)
	if d.Parent != ([8]byte{}) {
		w.Raw(d.Parent[:])
	}
	w.Bytes16(d.Body)
	return w.B
}

// SignUserDoc signs d with the user key. A body over MaxDocBody is refused
// with a *DocTooLargeError.
func SignUserDoc(u *UserKey, d *UserDoc) error {
	if len(d.Body) > MaxDocBody {
		return &DocTooLargeError{d.Kind, len(d.Body)}
	}
	copy(d.User[:], u.Public())
	body := d.body()
	copy(d.Sig[:], ed25519.Sign(u.Priv, append(append([]byte{}, docContext...), body...)))
	d.raw = append(body, d.Sig[:]...)
	d.rank = DocRank(d.raw)
	return nil
}

// Marshal returns the encoding.
func (d *UserDoc) Marshal() []byte { return d.raw }

// DocHash names a document's encoding (a Parent).
func DocHash(raw []byte) (h [8]byte) {
	sum := sha256.Sum256(raw)
	copy(h[:], sum[:])
	return h
}

// Rank orders the documents of one slot, as Store and gossip compare them:
// by Version, then by DocHash. Two admins who change a document at once
// sign two versions of one number; every node keeps the same one of them
// (the greater hash), and digests tell them apart, so the nodes converge.
func (d *UserDoc) Rank() uint64 { return d.rank }

// DocRank is the Rank of a document's encoding (0 if it is too short):
// Version in the high 48 bits, the first 16 bits of DocHash below.
func DocRank(raw []byte) uint64 {
	if len(raw) < 2+32+8 {
		return 0
	}
	h := DocHash(raw)
	return binary.BigEndian.Uint64(raw[34:])<<16 | uint64(binary.BigEndian.Uint16(h[:]))
}

// docWins says whether d replaces old, a document of the same slot: a
// higher version, or the same version and a greater hash.
func docWins(d, old *UserDoc) bool {
	if d.Version != old.Version {
		return d.Version > old.Version
	}
	hd, ho := sha256.Sum256(d.raw), sha256.Sum256(old.raw)
	return bytes.Compare(hd[:], ho[:]) > 0
}

// Key is the record slot of the document: one per kind and user.
func (d *UserDoc) Key() RecordKey { return RecordKey{d.Kind, wire.NodeID(d.User)} }

// PeekDocUser returns the user a UserDoc encoding names, unverified.
func PeekDocUser(b []byte) (u wire.NodeID, ok bool) {
	if len(b) < 2+len(u) {
		return u, false
	}
	copy(u[:], b[2:])
	return u, true
}

// ParseUserDoc decodes a user document and checks its signature.
func ParseUserDoc(b []byte) (*UserDoc, error) {
	if len(b) > MaxDocRaw {
		return nil, fmt.Errorf("user document: %w: too long", ErrMalformed)
	}
	r := wire.Reader{B: b}
	d := &UserDoc{}
	format := r.U8()
	if r.Err == nil && format != 1 && format != 2 {
		return nil, fmt.Errorf("user document: %w: version %d", ErrMalformed, format)
	}
	d.Kind = RecordKind(r.U8())
	r.Fixed(d.User[:])
	d.Version = r.U64()
	if format == 2 {
		r.Fixed(d.Parent[:])
		if r.Err == nil && d.Parent == ([8]byte{}) {
			return nil, fmt.Errorf("user document: %w: format 2 without a parent", ErrMalformed)
		}
	}
	d.Body = bytes.Clone(r.Bytes16(MaxDocBody))
	r.Fixed(d.Sig[:])
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("user document: %w: %v", ErrMalformed, err)
	}
	if !IsUserDocKind(d.Kind) {
		return nil, fmt.Errorf("user document: %w: kind %d", ErrMalformed, d.Kind)
	}
	signed := len(b) - ed25519.SignatureSize
	if !ed25519.Verify(d.User[:], append(append([]byte{}, docContext...), b[:signed]...), d.Sig[:]) {
		return nil, fmt.Errorf("user document: %w", ErrBadSignature)
	}
	d.raw = bytes.Clone(b)
	d.rank = DocRank(d.raw)
	return d, nil
}

// Friend is another user whose key this user accepted.
type Friend struct {
	Name string
	Key  [32]byte
}

// FormatFriends is the body of a KindFriends document: "NAME KEY" lines.
func FormatFriends(fs []Friend) []byte {
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "%s %s\n", f.Name, base64.StdEncoding.EncodeToString(f.Key[:]))
	}
	return []byte(b.String())
}

func ParseFriends(body []byte) ([]Friend, error) {
	var out []Friend
	for i, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		if line == "" {
			continue
		}
		name, key, ok := strings.Cut(line, " ")
		k, err := base64.StdEncoding.DecodeString(key)
		if !ok || !ValidName(name) || err != nil || len(k) != 32 {
			return nil, fmt.Errorf("friend list line %d: %w", i+1, ErrMalformed)
		}
		var f Friend
		f.Name = name
		copy(f.Key[:], k)
		out = append(out, f)
	}
	return out, nil
}

// FormatRevoked is the body of a KindRevoked document: one node id a line.
func FormatRevoked(ids []wire.NodeID) []byte {
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintln(&b, id.Hex())
	}
	return []byte(b.String())
}

func ParseRevoked(body []byte) ([]wire.NodeID, error) {
	var out []wire.NodeID
	for _, line := range strings.Fields(string(body)) {
		id, err := wire.ParseNodeID(line)
		if err != nil {
			return nil, fmt.Errorf("revocation list: %w", ErrMalformed)
		}
		out = append(out, id)
	}
	return out, nil
}
