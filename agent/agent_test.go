package agent_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/schemas"
)

// exampleCase is examples/cases/sak-overforing (Trondheim -> Oslo).
func exampleCase(tb testing.TB) adapter.Case {
	tb.Helper()
	root := filepath.Join("..", "examples", "cases", "sak-overforing")
	meta, err := os.ReadFile(filepath.Join(root, "melding.json"))
	if err != nil {
		tb.Fatal(err)
	}
	c := adapter.Case{Type: schemas.TypeSakOverforing, To: "municipality:0301", Metadata: meta}
	entries, err := os.ReadDir(filepath.Join(root, "dokumenter"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, en := range entries {
		c.Files = append(c.Files, adapter.File{Name: "dokumenter/" + en.Name(), Path: filepath.Join(root, "dokumenter", en.Name())})
	}
	return c
}

func outState(a *agent.Agent, id string) string {
	d, err := a.Message(id)
	if err != nil {
		return ""
	}
	return d.State
}

// outOrder is the documented order of outgoing states (docs/states.md):
// a later event never moves a message back.
var outOrder = map[string]int{
	localapi.StateQueued: 0, localapi.StateSent: 1, localapi.StateDelivered: 2, localapi.StateReceived: 3,
	localapi.StateProcessed: 4, localapi.StateRejected: 4, localapi.StateExpired: 4, localapi.StateFailed: 4,
}

// recordingAdapter is a Receiver that records deliveries (with a copy of
// the bytes) and can fail the first attempts.
type recordingAdapter struct {
	mu      sync.Mutex
	failN   int
	panicN  int // panics (quoting a file name) before failN's failures
	calls   int
	got     map[string]map[string][]byte
	ids     []string
	verdict string // "", "processed" or "rejected": given inside Deliver
}

func (r *recordingAdapter) Name() string { return "recording" }

func (r *recordingAdapter) Run(ctx context.Context, _ adapter.Host) error {
	<-ctx.Done()
	return nil
}

func (r *recordingAdapter) Deliver(ctx context.Context, h adapter.Host, d adapter.Delivery) error {
	r.mu.Lock()
	r.calls++
	if r.panicN > 0 {
		r.panicN--
		r.mu.Unlock()
		panic("case system crashed on " + d.Files[0].Name)
	}
	if r.failN > 0 {
		r.failN--
		r.mu.Unlock()
		return errors.New("case system down")
	}
	files := map[string][]byte{}
	for _, f := range d.Files {
		b, err := os.ReadFile(filepath.Join(d.Dir, filepath.FromSlash(f.Name)))
		if err != nil {
			r.mu.Unlock()
			return err
		}
		files[f.Name] = b
	}
	if r.got == nil {
		r.got = map[string]map[string][]byte{}
	}
	if _, dup := r.got[d.ID]; !dup {
		r.ids = append(r.ids, d.ID)
	}
	r.got[d.ID] = files
	verdict := r.verdict
	r.mu.Unlock()
	switch verdict {
	case "processed":
		return h.Processed(ctx, d.ID)
	case "rejected":
		return h.Rejected(ctx, d.ID, []localapi.Reason{{Code: "not_our_case"}})
	}
	return nil
}

var _ adapter.Receiver = (*recordingAdapter)(nil)

func (r *recordingAdapter) delivered() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}

func (r *recordingAdapter) callCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// receivingNetwork starts trondheim and oslo over a real gateway, with rec
// as Oslo's receiving adapter (plus any extra nodes).
func receivingNetwork(t *testing.T, rec *recordingAdapter, extra ...string) *agenttest.Network {
	t.Helper()
	return agenttest.NewNetworkSetup(t, agenttest.Setup{
		Options:     map[string][]agent.Option{"oslo": {agent.WithAdapters(rec)}},
		OwnReceiver: map[string]bool{"oslo": true},
	}, append([]string{"trondheim", "oslo"}, extra...)...)
}

// TestSendReceiveReceipts sends a case through the real gateway to an
// adapter that fails twice, and follows it to processed: same bytes at the
// adapter, three delivery attempts, a mottatt receipt signed by Oslo, a
// monotonic history, a final verdict, and an idempotent resend.
func TestSendReceiveReceipts(t *testing.T) {
	rec := &recordingAdapter{failN: 2}
	n := receivingNetwork(t, rec)
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	c := exampleCase(t)
	resp, err := tr.Agent.Send(t.Context(), c)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if resp.State != localapi.StateQueued {
		t.Fatalf("state %q, want queued", resp.State)
	}
	agenttest.Poll(t, "received", func() bool { return outState(tr.Agent, resp.ID) == localapi.StateReceived })
	agenttest.Poll(t, "delivery", func() bool { return len(rec.delivered()) == 1 })
	// Same bytes at the adapter.
	rec.mu.Lock()
	got := rec.got[resp.ID]
	rec.mu.Unlock()
	if !bytes.Equal(got[localapi.MetadataFile], c.Metadata) {
		t.Fatal("melding.json differs")
	}
	for _, f := range c.Files {
		want, err := os.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[f.Name], want) {
			t.Fatalf("%s differs", f.Name)
		}
	}
	if calls := rec.callCount(); calls != 3 {
		t.Fatalf("adapter calls %d, want 3 (two failures, then success)", calls)
	}
	agenttest.Poll(t, "in delivered", func() bool { return outState(osl.Agent, resp.ID) == localapi.InDelivered })

	// The mottatt receipt is kept and verifies against the trust roots.
	d, err := tr.Agent.Message(resp.ID)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range d.Receipts {
		kinds = append(kinds, r.Kind)
		if r.Kind == agent.KindMottatt {
			signer, err := agent.VerifyReceipt(r, n.PKI.Pool, time.Now())
			if err != nil {
				t.Fatalf("verify mottatt: %v", err)
			}
			if !signer.Equal(osl.Account.Cert) {
				t.Fatal("mottatt not signed by oslo")
			}
			if r.Issuer != osl.ID {
				t.Fatalf("mottatt issuer %q, want oslo %q", r.Issuer, osl.ID)
			}
		}
	}
	if !slices.Contains(kinds, api.EventAccepted) || !slices.Contains(kinds, agent.KindMottatt) {
		t.Fatalf("receipts %v", kinds)
	}

	// Processed via the local API verdict -> behandlet -> processed.
	if err := osl.Agent.Processed(t.Context(), resp.ID); err != nil {
		t.Fatal(err)
	}
	agenttest.Poll(t, "processed", func() bool { return outState(tr.Agent, resp.ID) == localapi.StateProcessed })
	// A late rejection is refused: the verdict is final.
	if err := osl.Agent.Rejected(t.Context(), resp.ID, nil); errs.CodeOf(err) != errs.NotDeliverable {
		t.Fatalf("reject after processed: %v", err)
	}
	// History is monotonic.
	d, err = tr.Agent.Message(resp.ID)
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, h := range d.History {
		if h.Reason != agent.ReasonLateEvent {
			states = append(states, h.State)
		}
	}
	for i := 1; i < len(states); i++ {
		if outOrder[states[i]] < outOrder[states[i-1]] {
			t.Fatalf("history not monotonic: %v", states)
		}
	}
	if len(states) == 0 || states[0] != localapi.StateQueued || states[len(states)-1] != localapi.StateProcessed {
		t.Fatalf("history %v: want queued first and processed last", states)
	}
	// Sending the same id again answers the same; nothing new is queued.
	c.ID = resp.ID
	if again, err := tr.Agent.Send(t.Context(), c); err != nil || again.ID != resp.ID || again.State != localapi.StateProcessed {
		t.Fatalf("resend with the same id: %+v %v", again, err)
	}
	if ids := rec.delivered(); len(ids) != 1 {
		t.Fatalf("adapter got %d messages, want 1: %v", len(ids), ids)
	}
}

