package agent_test

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/schemas"
)

// TestRestartAtEveryStep halts an agent (as a crash would) right after each
// durable step of one case's journey over a real gateway, starts a new
// agent on the same data dir, and checks that the case arrives in the
// receiver's inbox folder exactly once with the same bytes and that the
// sender ends in state received.
func TestRestartAtEveryStep(t *testing.T) {
	steps := []agent.Step{agent.StepOutboxWritten, agent.StepUploaded, agent.StepSent, agent.StepDownloaded,
		agent.StepInboxWritten, agent.StepAcked, agent.StepDelivered, agent.StepReceiptQueued}
	for _, step := range steps {
		t.Run(string(step), func(t *testing.T) {
			var fired atomic.Bool
			halted := make(chan string, 2)
			hook := func(name string) agent.Option {
				return agent.WithStepHook(func(s agent.Step, id string) error {
					if s == step && fired.CompareAndSwap(false, true) {
						halted <- name
						return agent.ErrHalted
					}
					return nil
				})
			}
			n := agenttest.NewNetworkWith(t, map[string][]agent.Option{
				"trondheim": {hook("trondheim")}, "oslo": {hook("oslo")},
			}, "trondheim", "oslo")
			tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
			src := filepath.Join("..", "examples", "cases", "sak-overforing")
			build := filepath.Join(tr.Outbox, ".case.partial")
			copyTree(t, src, build)
			caseJSON := `{"type":"` + schemas.TypeSakOverforing + `","to":"municipality:0301"}`
			if err := os.WriteFile(filepath.Join(build, "case.json"), []byte(caseJSON), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(build, filepath.Join(tr.Outbox, "case")); err != nil {
				t.Fatal(err)
			}
			var who string
			select {
			case who = <-halted:
			case <-time.After(30 * time.Second):
				t.Fatalf("step %s never reached", step)
			}
			if err := n.Wait(who); err != agent.ErrHalted {
				t.Fatalf("halted agent's Run = %v, want ErrHalted", err)
			}
			n.Restart(who)

			var ids []string
			agenttest.Poll(t, "inbox folder", func() bool {
				ids = inboxIDs(t, osl.Inbox)
				return len(ids) > 0
			})
			compareTree(t, src, filepath.Join(osl.Inbox, ids[0]))
			agenttest.Poll(t, "received at sender", func() bool {
				d, err := tr.Agent.Message(ids[0])
				return err == nil && d.State == localapi.StateReceived
			})
			agenttest.Poll(t, "delivered at receiver", func() bool {
				d, err := osl.Agent.Message(ids[0])
				return err == nil && d.State == localapi.InDelivered
			})
			if ids = inboxIDs(t, osl.Inbox); len(ids) != 1 {
				t.Fatalf("inbox holds %d messages, want 1: %v", len(ids), ids)
			}
			list, err := tr.Agent.List("out", "", 100)
			if err != nil {
				t.Fatal(err)
			}
			cases := 0
			for _, m := range list {
				if m.Type == schemas.TypeSakOverforing {
					cases++
				}
			}
			if cases != 1 {
				t.Fatalf("sender has %d outgoing cases, want 1", cases)
			}
		})
	}
}

func inboxIDs(t *testing.T, dir string) []string {
	t.Helper()
	e, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, x := range e {
		if x.IsDir() && x.Name()[0] != '.' {
			out = append(out, x.Name())
		}
	}
	return out
}
