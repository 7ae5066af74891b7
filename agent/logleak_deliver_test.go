package agent

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/adapter/folder"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/schemas"
)

// leakName is a payload file name of the kind case systems use: it names
// the child. It must never reach a log line.
const (
	leakName   = "dokumenter/vedtak-omsorgsovertakelse-Nora-Fjellheim-150314.pdf"
	leakMarker = "Fjellheim"
)

// failingReceiver is a receiving adapter whose every delivery fails with
// err(d).
type failingReceiver struct {
	err func(d adapter.Delivery) error
}

func (failingReceiver) Name() string { return "failing" }
func (failingReceiver) Run(ctx context.Context, _ adapter.Host) error {
	<-ctx.Done()
	return nil
}
func (r failingReceiver) Deliver(_ context.Context, _ adapter.Host, d adapter.Delivery) error {
	return r.err(d)
}

// logAgent is an agent (New, not Run; no gateway) that logs JSON into the
// returned buffer, with receiver as its receiving adapter.
func logAgent(t *testing.T, receiver adapter.Adapter) (*Agent, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := fuzzAgent(t, func(_ *Config, o *[]Option) { *o = append(*o, WithAdapters(receiver)) })
	// fuzzAgent builds with a discarding logger; the code under test logs
	// through a.log.
	a.log = log.With("component", "agent")
	return a, &logs
}

// storeDeliverable records a received message with one payload file named
// leakName, its ack and mottatt done, so that deliver hands it to the
// adapter. The payload file itself is on disk only when withPayload.
func storeDeliverable(t *testing.T, a *Agent, withPayload bool) string {
	t.Helper()
	id := "6f1c2a9e-8c1b-4d43-9a55-2d0f7f1b5e10"
	dir := a.inDir(id)
	if err := os.MkdirAll(filepath.Join(dir, "payload", "dokumenter"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"manifest.json": `{}`, "signature.p7s": "sig"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if withPayload {
		if err := os.WriteFile(filepath.Join(dir, "payload", filepath.FromSlash(leakName)), []byte("vedtak"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	rec := &inRecord{ID: id, Type: schemas.TypeSakOverforing, From: fuzzSender, To: fuzzReceiver, Created: now,
		Expires: now.Add(time.Hour), Files: []localapi.File{{Name: leakName, Size: 6, SHA256: hexSHA256([]byte("vedtak"))}},
		NeedDeliver: true}
	rec.advance(localapi.StateChange{State: localapi.InStored, At: now})
	if _, err := a.store.insertIn(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestDeliverFailureLogHasNoFileName: an adapter's failed delivery is
// logged (and retried) without the payload file's name, which the error of
// a file-system adapter carries in its path (the folder adapter's
// "inbox file: open .../dokumenter/vedtak-...-Nora-Fjellheim-150314.pdf:
// no space left on device").
func TestDeliverFailureLogHasNoFileName(t *testing.T) {
	tests := []struct {
		name string
		// receiver builds the receiving adapter; inbox is a folder for it.
		receiver func(t *testing.T, inbox string) adapter.Adapter
		// withPayload writes the payload file into the agent's inbox.
		withPayload bool
	}{
		{name: "path-error-enospc", withPayload: true, receiver: func(*testing.T, string) adapter.Adapter {
			return failingReceiver{err: func(d adapter.Delivery) error {
				return fmt.Errorf("inbox file: %w", &fs.PathError{Op: "write",
					Path: filepath.Join("/srv/fagsystem/inbox", "."+d.ID+".partial", filepath.FromSlash(leakName)), Err: syscall.ENOSPC})
			}}
		}},
		{name: "link-error", withPayload: true, receiver: func(*testing.T, string) adapter.Adapter {
			return failingReceiver{err: func(d adapter.Delivery) error {
				return fmt.Errorf("inbox file: %w", &os.LinkError{Op: "link", Old: filepath.Join(d.Dir, leakName),
					New: filepath.Join("/srv/fagsystem/inbox", leakName), Err: syscall.EXDEV})
			}}
		}},
		// The real folder adapter, whose source file is missing: its
		// error names the agent's payload path.
		{name: "folder-adapter", withPayload: false, receiver: func(t *testing.T, inbox string) adapter.Adapter {
			f, err := folder.New("folder", folder.Config{Inbox: inbox}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, logs := logAgent(t, tc.receiver(t, filepath.Join(t.TempDir(), "inbox")))
			id := storeDeliverable(t, a, tc.withPayload)
			if err := a.deliver(t.Context(), id); err != nil {
				t.Fatalf("deliver: %v", err)
			}
			rec, err := a.store.getIn(id)
			if err != nil {
				t.Fatal(err)
			}
			if rec.DeliverTries != 1 || !rec.NeedDeliver {
				t.Fatalf("the failed delivery was not recorded for a retry: tries %d, need deliver %v", rec.DeliverTries, rec.NeedDeliver)
			}
			out := logs.String()
			if !strings.Contains(out, "adapter delivery failed") {
				t.Fatalf("the failure was not logged:\n%s", out)
			}
			for _, bad := range []string{leakMarker, "vedtak", "dokumenter", a.store.path()} {
				if strings.Contains(out, bad) {
					t.Fatalf("the log carries %q:\n%s", bad, out)
				}
			}
			// The cause stays useful: the operation and the system's error.
			if tc.name == "path-error-enospc" && !strings.Contains(out, syscall.ENOSPC.Error()) {
				t.Fatalf("the log lost the system error:\n%s", out)
			}
		})
	}
}

// TestLocalAPIErrorLogNamesRouteNotPath: a local API request that fails on
// this host is logged with its route pattern, not the request path, which
// for a file download holds the file's name; and the error's own path
// (the agent's payload file) is left out too.
func TestLocalAPIErrorLogNamesRouteNotPath(t *testing.T) {
	a, logs := logAgent(t, failingReceiver{err: func(adapter.Delivery) error { return nil }})
	id := storeDeliverable(t, a, false) // the payload file is missing: 500
	req := httptest.NewRequest(http.MethodGet, localapi.PathMessage+id+"/files/"+leakName, nil)
	req.Header.Set("Authorization", "Bearer "+fuzzToken)
	w := httptest.NewRecorder()
	a.apiHandler().ServeHTTP(w, req)
	if w.Code < 500 {
		t.Fatalf("status %d, want a 5xx (the test needs a logged failure)", w.Code)
	}
	out := logs.String()
	if !strings.Contains(out, "local api request failed") {
		t.Fatalf("the failure was not logged:\n%s", out)
	}
	route := "GET " + localapi.PathMessage + "{id}/files/{name...}"
	if !strings.Contains(out, route) {
		t.Fatalf("the log line does not name the route %q:\n%s", route, out)
	}
	for _, bad := range []string{leakMarker, "vedtak", id, a.store.path()} {
		if strings.Contains(out, bad) {
			t.Fatalf("the log carries %q:\n%s", bad, out)
		}
	}
}
