package member

import (
	"crypto/ed25519"
	"crypto/rand"
)

func NewUserKey(name string) (*UserKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &UserKey{Name: name, Priv: priv}, nil
}
