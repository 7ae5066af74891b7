package agent_test

import (
	"context"
	"sync"
	"testing"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
)

// stuckAdapter is a case system that takes deliveries but never answers
// until released: it counts the calls in flight at once.
type stuckAdapter struct {
	release chan struct{}

	mu       sync.Mutex
	inFlight int
	maxIn    int
	started  map[string]bool
}

func (s *stuckAdapter) Name() string { return "stuck" }

func (s *stuckAdapter) Run(ctx context.Context, _ adapter.Host) error {
	<-ctx.Done()
	return nil
}

func (s *stuckAdapter) Deliver(ctx context.Context, _ adapter.Host, d adapter.Delivery) error {
	s.mu.Lock()
	s.inFlight++
	s.maxIn = max(s.maxIn, s.inFlight)
	s.started[d.ID] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stuckAdapter) stats() (maxIn, started int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxIn, len(s.started)
}

// TestStuckCaseSystemHoldsUpNothingElse: while the case system sits on
// deliveries, later messages are still stored, acked at the gateway and
// answered with a mottatt receipt (the sender sees received), and several
// deliveries are in flight at once. Once the case system answers, every
// message is delivered.
func TestStuckCaseSystemHoldsUpNothingElse(t *testing.T) {
	st := &stuckAdapter{release: make(chan struct{}), started: map[string]bool{}}
	n := agenttest.NewNetworkSetup(t, agenttest.Setup{
		Options:     map[string][]agent.Option{"oslo": {agent.WithAdapters(st)}},
		OwnReceiver: map[string]bool{"oslo": true},
	}, "trondheim", "oslo")
	defer close(st.release) // before the network stops (cleanups run after)
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]

	send := func() string {
		t.Helper()
		res, err := tr.Agent.Send(t.Context(), exampleCase(t))
		if err != nil {
			t.Fatal(err)
		}
		return res.ID
	}
	// The first message gets stuck at the case system; only then do the
	// others come.
	ids := []string{send()}
	agenttest.Poll(t, "first delivery under way", func() bool {
		_, started := st.stats()
		return started == 1
	})
	for range 5 {
		ids = append(ids, send())
	}
	for _, id := range ids {
		agenttest.Poll(t, "received at the sender while the case system is stuck", func() bool {
			return outState(tr.Agent, id) == localapi.StateReceived
		})
	}
	agenttest.Poll(t, "deliveries in flight at once", func() bool {
		m, _ := st.stats()
		return m >= 2
	})
	if m, _ := st.stats(); m > 4 {
		t.Errorf("%d deliveries at once; receive.workers is 4", m)
	}
	for _, id := range ids {
		if d, err := osl.Agent.Message(id); err != nil || d.State != localapi.InStored {
			t.Errorf("incoming %s: state %q, %v; want stored (not yet delivered)", id, d.State, err)
		}
	}
}
