package agent_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
)

// TestAdapterPanicRetried: a receiving adapter (a municipality's own code)
// that panics in Deliver does not take the agent down. Each panic is a
// failed delivery, retried with backoff like an error; the case then
// arrives once, the agent keeps running, and the log names the adapter and
// the panic's type with a stack but not the panic's text, which quotes a
// payload file name.
func TestAdapterPanicRetried(t *testing.T) {
	rec := &recordingAdapter{panicN: 2}
	var log agenttest.LogBuffer
	n := agenttest.NewNetworkSetup(t, agenttest.Setup{
		Options:     map[string][]agent.Option{"oslo": {agent.WithAdapters(rec)}},
		OwnReceiver: map[string]bool{"oslo": true},
		Logs:        map[string]io.Writer{"oslo": &log},
	}, "trondheim", "oslo")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	c := exampleCase(t)
	res, err := tr.Agent.Send(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	agenttest.Poll(t, "delivered at oslo", func() bool { return outState(osl.Agent, res.ID) == localapi.InDelivered })
	if calls, got := rec.callCount(), rec.delivered(); calls != 3 || len(got) != 1 || got[0] != res.ID {
		t.Fatalf("adapter calls %d, delivered %v: want two panics, then %s once", calls, got, res.ID)
	}
	select {
	case err := <-osl.Done:
		t.Fatalf("oslo's agent stopped: %v", err)
	default:
	}

	recs := log.Records(t, "adapter panic")
	if len(recs) != 2 {
		t.Fatalf("%d adapter panic records, want 2; log:\n%s", len(recs), log.String())
	}
	for _, r := range recs {
		if r["level"] != "ERROR" || r["adapter"] != rec.Name() || r["call"] != "deliver" || r["panic_type"] != "string" ||
			!strings.Contains(r["stack"].(string), "recordingAdapter") {
			t.Fatalf("adapter panic record %v", r)
		}
	}
	if strings.Contains(log.String(), "case system crashed") {
		t.Fatalf("the log quotes the panic's text (with a file name):\n%s", log.String())
	}
}

// panicRunAdapter's Run panics once the agent runs it.
type panicRunAdapter struct{}

func (panicRunAdapter) Name() string { return "panics-in-run" }

func (panicRunAdapter) Run(context.Context, adapter.Host) error { panic("run loop crashed") }

// TestAdapterRunPanicStopsCleanly: a panic in an adapter's Run loop stops
// the agent as an error from Run does (its contract), with a clear error
// and a logged stack, instead of killing the process mid-write.
func TestAdapterRunPanicStopsCleanly(t *testing.T) {
	var log agenttest.LogBuffer
	n := agenttest.NewNetworkSetup(t, agenttest.Setup{
		Options: map[string][]agent.Option{"oslo": {agent.WithAdapters(panicRunAdapter{})}},
		Logs:    map[string]io.Writer{"oslo": &log},
	}, "oslo")
	err := n.Wait("oslo")
	if err == nil || !strings.Contains(err.Error(), "panics-in-run") || !strings.Contains(err.Error(), "adapter panicked") {
		t.Fatalf("Run = %v, want the adapter's panic as an error", err)
	}
	if len(log.Records(t, "adapter panic")) != 1 || strings.Contains(log.String(), "run loop crashed") {
		t.Fatalf("log:\n%s", log.String())
	}
}
