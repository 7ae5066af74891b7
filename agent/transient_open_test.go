package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/gateway/api"
)

// TestLocalOpenFailureIsRetriedNotRejected breaks the receiving agent's
// spool right after a valid case was downloaded into it, so that opening
// the envelope fails on the receiving host, not because of the envelope.
// The case must not be rejected: no rejection recorded at Oslo, no
// rejected state at the sender or the gateway; the item is left unacked
// and, once the spool is repaired, the gateway's next offer (after the
// 2 s lease agenttest gives the gateway) is opened and delivered, and the
// sender ends in processed. The spool is replaced by something that is no
// directory, which stops root as well as anyone (permission bits would not).
func TestLocalOpenFailureIsRetriedNotRejected(t *testing.T) {
	breaks := []struct {
		name  string
		spoil func(t *testing.T, spool string)
	}{
		// Opening finds the spool a regular file (its output directory
		// cannot even be looked at).
		{name: "spool-is-a-file", spoil: func(t *testing.T, spool string) {
			if err := os.WriteFile(spool, []byte("not a directory"), 0o600); err != nil {
				t.Error(err)
			}
		}},
		// Opening finds the spool gone, in its place a link to nowhere
		// (creating the output directory fails: a write error).
		{name: "spool-is-a-dangling-link", spoil: func(t *testing.T, spool string) {
			if err := os.Symlink(filepath.Join(filepath.Dir(spool), "nowhere"), spool); err != nil {
				t.Error(err)
			}
		}},
	}
	for _, tc := range breaks {
		t.Run(tc.name, func(t *testing.T) {
			var spool, saved string
			var broken atomic.Bool
			hook := agent.WithStepHook(func(s agent.Step, id string) error {
				// Oslo receives only the case: break its spool once, after
				// the download, before the envelope is opened. The
				// download's open file lives on in the moved directory.
				if s == agent.StepDownloaded && broken.CompareAndSwap(false, true) {
					if err := os.Rename(spool, saved); err != nil {
						t.Error(err)
						return nil
					}
					tc.spoil(t, spool)
				}
				return nil
			})
			rec := &recordingAdapter{verdict: "processed"}
			n := agenttest.NewNetworkSetup(t, agenttest.Setup{
				Options:     map[string][]agent.Option{"oslo": {agent.WithAdapters(rec), hook}},
				OwnReceiver: map[string]bool{"oslo": true},
			}, "trondheim", "oslo")
			tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
			spool = filepath.Join(osl.DataDir, "spool")
			saved = filepath.Join(osl.DataDir, "spool.saved")
			gw := n.Client("trondheim")

			c := exampleCase(t)
			resp, err := tr.Agent.Send(t.Context(), c)
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			id := resp.ID

			// The first lease runs out unanswered: the gateway offers the
			// case again (or, wrongly, it is rejected).
			var st api.MessageStatus
			agenttest.Poll(t, "a second offer or a rejection", func() bool {
				st, err = gw.Status(t.Context(), id)
				return err == nil && (st.Attempts >= 2 || st.State == api.StateRejected) ||
					outState(osl.Agent, id) == localapi.InRejected || outState(tr.Agent, id) == localapi.StateRejected
			})
			if !broken.Load() {
				t.Fatal("the spool was never broken")
			}
			if st.State == api.StateRejected {
				t.Fatalf("the gateway holds the case as rejected (%+v) after a local failure at the receiver", st.History)
			}
			if s := outState(osl.Agent, id); s != "" {
				t.Fatalf("oslo recorded the case as %q after a local failure; want no record (left for a new offer)", s)
			}
			if s := outState(tr.Agent, id); s == localapi.StateRejected {
				t.Fatal("the sender's case is rejected after a local failure at the receiver")
			}

			// Repair the spool: the next offer is opened and delivered.
			if err := os.Remove(spool); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(saved, spool); err != nil {
				t.Fatal(err)
			}
			agenttest.Poll(t, "processed at the sender", func() bool { return outState(tr.Agent, id) == localapi.StateProcessed })
			if got := rec.delivered(); len(got) != 1 || got[0] != id {
				t.Fatalf("adapter got %v, want [%s]", got, id)
			}
			rec.mu.Lock()
			files := rec.got[id]
			rec.mu.Unlock()
			if !bytes.Equal(files[localapi.MetadataFile], c.Metadata) {
				t.Fatal("melding.json differs")
			}
			d, err := tr.Agent.Message(id)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range d.History {
				if h.State == localapi.StateRejected {
					t.Fatalf("the sender's history has a rejection: %+v", d.History)
				}
			}
			for _, r := range d.Receipts {
				if r.Kind == agent.KindAvvist {
					t.Fatalf("the sender got an avvist receipt: %+v", r)
				}
			}
		})
	}
}
