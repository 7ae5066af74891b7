package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
	"github.com/kurer/kurer/internal/pki/pkitest"
	"github.com/kurer/kurer/schemas"
)

// Fixed test accounts: Trondheim (5001) sends, Oslo (0301) receives, the
// example case names both.
const (
	trondheimID = "00000000-0000-4000-8000-000000005001"
	osloID      = "00000000-0000-4000-8000-000000000301"
)

type testNode struct {
	name  string
	id    string
	dir   string
	acct  *pkitest.Account
	agent *Agent
	done  chan error
	opts  []Option
}

type testEnv struct {
	t     testing.TB
	pki   *pkitest.PKI
	net   *memNet
	nodes map[string]*testNode
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	p := pkitest.New(t, "trondheim", "oslo")
	e := &testEnv{t: t, pki: p, net: newMemNet(), nodes: map[string]*testNode{}}
	all := []string{schemas.TypeSakOverforing, schemas.TypeMottatt, schemas.TypeAvvist, schemas.TypeBehandlet,
		schemas.TypeDokumentasjonForesporsel, schemas.TypeDokumentasjonSvar}
	for _, n := range []struct{ name, id, muni, org string }{
		{"trondheim", trondheimID, "5001", "315000009"}, {"oslo", osloID, "0301", "315010004"},
	} {
		acct := p.Accounts[n.name]
		e.net.accounts[n.id] = api.Account{ID: n.id, Name: n.name, OrgNumber: n.org, Municipality: n.muni, Types: all,
			Certificates: []api.Certificate{{PEM: string(pki.EncodeCertPEM(acct.Cert)), Fingerprint: pki.Fingerprint(acct.Cert),
				NotBefore: acct.Cert.NotBefore, NotAfter: acct.Cert.NotAfter}}}
		e.nodes[n.name] = &testNode{name: n.name, id: n.id, dir: t.TempDir(), acct: acct}
	}
	return e
}

// start starts (or restarts, on the same data dir) the agent of node name.
func (e *testEnv) start(name string, opts ...Option) *testNode {
	e.t.Helper()
	n := e.nodes[name]
	cfg := Config{Account: n.id, DataDir: n.dir, Dev: true,
		LocalAPI: LocalAPIConfig{Listen: "127.0.0.1:0"},
		Retry:    RetryConfig{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		Receive:  ReceiveConfig{Wait: time.Second}}
	all := append([]Option{WithKeys(Key{Cert: n.acct.Cert, Signer: n.acct.Key}), WithTrustRoots(e.pki.CA.Cert),
		WithGateway(e.net.gw(n.id)), WithToken("test-token-0123456789")}, opts...)
	a, err := New(cfg, slog.New(slog.DiscardHandler), all...)
	if err != nil {
		e.t.Fatalf("new agent %s: %v", name, err)
	}
	n.agent, n.done = a, make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { n.done <- a.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		<-a.closed
	})
	return n
}

// stop stops a node gracefully, or waits for a halted one.
func (n *testNode) wait(tb testing.TB) error {
	tb.Helper()
	select {
	case err := <-n.done:
		return err
	case <-time.After(20 * time.Second):
		tb.Fatalf("agent %s did not stop", n.name)
		return nil
	}
}

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

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func outState(a *Agent, id string) string {
	d, err := a.Message(id)
	if err != nil {
		return ""
	}
	return d.State
}

