package adapter

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

type logOnly struct{ log *slog.Logger }

func (l *logOnly) Name() string                    { return "t" }
func (l *logOnly) Run(context.Context, Host) error { return nil }

// TestNewPassesLogger: an adapter built from config gets the agent's
// logger (a nil one discards), and registering a kind twice panics.
func TestNewPassesLogger(t *testing.T) {
	const kind = "adaptertest-logger"
	Register(kind, func(name string, decode func(v any) error, log *slog.Logger) (Adapter, error) {
		log.Info("built", "adapter", name)
		return &logOnly{log: log}, nil
	})
	var buf bytes.Buffer
	if _, err := New(kind, "one", func(any) error { return nil }, slog.New(slog.NewTextHandler(&buf, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "adapter=one") {
		t.Fatalf("factory's log line missing: %q", buf.String())
	}
	if _, err := New(kind, "two", func(any) error { return nil }, nil); err != nil {
		t.Fatalf("nil logger: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("second Register of a kind did not panic")
		}
	}()
	Register(kind, func(string, func(any) error, *slog.Logger) (Adapter, error) { return nil, nil })
}
