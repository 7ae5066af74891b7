package folder

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/errs"
)

// recordingHost is the agent side seen by the adapter; the end-to-end path
// with a real agent and gateway is covered by the demo and crash suites.
type recordingHost struct {
	mu    sync.Mutex
	sent  []adapter.Case
	fail  error
	calls int
}

func (h *recordingHost) Send(_ context.Context, c adapter.Case) (localapi.SendResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.fail != nil {
		return localapi.SendResponse{}, h.fail
	}
	h.sent = append(h.sent, c)
	return localapi.SendResponse{ID: c.ID, State: localapi.StateQueued}, nil
}
func (h *recordingHost) Message(context.Context, string) (localapi.MessageDetail, error) {
	return localapi.MessageDetail{}, nil
}
func (h *recordingHost) Events(ctx context.Context, _ uint64, _ time.Duration) (localapi.EventsResponse, error) {
	<-ctx.Done()
	return localapi.EventsResponse{}, ctx.Err()
}
func (h *recordingHost) Processed(context.Context, string) error                   { return nil }
func (h *recordingHost) Rejected(context.Context, string, []localapi.Reason) error { return nil }

func writeCase(t testing.TB, dir string, routing string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(dir, "dokumenter"), 0o750))
	must(t, os.WriteFile(filepath.Join(dir, CaseFile), []byte(routing), 0o640))
	must(t, os.WriteFile(filepath.Join(dir, localapi.MetadataFile), []byte(`{"a":1}`), 0o640))
	must(t, os.WriteFile(filepath.Join(dir, "dokumenter", "vedtak æøå.txt"), []byte("vedtak"), 0o640))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestOutboxPicksUpCompleteCasesOnce(t *testing.T) {
	root := t.TempDir()
	f, err := New("f", Config{Outbox: filepath.Join(root, "outbox")}, nil)
	must(t, err)
	h := &recordingHost{}
	// In progress: hidden and .partial folders are left alone.
	writeCase(t, filepath.Join(root, "outbox", ".building"), `{"type":"t","to":"0301"}`)
	writeCase(t, filepath.Join(root, "outbox", "b.partial"), `{"type":"t","to":"0301"}`)
	// Complete: built elsewhere, renamed in.
	writeCase(t, filepath.Join(root, "staging"), `{"type":"t","to":"0301"}`)
	must(t, os.Rename(filepath.Join(root, "staging"), filepath.Join(root, "outbox", "sak1")))

	f.ScanOnce(t.Context(), h)
	f.ScanOnce(t.Context(), h)
	if len(h.sent) != 1 {
		t.Fatalf("sent %d cases, want 1", len(h.sent))
	}
	c := h.sent[0]
	if c.To != "municipality:0301" || c.Type != "t" || c.ID == "" || string(c.Metadata) != `{"a":1}` {
		t.Fatalf("case %+v", c)
	}
	if len(c.Files) != 1 || c.Files[0].Name != "dokumenter/vedtak æøå.txt" {
		t.Fatalf("files %+v", c.Files)
	}
	id, err := os.ReadFile(filepath.Join(root, "sent", "sak1", IDFile))
	must(t, err)
	if string(id) != c.ID+"\n" {
		t.Fatalf("recorded id %q, sent %q", id, c.ID)
	}
	if _, err := os.Stat(filepath.Join(root, "outbox", "sak1")); !os.IsNotExist(err) {
		t.Fatalf("case still in outbox: %v", err)
	}
}

func TestOutboxRetryKeepsMessageID(t *testing.T) {
	root := t.TempDir()
	f, err := New("f", Config{Outbox: filepath.Join(root, "outbox")}, nil)
	must(t, err)
	writeCase(t, filepath.Join(root, "outbox", "sak"), `{"type":"t","to":"0301"}`)
	h := &recordingHost{fail: errs.New(errs.Unavailable, nil)}
	f.ScanOnce(t.Context(), h)
	first, err := os.ReadFile(filepath.Join(root, "outbox", "sak", IDFile))
	must(t, err)
	h.fail = nil
	f.ScanOnce(t.Context(), h)
	if h.calls != 2 || len(h.sent) != 1 || h.sent[0].ID+"\n" != string(first) {
		t.Fatalf("calls %d sent %+v first id %q", h.calls, h.sent, first)
	}
}