// recordingAdapter is a Receiver that records deliveries (with a copy of
// the bytes) and can fail the first attempts.
type recordingAdapter struct {
	mu      sync.Mutex
	failN   int
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

func TestSendReceiveReceipts(t *testing.T) {
	e := newTestEnv(t)
	rec := &recordingAdapter{failN: 2}
	tr := e.start("trondheim")
	os := e.start("oslo", WithAdapters(rec))
	c := exampleCase(t)
	resp, err := tr.agent.Send(t.Context(), c)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if resp.State != localapi.StateQueued {
		t.Fatalf("state %q, want queued", resp.State)
	}
	waitFor(t, "received", func() bool { return outState(tr.agent, resp.ID) == localapi.StateReceived })
	waitFor(t, "delivery", func() bool { return len(rec.delivered()) == 1 })
	// Same bytes at the adapter.
	rec.mu.Lock()
	got := rec.got[resp.ID]
	rec.mu.Unlock()
	if !bytes.Equal(got[localapi.MetadataFile], c.Metadata) {
		t.Fatal("melding.json differs")
	}
	for _, f := range c.Files {
		want, _ := readFile(f.Path)
		if !bytes.Equal(got[f.Name], want) {
			t.Fatalf("%s differs", f.Name)
		}
	}
	if rec.calls != 3 {
		t.Fatalf("adapter calls %d, want 3 (two failures, then success)", rec.calls)
	}
	waitFor(t, "in delivered", func() bool { d, _ := os.agent.Message(resp.ID); return d.State == localapi.InDelivered })

	// The mottatt receipt is kept and verifies against the trust roots.
	d, err := tr.agent.Message(resp.ID)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range d.Receipts {
		kinds = append(kinds, r.Kind)
		if r.Kind == KindMottatt {
			signer, err := VerifyReceipt(r, e.pki.Pool, time.Now())
			if err != nil {
				t.Fatalf("verify mottatt: %v", err)
			}
			if !signer.Equal(os.acct.Cert) {
				t.Fatal("mottatt not signed by oslo")
			}
		}
	}
	sort.Strings(kinds)
	if !strings.Contains(strings.Join(kinds, ","), "accepted") || !strings.Contains(strings.Join(kinds, ","), KindMottatt) {
		t.Fatalf("receipts %v", kinds)
	}

	// Processed via the local API verdict -> behandlet -> processed.
	if err := os.agent.Processed(t.Context(), resp.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "processed", func() bool { return outState(tr.agent, resp.ID) == localapi.StateProcessed })
	// A late rejection is refused: the verdict is final.
	if err := os.agent.Rejected(t.Context(), resp.ID, nil); errs.CodeOf(err) != errs.NotDeliverable {
		t.Fatalf("reject after processed: %v", err)
	}
	// History is monotonic.
	d, _ = tr.agent.Message(resp.ID)
	var states []string
	for _, h := range d.History {
		if h.Reason != ReasonLateEvent {
			states = append(states, h.State)
		}
	}
	for i := 1; i < len(states); i++ {
		if outRank[states[i]] < outRank[states[i-1]] {
			t.Fatalf("history not monotonic: %v", states)
		}
	}
	// Sending the same id again answers the same; other content conflicts.
	c.ID = resp.ID
	if again, err := tr.agent.Send(t.Context(), c); err != nil || again.ID != resp.ID || again.State != localapi.StateProcessed {
		t.Fatalf("resend with the same id: %+v %v", again, err)
	}
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

func TestSendIdempotentAndSchemaErrors(t *testing.T) {
	e := newTestEnv(t)
	tr := e.start("trondheim")
	c := exampleCase(t)
	c.ID = "11111111-2222-4333-8444-555555555555"
	r1, err := tr.agent.Send(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := tr.agent.Send(t.Context(), c)
	if err != nil || r2.ID != r1.ID {
		t.Fatalf("idempotent resend: %v %v", r2, err)
	}
	c2 := c
	c2.Metadata = append([]byte(nil), c.Metadata...)
	c2.Metadata = bytes.Replace(c2.Metadata, []byte(`"hast": false`), []byte(`"hast": true`), 1)
	if _, err := tr.agent.Send(t.Context(), c2); errs.CodeOf(err) != errs.Conflict {
		t.Fatalf("same id, other content: %v", err)
	}
	bad := exampleCase(t)
	bad.Metadata = bytes.Replace(bad.Metadata, []byte(`"hast": false`), []byte(`"hast": "nei"`), 1)
	bad.Metadata = bytes.Replace(bad.Metadata, []byte(`"saksnummer": "2024/1187",`), []byte(``), 1)
	_, err = tr.agent.Send(t.Context(), bad)
	var ve *ValidationError
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
	n := e.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.msgs) > 1 {
		t.Fatalf("gateway holds %d messages, want at most 1", len(n.msgs))
	}
}
