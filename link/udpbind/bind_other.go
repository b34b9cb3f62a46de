//go:build !(linux && (amd64 || arm64))

package udpbind

import "golang.zx2c4.com/wireguard/conn"

// New returns wireguard-go's conn.StdNetBind: the raw batch I/O is written
// for Linux on amd64 and arm64 only.
func New() conn.Bind { return conn.NewStdNetBind() }
