package webhook

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/schemas"
)

// TestEndToEnd sends the example case from Trondheim's folder outbox over a
// real gateway to Oslo, whose only receiver is this webhook, and checks the
// case system's answer reaches Trondheim as a signed receipt.
func TestEndToEnd(t *testing.T) {
	tests := []struct {
		name      string
		answers   []answer
		wantState string
		wantCode  string
	}{
		{name: "500 then accepted", answers: []answer{{status: 500}, {status: 500}, {status: 200}}, wantState: localapi.StateProcessed},
		{name: "422 rejected", answers: []answer{{status: 500}, {status: 422, body: `{"reasons":[{"code":"ukjent_sak","detail":"no such case"}]}`}},
			wantState: localapi.StateRejected, wantCode: "ukjent_sak"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := newCaseSystem(t, tc.answers...)
			// One attempt per delivery: the agent's own backoff does the
			// retrying here.
			wh, err := New("fagsystem", Config{URL: cs.srv.URL + "/kurer", SecretFile: writeSecret(t, testSecret),
				CAFile: cs.caFile(t), Retry: RetryConfig{Attempts: 1}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			n := agenttest.NewNetworkSetup(t, agenttest.Setup{
				Options:     map[string][]agent.Option{"oslo": {agent.WithAdapters(wh)}},
				OwnReceiver: map[string]bool{"oslo": true},
			}, "trondheim", "oslo")
			tr := n.Nodes["trondheim"]
			src := filepath.Join("..", "..", "..", "examples", "cases", "sak-overforing")
			id := sendCase(t, tr.Outbox, src)

			var detail localapi.MessageDetail
			agenttest.Poll(t, "state "+tc.wantState+" at the sender", func() bool {
				d, err := tr.Agent.Message(id)
				detail = d
				return err == nil && d.State == tc.wantState
			})
			rqs := cs.requests()
			if len(rqs) != len(tc.answers) {
				t.Errorf("case system saw %d requests, want %d", len(rqs), len(tc.answers))
			}
			contents := readTree(t, src)
			for _, rq := range rqs {
				if rq.err != nil {
					t.Fatalf("receiver verification: %v", rq.err)
				}
				if rq.idempotencyKey != id || rq.meta.ID != id || rq.meta.Type != schemas.TypeSakOverforing ||
					rq.meta.From != tr.ID || rq.meta.To != n.Nodes["oslo"].ID || rq.meta.ReceiptID == "" {
					t.Errorf("request metadata %+v, key %q; want message %s from %s", rq.meta, rq.idempotencyKey, id, tr.ID)
				}
				if len(rq.meta.Files) != len(contents) {
					t.Errorf("metadata lists %d files, source has %d", len(rq.meta.Files), len(contents))
				}
				for name, want := range contents {
					if got, ok := rq.parts["file:"+name]; !ok || !bytes.Equal(got, want) {
						t.Errorf("%s: not the source bytes (present %v)", name, ok)
					}
				}
				if len(rq.parts["manifest"]) == 0 || len(rq.parts["signature"]) == 0 {
					t.Error("manifest or signature missing")
				}
			}
			if tc.wantCode != "" {
				last := detail.History[len(detail.History)-1]
				if last.State != localapi.StateRejected || last.Reason != tc.wantCode {
					t.Errorf("last state change %+v, want rejected with reason %s", last, tc.wantCode)
				}
			}
			inD, err := n.Nodes["oslo"].Agent.Message(id)
			if err != nil {
				t.Fatal(err)
			}
			wantIn := map[string]string{localapi.StateProcessed: localapi.InProcessed, localapi.StateRejected: localapi.InRejected}[tc.wantState]
			if inD.State != wantIn {
				t.Errorf("receiver's state %s, want %s", inD.State, wantIn)
			}
		})
	}
}

// sendCase builds a case folder from src beside Trondheim's outbox and moves
// it in atomically; it returns the message id the folder adapter records.
func sendCase(t *testing.T, outbox, src string) string {
	t.Helper()
	build := filepath.Join(outbox, ".case1.partial")
	for name, b := range readTree(t, src) {
		p := filepath.Join(build, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caseJSON := `{"type":"` + schemas.TypeSakOverforing + `","to":"municipality:0301"}`
	if err := os.WriteFile(filepath.Join(build, "case.json"), []byte(caseJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(build, filepath.Join(outbox, "case1")); err != nil {
		t.Fatal(err)
	}
	var id string
	agenttest.Poll(t, "case sent", func() bool {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(outbox), "sent", "case1", ".kurer-id"))
		id = string(bytes.TrimSpace(b))
		return err == nil && id != ""
	})
	return id
}

// readTree reads every file under dir by its slash-separated relative name.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		out[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil || len(out) == 0 {
		t.Fatalf("read %s: %v (%d files)", dir, err, len(out))
	}
	return out
}
