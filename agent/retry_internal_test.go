package agent

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/schemas"
)

// testClock is a clock the test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// exampleCaseOf is the example case of examples/cases/sak-overforing.
func exampleCaseOf(tb testing.TB) adapter.Case {
	tb.Helper()
	root := filepath.Join("..", "examples", "cases", "sak-overforing")
	meta, err := os.ReadFile(filepath.Join(root, "melding.json"))
	if err != nil {
		tb.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(root, "dokumenter"))
	if err != nil {
		tb.Fatal(err)
	}
	c := adapter.Case{Type: schemas.TypeSakOverforing, To: "municipality:0301", Metadata: meta}
	for _, en := range entries {
		c.Files = append(c.Files, adapter.File{Name: "dokumenter/" + en.Name(), Path: filepath.Join(root, "dokumenter", en.Name())})
	}
	return c
}

// TestUploadRetriesBackOffAndFail: while the gateway is unreachable, each
// failed upload is counted and its next attempt is stored with the record
// (so a restart keeps it: the upload pass reads it from the store), the
// delay is a random share of an exponentially growing ceiling, no upload
// is tried before it is due, and after max_attempts the message fails with
// max_attempts.
func TestUploadRetriesBackOffAndFail(t *testing.T) {
	clock := &testClock{t: time.Now().UTC()}
	a := fuzzAgent(t, func(c *Config, o *[]Option) {
		c.Retry = RetryConfig{Initial: time.Second, Max: 4 * time.Second, MaxAttempts: 4}
		*o = append(*o, WithClock(clock.now))
	})
	ctx := t.Context()
	res, err := a.Send(ctx, exampleCaseOf(t))
	if err != nil {
		t.Fatal(err)
	}
	rec := func() *outRecord {
		t.Helper()
		r, err := a.store.getOut(res.ID)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	ceilings := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	for attempt := 1; attempt <= 3; attempt++ {
		t0 := clock.now()
		a.uploadPass(ctx)
		r := rec()
		if r.Attempts != attempt || r.State != localapi.StateQueued || !r.Pending || r.LastError == "" {
			t.Fatalf("after attempt %d: attempts %d, state %s, pending %v, last error %q", attempt, r.Attempts, r.State, r.Pending, r.LastError)
		}
		wait := r.NextAttempt.Sub(t0)
		if wait < 0 || wait >= ceilings[attempt-1] {
			t.Fatalf("attempt %d: next attempt in %v, want in [0, %v)", attempt, wait, ceilings[attempt-1])
		}
		// Not due yet: nothing is tried (the stored time rules).
		if wait > 0 {
			a.uploadPass(ctx)
			if n := rec().Attempts; n != attempt {
				t.Fatalf("attempt %d: tried again before it was due (%d attempts)", attempt, n)
			}
		}
		clock.add(wait)
	}
	a.uploadPass(ctx) // the fourth and last
	r := rec()
	if r.State != localapi.StateFailed || r.Pending || r.Attempts != 4 {
		t.Fatalf("after max_attempts: state %s, pending %v, attempts %d", r.State, r.Pending, r.Attempts)
	}
	if last := r.History[len(r.History)-1]; last.Reason != ReasonMaxAttempts {
		t.Fatalf("failed with reason %q, want %s", last.Reason, ReasonMaxAttempts)
	}

	// The delay is jittered: a random share of the ceiling, not the
	// ceiling itself, so that agents that failed together do not retry
	// together.
	seen := map[time.Duration]bool{}
	for range 50 {
		d := a.backoff(3)
		if d < 0 || d >= 4*time.Second {
			t.Fatalf("backoff(3) = %v, want in [0, 4s)", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("backoff(3) took %d distinct values in 50 draws: not jittered", len(seen))
	}
}

// TestExpiresInOutbox: a message whose expiry passes before the gateway
// took it ends expired with expired_in_outbox, and is not uploaded after.
func TestExpiresInOutbox(t *testing.T) {
	clock := &testClock{t: time.Now().UTC()}
	a := fuzzAgent(t, func(c *Config, o *[]Option) { *o = append(*o, WithClock(clock.now)) })
	ctx := t.Context()
	c := exampleCaseOf(t)
	c.Expires = clock.now().Add(time.Hour)
	res, err := a.Send(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	a.uploadPass(ctx) // the gateway is down: one failed attempt
	clock.add(2 * time.Hour)
	a.uploadPass(ctx)
	r, err := a.store.getOut(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != localapi.StateExpired || r.Pending || r.Attempts != 1 {
		t.Fatalf("state %s, pending %v, attempts %d; want expired, not pending, 1 attempt", r.State, r.Pending, r.Attempts)
	}
	if last := r.History[len(r.History)-1]; last.Reason != ReasonExpiredLocally {
		t.Fatalf("expired with reason %q, want %s", last.Reason, ReasonExpiredLocally)
	}
}