func TestOutboxReadyMarkerAndRefusal(t *testing.T) {
	root := t.TempDir()
	f, err := New("f", Config{Outbox: filepath.Join(root, "outbox"), ReadyMarker: true}, nil)
	must(t, err)
	dir := filepath.Join(root, "outbox", "sak")
	writeCase(t, dir, `{"type":"t","to":"0301"}`)
	h := &recordingHost{fail: errs.Newf(errs.SchemaInvalid, "/barn/fodselsnummer: checksum")}
	f.ScanOnce(t.Context(), h)
	if h.calls != 0 {
		t.Fatal("case without .ready marker was taken")
	}
	must(t, os.WriteFile(filepath.Join(dir, ReadyFile), nil, 0o640))
	f.ScanOnce(t.Context(), h)
	data, err := os.ReadFile(filepath.Join(root, "failed", "sak", ErrorFile))
	must(t, err)
	var ref Refusal
	must(t, json.Unmarshal(data, &ref))
	if ref.Code != errs.SchemaInvalid || ref.Detail != "/barn/fodselsnummer: checksum" {
		t.Fatalf("refusal %+v", ref)
	}
	// A malformed case.json is refused locally with its reason.
	dir2 := filepath.Join(root, "outbox", "bad")
	writeCase(t, dir2, `{"type":"t","to":"0301","surprise":1}`)
	must(t, os.WriteFile(filepath.Join(dir2, ReadyFile), nil, 0o640))
	f.ScanOnce(t.Context(), &recordingHost{})
	if _, err := os.Stat(filepath.Join(root, "failed", "bad", ErrorFile)); err != nil {
		t.Fatalf("malformed case not refused: %v", err)
	}
}

func TestDeliverAtomicAndIdempotent(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "spool")
	must(t, os.MkdirAll(filepath.Join(src, "dok"), 0o750))
	must(t, os.WriteFile(filepath.Join(src, localapi.MetadataFile), []byte(`{"x":1}`), 0o640))
	must(t, os.WriteFile(filepath.Join(src, "dok", "a.txt"), []byte("hello"), 0o640))
	f, err := New("f", Config{Inbox: filepath.Join(root, "inbox")}, nil)
	must(t, err)
	d := adapter.Delivery{
		ID: "6f1c2a9e-8c1b-4d43-9a55-2d0f7f1b5e10", Type: "t", From: "a", To: "b", Dir: src,
		Files:    []localapi.File{{Name: localapi.MetadataFile, Size: 7}, {Name: "dok/a.txt", Size: 5}},
		Manifest: []byte(`{"m":1}`), Signature: []byte{0x30, 0x01}, ReceiptID: "r1",
	}
	must(t, f.Deliver(t.Context(), nil, d))
	got, err := os.ReadFile(filepath.Join(root, "inbox", d.ID, "dok", "a.txt"))
	must(t, err)
	if string(got) != "hello" {
		t.Fatalf("file %q", got)
	}
	var info MessageInfo
	data, err := os.ReadFile(filepath.Join(root, "inbox", d.ID, "message.json"))
	must(t, err)
	must(t, json.Unmarshal(data, &info))
	if info.ReceiptID != "r1" || info.From != "a" {
		t.Fatalf("info %+v", info)
	}
	// A second delivery (crash before the agent recorded the first) changes nothing.
	must(t, os.WriteFile(filepath.Join(root, "inbox", d.ID, "marker"), nil, 0o640))
	must(t, f.Deliver(t.Context(), nil, d))
	if _, err := os.Stat(filepath.Join(root, "inbox", d.ID, "marker")); err != nil {
		t.Fatal("second delivery replaced the first")
	}
	entries, _ := os.ReadDir(filepath.Join(root, "inbox"))
	if len(entries) != 1 {
		t.Fatalf("inbox has %d entries (temp folder left?)", len(entries))
	}
}

// TestLogsCarryNoFolderNames: case systems may name case folders after the
// child; the adapter's logs must name message ids only.
func TestLogsCarryNoFolderNames(t *testing.T) {
	root := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f, err := New("f", Config{Outbox: filepath.Join(root, "outbox")}, log)
	must(t, err)
	writeCase(t, filepath.Join(root, "outbox", "sak-Nora-Syntetisk"), `{"type":"t","to":"0301"}`)
	writeCase(t, filepath.Join(root, "outbox", "sak-Ola-Syntetisk"), `{"type":"t","to":"0301"}`)
	f.ScanOnce(t.Context(), &recordingHost{})
	writeCase(t, filepath.Join(root, "outbox", "sak-Kari-Syntetisk"), `{"type":"t","to":"0301"}`)
	f.ScanOnce(t.Context(), &recordingHost{fail: errs.Newf(errs.SchemaInvalid, "/barn")})
	if !bytes.Contains(logs.Bytes(), []byte("case refused")) {
		t.Fatalf("refusal not logged:\n%s", logs.String())
	}
	if logs.Len() == 0 {
		t.Fatal("no log lines: the test proves nothing")
	}
	for _, bad := range []string{"Nora", "Ola", "Kari", root} {
		if bytes.Contains(logs.Bytes(), []byte(bad)) {
			t.Fatalf("log carries %q:\n%s", bad, logs.String())
		}
	}
}

// TestOutboxOnlyIsNoReceiver: a folder adapter without an inbox leaves
// incoming messages to another adapter (the agent refuses two receivers).
func TestOutboxOnlyIsNoReceiver(t *testing.T) {
	out, err := New("out", Config{Outbox: filepath.Join(t.TempDir(), "outbox")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := adapter.IsReceiver(out); ok {
		t.Error("outbox-only folder adapter counted as the receiver")
	}
	in, err := New("in", Config{Inbox: filepath.Join(t.TempDir(), "inbox")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := adapter.IsReceiver(in); !ok {
		t.Error("folder adapter with an inbox is not the receiver")
	}
}
