package agenttest

import (
	"testing"
	"time"
)

// Poll calls cond every 10ms until it reports true, and fails tb if that
// takes longer than 30s. Tests wait with it, never by sleeping a guess.
func Poll(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
