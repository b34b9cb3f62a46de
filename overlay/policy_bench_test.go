package overlay

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// BenchmarkSharedThroughput measures TCP throughput from a friend's node
// to a shared service, with the policy filter on the packet path, under a
// policy of 1 rule and of 100 rules (b.SetBytes: compare the MB/s).
func BenchmarkSharedThroughput(b *testing.B) {
	for _, rules := range []int{1, 100} {
		b.Run(fmt.Sprintf("rules=%d", rules), func(b *testing.B) {
			nas := testNode(b, "nas", func(c *Config) { c.UserName = "alice" })
			laptop := testNode(b, "laptop", func(c *Config) { c.UserName = "bob" })
			fcode, err := nas.FriendInvite(time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := laptop.FriendAdd(context.Background(), fcode); err != nil {
				b.Fatal(err)
			}
			var pol strings.Builder
			for i := 0; i < rules-1; i++ {
				fmt.Fprintf(&pol, "allow bob -> nas:%d/udp\n", 20000+i)
			}
			pol.WriteString("allow bob -> nas:7000/tcp\n")
			if _, err := nas.ApplyPolicy(pol.String()); err != nil {
				b.Fatal(err)
			}
			ap := netip.AddrPortFrom(nas.Cert().IPv4, 7000)
			ln, err := stackNet(nas).ListenTCPAddrPort(ap)
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err == nil {
					io.Copy(io.Discard, c)
					c.Close()
				}
			}()
			var conn interface {
				io.Writer
				Close() error
			}
			deadline := time.Now().Add(20 * time.Second)
			for conn == nil && time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				c, err := laptop.Userspace().DialContext(ctx, "tcp", ap.String())
				cancel()
				if err == nil {
					conn = c
				}
			}
			if conn == nil {
				b.Fatal("no connection to the shared service")
			}
			defer conn.Close()
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := conn.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if !nas.tunf.on.Load() {
				b.Fatal("the filter was not on the packet path")
			}
		})
	}
}
