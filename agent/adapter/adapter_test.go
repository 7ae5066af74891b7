package adapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
)

var testRuns atomic.Int64

type logOnly struct{ log *slog.Logger }

func (l *logOnly) Name() string                    { return "t" }
func (l *logOnly) Run(context.Context, Host) error { return nil }

// TestNewPassesLogger: an adapter built from config gets the agent's
// logger (a nil one discards), and registering a kind twice panics.
func TestNewPassesLogger(t *testing.T) {
	// Kinds register for the process, so each run (-count) takes its own.
	kind := fmt.Sprintf("adaptertest-logger-%d", testRuns.Add(1))
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

type testConfig struct{ Dir string }

// TestRegisterNew: options are decoded into the adapter's config type, a
// decoding error names the kind, and a build error comes back as is.
func TestRegisterNew(t *testing.T) {
	kind := fmt.Sprintf("adaptertest-registernew-%d", testRuns.Add(1))
	bad := errors.New("no such folder")
	RegisterNew(kind, func(name string, c testConfig, _ *slog.Logger) (*logOnly, error) {
		if c.Dir == "" {
			return nil, bad
		}
		return &logOnly{}, nil
	})
	a, err := New(kind, "ok", func(v any) error { v.(*testConfig).Dir = "/x"; return nil }, nil)
	if err != nil || a == nil {
		t.Fatalf("build: %v %v", a, err)
	}
	strict := errors.New("unknown field")
	if _, err := New(kind, "x", func(any) error { return strict }, nil); !errors.Is(err, strict) || !strings.Contains(err.Error(), kind+" adapter options") {
		t.Fatalf("decode error = %v", err)
	}
	if a, err := New(kind, "x", func(any) error { return nil }, nil); !errors.Is(err, bad) || a != nil {
		t.Fatalf("build error = %v, adapter %v", err, a)
	}
}