// TestSendIdempotentAndSchemaErrors checks over the real gateway that a
// send repeated with its id answers the same, that other content under that
// id is a conflict, and that a schema-invalid case is refused with every
// JSON path; only the first case ever reaches the gateway and Oslo.
func TestSendIdempotentAndSchemaErrors(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	c := exampleCase(t)
	c.ID = "11111111-2222-4333-8444-555555555555"
	r1, err := tr.Agent.Send(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := tr.Agent.Send(t.Context(), c)
	if err != nil || r2.ID != r1.ID {
		t.Fatalf("idempotent resend: %v %v", r2, err)
	}
	c2 := c
	c2.Metadata = bytes.Replace(bytes.Clone(c.Metadata), []byte(`"hast": false`), []byte(`"hast": true`), 1)
	if bytes.Equal(c2.Metadata, c.Metadata) {
		t.Fatal("example case changed: no \"hast\": false to replace")
	}
	if _, err := tr.Agent.Send(t.Context(), c2); errs.CodeOf(err) != errs.Conflict {
		t.Fatalf("same id, other content: %v", err)
	}
	bad := exampleCase(t)
	bad.ID = "11111111-2222-4333-8444-666666666666"
	bad.Metadata = bytes.Replace(bad.Metadata, []byte(`"hast": false`), []byte(`"hast": "nei"`), 1)
	bad.Metadata = bytes.Replace(bad.Metadata, []byte(`"saksnummer": "2024/1187",`), []byte(``), 1)
	_, err = tr.Agent.Send(t.Context(), bad)
	var ve *agent.ValidationError
	if !errors.As(err, &ve) || errs.CodeOf(err) != errs.SchemaInvalid {
		t.Fatalf("schema-invalid send: %v", err)
	}
	paths := map[string]bool{}
	for _, r := range ve.Reasons {
		paths[r.Path] = true
	}
	if !paths["/hast"] || !paths["/avsender"] && !paths["/avsender/saksnummer"] {
		t.Fatalf("reasons %+v lack the paths", ve.Reasons)
	}

	// Only the first case travels: Oslo gets it once, with its content.
	agenttest.Poll(t, "received at sender", func() bool { return outState(tr.Agent, r1.ID) == localapi.StateReceived })
	agenttest.Poll(t, "inbox folder", func() bool { return len(inboxIDs(t, osl.Inbox)) > 0 })
	if ids := inboxIDs(t, osl.Inbox); len(ids) != 1 || ids[0] != r1.ID {
		t.Fatalf("oslo inbox %v, want only %s", ids, r1.ID)
	}
	meta, err := os.ReadFile(filepath.Join(osl.Inbox, r1.ID, localapi.MetadataFile))
	if err != nil || !bytes.Equal(meta, c.Metadata) {
		t.Fatalf("oslo's melding.json is not the first send's: %v", err)
	}
	list, err := tr.Agent.List(localapi.DirectionOut, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != r1.ID {
		t.Fatalf("trondheim's outgoing list %+v, want only %s", list, r1.ID)
	}
	if _, err := tr.Agent.Message(bad.ID); err == nil {
		t.Fatal("the schema-invalid case is recorded at the sender")
	}
	gw := n.Client("trondheim")
	st, err := gw.Status(t.Context(), r1.ID)
	if err != nil || st.Routing.From != tr.ID || st.Routing.To != osl.ID {
		t.Fatalf("gateway status of the sent case: %+v %v", st, err)
	}
	if _, err := gw.Status(t.Context(), bad.ID); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("gateway knows the schema-invalid case: %v", err)
	}
}
