package agent

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListenLocalUnix: the local API socket replaces only a stale socket;
// a regular file at its path or a live socket is refused and left alone.
// The socket is 0600 and removed on close.
func TestListenLocalUnix(t *testing.T) {
	// Socket paths are limited to about 100 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "kl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")

	// A regular file is data, never removed.
	if err := os.WriteFile(path, []byte("viktig"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenLocal("unix:" + path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listen over a regular file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "viktig" {
		t.Fatalf("regular file changed: %q %v", b, err)
	}
	os.Remove(path)

	ln, err := listenLocal("unix://" + path) // URL form unix:///path
	if err != nil {
		t.Fatal(err)
	}
	if got := ln.Addr().String(); got != path {
		t.Errorf("Addr = %q, want %q", got, path)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v mode %v", err, fi.Mode())
	}
	// A live socket belongs to someone else.
	if _, err := listenLocal("unix:" + path); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("listen over a live socket: %v", err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Fatalf("first listener lost its socket: %v", err)
	} else {
		c.Close()
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left after close: %v", err)
	}

	// A stale socket (its process died without closing) is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err = listenLocal("unix:" + path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	ln.Close()
}

func TestLocalSocketConfig(t *testing.T) {
	for _, tc := range []struct {
		listen string
		ok     bool
	}{
		{"unix:/run/kurer/agent.sock", true},
		{"unix:///run/kurer/agent.sock", true},
		{"unix://agent.sock", false}, // would be /agent.sock at the root
		{"unix:agent.sock", false},
		{"127.0.0.1:7480", true},
		{"0.0.0.0:7480", false},
	} {
		c := Config{Account: "897028ee-1d43-591c-bb6c-b98ced0afa70", DataDir: "/var/lib/kurer",
			Gateway: GatewayConfig{URL: "https://gw.example"}}
		c.SetDefaults()
		c.LocalAPI.Listen = tc.listen
		err := c.Validate()
		bad := err != nil && strings.Contains(err.Error(), "local_api.listen")
		if bad == tc.ok {
			t.Errorf("listen %q: validate %v, want ok=%v", tc.listen, err, tc.ok)
		}
	}
}
