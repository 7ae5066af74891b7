package gateway

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/gateway/store/bolt"
	"github.com/kurer/kurer/schemas"
)

// TestWarnAmbiguousCatalog: at start the gateway names each account that
// shares a (municipality, type) pair with another (a catalog from before
// the admin API refused that), and says nothing of a catalog without one.
func TestWarnAmbiguousCatalog(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "store"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var logs bytes.Buffer
	s := &Server{st: b, q: b, log: slog.New(slog.NewJSONHandler(&logs, nil)), now: time.Now}
	put := func(id, org, muni string) {
		t.Helper()
		if err := b.PutAccount(t.Context(), store.Account{ID: id, Name: id, OrgNumber: org, Municipality: muni,
			Types: []string{schemas.TypeSakOverforing}}); err != nil {
			t.Fatal(err)
		}
	}
	put("00000000-0000-4000-8000-000000000001", "974760673", "0301")
	put("00000000-0000-4000-8000-000000000002", "964338531", "4601")
	s.warnAmbiguousCatalog(t.Context())
	if logs.Len() != 0 {
		t.Fatalf("warned about an unambiguous catalog: %s", logs.String())
	}
	put("00000000-0000-4000-8000-000000000003", "310000027", "0301") // a second 0301 for the same type
	s.warnAmbiguousCatalog(t.Context())
	out := logs.String()
	for _, id := range []string{"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000003"} {
		if !strings.Contains(out, `"account":"`+id+`"`) {
			t.Fatalf("no warning names %s:\n%s", id, out)
		}
	}
	if strings.Contains(out, "000000000002") || !strings.Contains(out, "ambiguous receiver") {
		t.Fatalf("warnings:\n%s", out)
	}
}
