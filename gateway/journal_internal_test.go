package gateway

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/gateway/store/bolt"
	"github.com/kurer/kurer/internal/audit"
)

// TestShipUnrecordableEntry: an entry the audit log refuses does not hold
// up the journal: it is recorded as audit.unrecordable with its position,
// the entries around it are recorded as they are, and the journal empties.
func TestShipUnrecordableEntry(t *testing.T) {
	dir := t.TempDir()
	b, err := bolt.Open(filepath.Join(dir, "store"), bolt.Options{Journal: func(c store.Change) []store.AuditEntry {
		es := AuditJournal(c)
		if c.Item.Routing.ID == "m-bad" { // larger than a record may be
			es[0].Attrs["pad"] = strings.Repeat("x", audit.MaxRecordSize)
		}
		return es
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	logPath := filepath.Join(dir, "audit.log")
	l, err := audit.Open(logPath, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := &Server{st: b, q: b, audit: l, log: slog.New(slog.DiscardHandler)}
	s.met = newMetrics(s)

	now := time.Now().UTC()
	for _, id := range []string{"m-1", "m-bad", "m-2"} {
		rt := api.Routing{ID: id, From: "s", To: "r", Type: "t", Expires: now.Add(time.Hour), Size: 1, Digest: "d"}
		if _, err := b.Accept(t.Context(), store.Item{Routing: rt, AcceptedAt: now}, store.Payload{Inline: []byte("x")}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.shipAudit(t.Context()); err != nil {
		t.Fatalf("shipAudit = %v", err)
	}
	if left, err := b.Journal(t.Context(), 10); err != nil || len(left) != 0 {
		t.Fatalf("journal after shipping: %d entries, %v", len(left), err)
	}
	if _, err := audit.Verify(logPath); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		got = append(got, r.Action+" "+r.Subject+" journal="+r.Attrs[journalAttr])
	}
	want := []string{"message.accepted m-1 journal=1", "audit.unrecordable  journal=2", "message.accepted m-2 journal=3"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
