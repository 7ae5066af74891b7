package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kurer/kurer/agent/localapi"
)

// TestReadyReflectsStore: the agent's /readyz answers ready only while its
// store can commit, since everything it takes in is promised durable.
func TestReadyReflectsStore(t *testing.T) {
	a := fuzzAgent(t)
	ready := func() (int, string) {
		w := httptest.NewRecorder()
		a.handleReady(w, httptest.NewRequest(http.MethodGet, localapi.PathReady, nil))
		return w.Code, w.Body.String()
	}
	a.ready.Store(true) // the gateway was reached
	if code, body := ready(); code != http.StatusOK {
		t.Fatalf("store healthy: %d %s", code, body)
	}
	if err := a.store.db.Close(); err != nil {
		t.Fatal(err)
	}
	if code, body := ready(); code != http.StatusServiceUnavailable || !strings.Contains(body, "store") {
		t.Fatalf("store closed: %d %s, want 503 naming the store", code, body)
	}
}
