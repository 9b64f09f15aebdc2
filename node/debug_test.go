package node

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPProfOnlyWhenSwitchedOn: the runtime profiles are served on the
// HTTP listener only with debug.pprof, and then a short CPU profile can
// be taken as `go tool pprof` takes it.
func TestPProfOnlyWhenSwitchedOn(t *testing.T) {
	client := &http.Client{Timeout: 20 * time.Second}
	get := func(n *Node, path string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://" + n.Addr(ListenHTTP).String() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}

	off := startNode(t, testConfig(t))
	if code, _ := get(off, "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("pprof off: /debug/pprof/ answered %d, want 404", code)
	}

	cfg := testConfig(t)
	cfg.Debug.PProf = true
	on := startNode(t, cfg)
	if code, body := get(on, "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof on: /debug/pprof/ answered %d:\n%s", code, body)
	}
	code, body := get(on, "/debug/pprof/profile?seconds=1")
	if code != http.StatusOK || len(body) == 0 {
		t.Fatalf("CPU profile: %d, %d bytes", code, len(body))
	}
	// A profile is gzip-compressed protobuf.
	if !strings.HasPrefix(body, "\x1f\x8b") {
		t.Fatalf("CPU profile is not gzip data: % x", body[:min(len(body), 8)])
	}
}
