package agent_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/metricstest"
)

// TestAcceptedNoticeBeforeAnswerCountsOnce: the gateway's accepted notice
// (in the sender's mailbox) can be applied before the agent has handled the
// submit answer that carries the same receipt. The change to sent is then
// made, counted and audited once, by whichever comes first.
func TestAcceptedNoticeBeforeAnswerCountsOnce(t *testing.T) {
	var sender atomic.Pointer[agent.Agent]
	noticeFirst := make(chan bool, 1)
	hook := agent.WithStepHook(func(s agent.Step, id string) error {
		if s != agent.StepUploaded {
			return nil
		}
		// Hold the answer until the notice has made the message sent.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if a := sender.Load(); a != nil && outState(a, id) == localapi.StateSent {
				noticeFirst <- true
				return nil
			}
			time.Sleep(10 * time.Millisecond) // the agent's own poll loop applies the notice
		}
		noticeFirst <- false
		return nil
	})
	metricsOn := func(_ *agenttest.Network, c *agent.Config) { c.MetricsListen = "127.0.0.1:0" }
	n := agenttest.NewNetworkSetup(t, agenttest.Setup{
		Options: map[string][]agent.Option{"trondheim": {hook}},
		Config:  map[string]agenttest.ConfigFunc{"trondheim": metricsOn},
	}, "trondheim", "oslo")
	tr := n.Nodes["trondheim"].Agent
	sender.Store(tr)
	res, err := tr.Send(t.Context(), exampleCase(t))
	if err != nil {
		t.Fatal(err)
	}
	if !<-noticeFirst {
		t.Fatal("the accepted notice was never applied while the submit answer waited")
	}
	agenttest.Poll(t, "received at the sender", func() bool { return outState(tr, res.ID) == localapi.StateReceived })
	m := metricstest.Scrape(t, "http://"+tr.MetricsAddr())
	if got := m[`kurer_agent_state_changes_total{direction="out",state="sent"}`]; got != 1 {
		t.Fatalf("changes to sent counted %v times, want 1", got)
	}
	d, err := tr.Message(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	for _, h := range d.History {
		if h.State == localapi.StateSent {
			sent++
		}
	}
	if sent != 1 {
		t.Fatalf("history has %d sent entries, want 1: %+v", sent, d.History)
	}
}
