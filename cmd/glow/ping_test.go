package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"glow/overlay/api"
)

// fakeDaemon answers every /v1/ping on dir's socket with body at status,
// and counts the pings.
func fakeDaemon(t *testing.T, dir string, status int, body api.ErrorBody) *atomic.Int32 {
	t.Helper()
	ln, err := net.Listen("unix", api.SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &n
}

// TestPingBranchesOnCode: glow ping stops at the first answer whose code
// is no-such-peer, whatever its words, and asks again after one that is
// unavailable; either way it fails with exit status 1.
func TestPingBranchesOnCode(t *testing.T) {
	for _, tc := range []struct {
		code      api.Code
		status    int
		wantPings int32
	}{
		{api.CodeNoSuchPeer, http.StatusNotFound, 1},
		{api.CodeUnavailable, http.StatusServiceUnavailable, 2},
	} {
		dir := t.TempDir()
		// The words say nothing of the kind: only the code can.
		pings := fakeDaemon(t, dir, tc.status, api.ErrorBody{Error: "kein Gegenüber namens x", Code: tc.code})
		var out, errOut bytes.Buffer
		rc := run([]string{"--state", dir, "ping", "-c", "2", "x"}, &out, &errOut)
		if rc != 1 || pings.Load() != tc.wantPings {
			t.Errorf("%s: exit %d after %d pings, want 1 after %d (stdout %q stderr %q)", tc.code, rc, pings.Load(), tc.wantPings, out.String(), errOut.String())
		}
		if !strings.Contains(errOut.String(), "kein Gegenüber") {
			t.Errorf("%s: stderr %q does not give the daemon's sentence", tc.code, errOut.String())
		}
	}
}
