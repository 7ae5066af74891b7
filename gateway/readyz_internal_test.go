package gateway

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kurer/kurer/gateway/store/bolt"
)

// TestReadyReflectsStore: /readyz answers ready only while the store can
// commit; a store that is closed (as one that failed or stalled) takes
// the gateway out of rotation.
func TestReadyReflectsStore(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "store"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{st: b, q: b, log: slog.New(slog.DiscardHandler)}
	ready := func() (int, string) {
		w := httptest.NewRecorder()
		s.handleReady(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return w.Code, w.Body.String()
	}
	if code, _ := ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("before the server runs: %d", code)
	}
	s.ready.Store(true)
	if code, body := ready(); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("running, store healthy: %d %q", code, body)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	code, body := ready()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "store") {
		t.Fatalf("store closed: %d %q, want 503 naming the store", code, body)
	}
}
