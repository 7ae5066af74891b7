package agent

import (
	"testing"
	"time"

	"github.com/kurer/kurer/agent/localapi"
)

// outAllowed is docs/states.md's outgoing state machine written out move
// by move (not derived from outRank): forward only; expired and failed
// only before the receiver has the message; nothing leaves a terminal
// state.
var outAllowed = map[string][]string{
	localapi.StateQueued: {localapi.StateSent, localapi.StateDelivered, localapi.StateReceived, localapi.StateProcessed,
		localapi.StateRejected, localapi.StateExpired, localapi.StateFailed},
	localapi.StateSent: {localapi.StateDelivered, localapi.StateReceived, localapi.StateProcessed,
		localapi.StateRejected, localapi.StateExpired, localapi.StateFailed},
	localapi.StateDelivered: {localapi.StateReceived, localapi.StateProcessed, localapi.StateRejected},
	localapi.StateReceived:  {localapi.StateProcessed, localapi.StateRejected},
	localapi.StateProcessed: nil,
	localapi.StateRejected:  nil,
	localapi.StateExpired:   nil,
	localapi.StateFailed:    nil,
}

func TestCanAdvanceOutEveryPair(t *testing.T) {
	for cur, allowed := range outAllowed {
		for next := range outAllowed {
			want := false
			for _, a := range allowed {
				want = want || a == next
			}
			if got := canAdvanceOut(cur, next); got != want {
				t.Errorf("%s -> %s: allowed %v, want %v", cur, next, got, want)
			}
		}
	}
}

// TestAdvanceRecordsLateEvents: an event the state machine does not allow
// (a delivered notice after the receiver's mottatt, an expired notice
// after delivery) is kept in the history as a late event and moves
// nothing; a repeat of the current state adds nothing.
func TestAdvanceRecordsLateEvents(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	r := &outRecord{}
	steps := []struct {
		state   string
		moved   bool
		current string
	}{
		{localapi.StateQueued, true, localapi.StateQueued},
		{localapi.StateSent, true, localapi.StateSent},
		{localapi.StateSent, false, localapi.StateSent}, // the accepted notice after the answer
		{localapi.StateReceived, true, localapi.StateReceived},
		{localapi.StateDelivered, false, localapi.StateReceived}, // the gateway's notice came late
		{localapi.StateExpired, false, localapi.StateReceived},   // never expires once delivered
		{localapi.StateProcessed, true, localapi.StateProcessed},
		{localapi.StateRejected, false, localapi.StateProcessed}, // terminal
	}
	for i, s := range steps {
		if moved := r.advance(localapi.StateChange{State: s.state, At: at.Add(time.Duration(i) * time.Second)}); moved != s.moved || r.State != s.current {
			t.Fatalf("step %d (%s): moved %v, state %s; want %v, %s", i, s.state, moved, r.State, s.moved, s.current)
		}
	}
	// History: every step but the repeat of sent; the three late ones
	// marked as such.
	if len(r.History) != len(steps)-1 {
		t.Fatalf("history has %d entries, want %d: %+v", len(r.History), len(steps)-1, r.History)
	}
	late := 0
	for _, h := range r.History {
		if h.Reason == ReasonLateEvent {
			late++
		}
	}
	if late != 3 {
		t.Fatalf("%d late events recorded, want 3: %+v", late, r.History)
	}
	if r.Pending {
		t.Fatal("a message past queued is still pending upload")
	}
}
