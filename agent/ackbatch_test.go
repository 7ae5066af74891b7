package agent_test

import (
	"testing"

	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/metricstest"
)

// TestAcksBatched: an agent acks what it took from its mailbox in batch
// requests, never one request per item. Trondheim comes back to a mailbox
// holding three "delivered" notices and three "mottatt" receipts from
// Oslo: the notices of its first poll go in one request, and all six items
// in fewer requests than items.
func TestAcksBatched(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	tr := n.Nodes["trondheim"]
	metrics := "http://" + n.Gateway.MetricsAddr().String()
	depth := func(name string) float64 {
		return metricstest.Scrape(t, metrics)[`kurer_gateway_mailbox_depth{account="`+n.Nodes[name].ID+`"}`]
	}
	acks := func() (single, batch float64) {
		m := metricstest.Scrape(t, metrics)
		return m[`kurer_gateway_http_requests_total{code="204",route="POST /v1/mailbox/{id}/ack"}`],
			m[`kurer_gateway_http_requests_total{code="200",route="POST /v1/mailbox/ack"}`]
	}

	_ = n.Stop("oslo")
	var ids []string
	for range 3 {
		res, err := tr.Agent.Send(t.Context(), exampleCase(t))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
	}
	agenttest.Poll(t, "sent", func() bool {
		for _, id := range ids {
			if outState(tr.Agent, id) != localapi.StateSent {
				return false
			}
		}
		return true
	})
	_ = n.Stop("trondheim")
	n.Restart("oslo")
	agenttest.Poll(t, "notices and receipts waiting for trondheim", func() bool { return depth("trondheim") == 6 })
	_ = n.Stop("oslo")

	single0, batch0 := acks()
	n.Restart("trondheim")
	agenttest.Poll(t, "received at trondheim", func() bool {
		for _, id := range ids {
			if outState(tr.Agent, id) != localapi.StateReceived {
				return false
			}
		}
		return depth("trondheim") == 0
	})
	single, batch := acks()
	if d := single - single0; d != 0 {
		t.Errorf("%v single-item ack requests, want none", d)
	}
	// One for the three notices, one to three for the receipts (taken up
	// to Receive.Workers at once, acked per work pass).
	if d := batch - batch0; d < 2 || d > 4 {
		t.Errorf("%v batch ack requests for 6 items, want 2 to 4", d)
	}
}
