package overlay

import "golang.zx2c4.com/wireguard/conn"

// batchBind gives the inner bind a smaller batch size (Config.bindBatch).
// wireguard-go holds BatchSize 64 KiB buffers for each receive function and
// for the TUN reader, whether or not traffic comes: 3 MiB a node with the
// PacketBind's 16. The scale simulation (scalesim_test.go) runs hundreds of
// nodes in one process over sockets that read one datagram at a time
// (natlab), so it asks for 1 and saves that memory; a real node keeps the
// inner bind's size, which is what makes its data path fast.
type batchBind struct {
	conn.Bind
	size int
}

func (b batchBind) BatchSize() int { return b.size }
