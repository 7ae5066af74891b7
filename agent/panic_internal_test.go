package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/errs"
)

// TestLocalAPIPanicAnswered makes a real local-API route panic (the
// message list of an agent without a store): the case system gets the
// catalogue's 500 internal_error as JSON instead of a cut connection, and
// the log has one "handler panic" record with the route, the panic's type
// and the stack, but not its value, nor the request's token or query.
func TestLocalAPIPanicAnswered(t *testing.T) {
	var log bytes.Buffer
	const token = "local-api-token-0123456789"
	a := &Agent{log: slog.New(slog.NewJSONHandler(&log, nil)), token: token}
	const secret = "01010112345"
	r := httptest.NewRequest(http.MethodGet, localapi.PathMessages+"?direction=in&after="+secret, nil)
	r.Header.Set("Authorization", "Bearer "+token)
	w := httptest.NewRecorder()
	a.apiHandler().ServeHTTP(w, r) // without recovery the panic ends the test
	var b errs.Body
	if w.Code != http.StatusInternalServerError || w.Header().Get("Content-Type") != "application/json" ||
		json.Unmarshal(w.Body.Bytes(), &b) != nil || b.Code != errs.Internal {
		t.Fatalf("status %d, Content-Type %q, body %s: want 500 internal_error as JSON", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == "handler panic" {
			recs = append(recs, rec)
		}
	}
	if len(recs) != 1 || recs[0]["level"] != "ERROR" || recs[0]["route"] != "GET "+localapi.PathMessages ||
		!strings.HasPrefix(fmt.Sprint(recs[0]["panic_type"]), "runtime.") || !strings.Contains(fmt.Sprint(recs[0]["stack"]), "handleList") {
		t.Fatalf("panic log records %v; log:\n%s", recs, log.String())
	}
	if _, ok := recs[0]["panic"]; ok {
		t.Fatalf("the panic's value was logged: %v", recs[0])
	}
	for _, leak := range []string{token, secret, "nil pointer"} {
		if strings.Contains(log.String(), leak) {
			t.Fatalf("the log holds %q:\n%s", leak, log.String())
		}
	}
}
