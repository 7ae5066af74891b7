package agent_test

import (
	"testing"
	"time"

	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/schemas"
)

// TestListMergesDirectionsOldestFirst: without a direction, outgoing and
// incoming messages are listed together, oldest first, and the limit cuts
// the newest, whichever direction they have.
func TestListMergesDirectionsOldestFirst(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]

	in, err := tr.Agent.Send(t.Context(), exampleCase(t)) // Oslo's incoming, older
	if err != nil {
		t.Fatal(err)
	}
	agenttest.Poll(t, "stored at Oslo", func() bool {
		d, err := osl.Agent.Message(in.ID)
		return err == nil && d.Direction == localapi.DirectionIn
	})
	c := exampleCase(t)
	c.To = "municipality:5001"
	c.Type = schemas.TypeSakOverforing
	out, err := osl.Agent.Send(t.Context(), c) // Oslo's outgoing, newer
	if err != nil {
		t.Fatal(err)
	}

	all, err := osl.Agent.List("", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != in.ID || all[1].ID != out.ID {
		t.Fatalf("list = %+v; want incoming %s then outgoing %s", all, in.ID, out.ID)
	}
	one, err := osl.Agent.List("", "", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != 1 || one[0].ID != in.ID || one[0].Direction != localapi.DirectionIn {
		t.Fatalf("list limit 1 = %+v; want the older incoming %s", one, in.ID)
	}
}

// TestLatestEvent: after=latest starts at the newest event without paging
// through the log: no old events, and a cursor that sees the next change.
func TestLatestEvent(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	tr := n.Nodes["trondheim"]
	c, err := localapi.NewClient(tr.URL, tr.Token)
	if err != nil {
		t.Fatal(err)
	}
	first, err := tr.Agent.Send(t.Context(), exampleCase(t))
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the first message has made all its events: received, and
	// the mottatt receipt stored as an incoming record, which happens just
	// after the state change it causes. Otherwise the receipt's event can
	// land between the reads below.
	var all localapi.EventsResponse
	agenttest.Poll(t, "received with its receipt recorded", func() bool {
		if outState(tr.Agent, first.ID) != localapi.StateReceived {
			return false
		}
		var err error
		if all, err = c.Events(t.Context(), 0, 0); err != nil {
			t.Fatal(err)
		}
		receipts := 0
		for _, e := range all.Events {
			if e.Direction == localapi.DirectionIn && e.State == localapi.InProcessed {
				receipts++
			}
		}
		return receipts == 1
	})
	latest, err := c.LatestEvent(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := all.Events[len(all.Events)-1].Seq; latest != want {
		t.Fatalf("latest = %d, want %d", latest, want)
	}
	second, err := tr.Agent.Send(t.Context(), exampleCase(t))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := c.Events(t.Context(), latest, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Events) == 0 || ev.Events[0].ID != second.ID || ev.Events[0].Seq != latest+1 {
		t.Fatalf("events after latest = %+v; want the second message's first change", ev.Events)
	}
}
