package member

import (
	"bytes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/scrypt"

	"glow/internal/wire"
)

// A user key backup (glow user export) is the user key sealed with a key
// derived from a passphrase:
//
//	magic "GLOWUKEY" (8) | format version (1) = 1 | KDF (1) = 1 (scrypt) |
//	log2 N (1) | r (1) | p (1) | salt (16) | user name (1 + up to 63) |
//	user public key (32) | nonce (24) |
//	XChaCha20-Poly1305 of the 32-byte ed25519 seed (48)
//
// Everything before the sealed seed is the AEAD's additional data, so a
// header changed on disk (another name, cheaper KDF parameters) fails to
// open like a wrong passphrase does. The name and public key are in the
// clear so that a backup says whose it is before any passphrase is asked.
// The parser bounds the KDF parameters, so a hostile file cannot make
// restoring take more than 256 MiB or a few seconds.

const (
	backupMagic   = "GLOWUKEY"
	backupVersion = 1
	backupKDF     = 1 // scrypt

	// Export parameters: N=2^17, r=8, p=1 (128 MiB, about half a second),
	// above the 2^15 scrypt's authors advise for interactive logins: a
	// backup is opened once in a long while and may sit anywhere.
	backupLogN = 17
	backupR    = 8
	backupP    = 1

	// What a backup may ask for: 128*r*N bytes at most 256 MiB.
	minBackupLogN, maxBackupLogN = 10, 18
	maxBackupR, maxBackupP       = 16, 4

	// MinPassphrase is the shortest passphrase an export takes, in bytes.
	MinPassphrase = 8
)

// Errors opening a backup.
var (
	ErrNotBackup     = errors.New("not a glow user key backup (glow user export)")
	ErrBadPassphrase = errors.New("wrong passphrase (or the backup file was changed)")
)

// UserKeyBackup is a parsed backup file, still sealed.
type UserKeyBackup struct {
	Name    string
	User    [32]byte
	logN    uint8
	r, p    uint8
	salt    [16]byte
	nonce   [24]byte
	sealed  []byte
	aadSize int
	raw     []byte
}

// SealUserKey encrypts u with passphrase into a backup file's bytes.
func SealUserKey(u *UserKey, passphrase []byte) ([]byte, error) {
	return sealUserKey(u, passphrase, backupLogN)
}

func sealUserKey(u *UserKey, passphrase []byte, logN uint8) ([]byte, error) {
	if len(passphrase) < MinPassphrase {
		return nil, fmt.Errorf("the passphrase must be at least %d characters", MinPassphrase)
	}
	var w wire.Writer
	w.Raw([]byte(backupMagic))
	w.U8(backupVersion)
	w.U8(backupKDF)
	w.U8(logN)
	w.U8(backupR)
	w.U8(backupP)
	var salt [16]byte
	var nonce [24]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	w.Raw(salt[:])
	w.Str(u.Name)
	w.Raw(u.Public())
	w.Raw(nonce[:])
	aead, err := backupAEAD(passphrase, salt[:], logN, backupR, backupP)
	if err != nil {
		return nil, err
	}
	aad := bytes.Clone(w.B)
	return aead.Seal(w.B, nonce[:], u.Priv.Seed(), aad), nil
}

// ParseUserKeyBackup reads a backup file's header without opening it.
func ParseUserKeyBackup(b []byte) (*UserKeyBackup, error) {
	if len(b) > 1024 || !bytes.HasPrefix(b, []byte(backupMagic)) {
		return nil, ErrNotBackup
	}
	r := wire.Reader{B: b[len(backupMagic):]}
	if v := r.U8(); r.Err == nil && v != backupVersion {
		return nil, fmt.Errorf("%w: format version %d (this glow reads version %d)", ErrNotBackup, v, backupVersion)
	}
	if k := r.U8(); r.Err == nil && k != backupKDF {
		return nil, fmt.Errorf("%w: unknown key derivation %d", ErrNotBackup, k)
	}
	bk := &UserKeyBackup{logN: r.U8(), r: r.U8(), p: r.U8()}
	r.Fixed(bk.salt[:])
	bk.Name = r.Str(63)
	r.Fixed(bk.User[:])
	r.Fixed(bk.nonce[:])
	bk.aadSize = len(b) - len(r.B)
	bk.sealed = bytes.Clone(r.Raw(ed25519.SeedSize + chacha20poly1305.Overhead))
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotBackup, err)
	}
	if bk.logN < minBackupLogN || bk.logN > maxBackupLogN || bk.r < 1 || bk.r > maxBackupR || bk.p < 1 || bk.p > maxBackupP {
		return nil, fmt.Errorf("%w: key derivation parameters out of bounds (N=2^%d r=%d p=%d)", ErrNotBackup, bk.logN, bk.r, bk.p)
	}
	if !ValidName(bk.Name) {
		return nil, fmt.Errorf("%w: bad user name", ErrNotBackup)
	}
	bk.raw = bytes.Clone(b)
	return bk, nil
}

// Open decrypts the backup with passphrase. A wrong passphrase is
// ErrBadPassphrase.
func (bk *UserKeyBackup) Open(passphrase []byte) (*UserKey, error) {
	aead, err := backupAEAD(passphrase, bk.salt[:], bk.logN, bk.r, bk.p)
	if err != nil {
		return nil, err
	}
	seed, err := aead.Open(nil, bk.nonce[:], bk.sealed, bk.raw[:bk.aadSize])
	if err != nil {
		return nil, ErrBadPassphrase
	}
	u := &UserKey{Name: bk.Name, Priv: ed25519.NewKeyFromSeed(seed)}
	if !bytes.Equal(u.Public(), bk.User[:]) {
		return nil, fmt.Errorf("%w: the key inside is not the user key the file names", ErrNotBackup)
	}
	return u, nil
}

// OpenUserKey parses and decrypts a backup file's bytes.
func OpenUserKey(b, passphrase []byte) (*UserKey, error) {
	bk, err := ParseUserKeyBackup(b)
	if err != nil {
		return nil, err
	}
	return bk.Open(passphrase)
}

func backupAEAD(passphrase, salt []byte, logN, r, p uint8) (cipher.AEAD, error) {
	key, err := scrypt.Key(passphrase, salt, 1<<logN, int(r), int(p), chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	return chacha20poly1305.NewX(key)
}
