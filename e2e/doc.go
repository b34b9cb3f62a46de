// Package e2e is glow's real-kernel test tier: the glow binary, built once by
// TestMain, runs as real daemons in Linux network namespaces built by
// glow/e2e/lab (bridged LANs, NAT routers, a fake Internet), and the tests
// check what a user sees: `glow up`, invites, pings over the overlay
// addresses, `glow status --json`, restarts.
//
// The tier is part of `go test ./...` and `make test`. It needs root; without
// root every test skips, saying so loudly (set GLOW_E2E=require to make that a
// failure instead, as CI does). See README.md for how to add a test.
package e2e
