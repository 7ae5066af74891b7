package agent_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/internal/errs"
)

// TestSendToAmbiguousReceiverRefused: a real gateway whose catalog has two
// accounts answering to municipality 0301 and Oslo's org number for the
// case type (written past the admin API, as an older catalog could hold
// it). A send from Trondheim's agent to municipality:0301 or
// org:NNNNNNNNN, by the adapter path and by the local API, is refused with
// ambiguous_receiver naming both accounts; nothing is queued and nothing
// reaches either account's gateway mailbox. The same case sent to Oslo's
// account id goes through, to Oslo only.
func TestSendToAmbiguousReceiverRefused(t *testing.T) {
	e := gatewaytest.New(t, nil, "oslo2")
	now := time.Now().UTC()
	second := uuid.NewString()
	e.PutAccountOffline("oslo2", store.Account{ID: second, Name: "Oslo kommune, second service", OrgNumber: gatewaytest.OrgNumber("oslo"),
		Municipality: "0301", Service: "barneverntjenesten", Types: []string{gatewaytest.MessageType},
		Certificates: [][]byte{e.PKI.Accounts["oslo2"].Cert.Raw}, Created: now, Updated: now})
	oslo := e.IDs["oslo"]

	const token = "lookup-ambiguous-token-0123456789"
	tr := e.PKI.Accounts["trondheim"]
	a, err := agent.New(agent.Config{Account: e.IDs["trondheim"], DataDir: t.TempDir(), Dev: true,
		Gateway:  agent.GatewayConfig{URL: e.URL(), Audience: e.Cfg.Audience},
		LocalAPI: agent.LocalAPIConfig{Listen: "127.0.0.1:0"},
		Retry:    agent.RetryConfig{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Receive:  agent.ReceiveConfig{Wait: time.Second}},
		slog.New(slog.DiscardHandler), agent.WithKeys(agent.Key{Cert: tr.Cert, Signer: tr.Key}),
		agent.WithTrustRoots(e.PKI.CA.Cert), agent.WithGatewayTLS(e.TLS.Clone()), agent.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = a.Close() })
	lc, err := localapi.NewClient(a.LocalURL(), token)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for lc.Ready(t.Context()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("agent not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}

	wantAmbiguous := func(t *testing.T, err error) {
		t.Helper()
		gatewaytest.WantCode(t, err, errs.AmbiguousReceiver)
		var ee *errs.Error
		if !errors.As(err, &ee) || !strings.Contains(ee.Detail, oslo) || !strings.Contains(ee.Detail, second) ||
			!strings.Contains(ee.Detail, "account id") {
			t.Fatalf("the refusal should name both accounts and ask for the account id: %v", err)
		}
	}
	for _, to := range []string{"municipality:0301", "org:" + gatewaytest.OrgNumber("oslo")} {
		t.Run("adapter-"+to, func(t *testing.T) {
			c := exampleCase(t)
			c.To = to
			_, err := a.Send(t.Context(), c)
			wantAmbiguous(t, err)
		})
		t.Run("local-api-"+to, func(t *testing.T) {
			_, err := lc.Send(t.Context(), localSend(t, to))
			wantAmbiguous(t, err)
		})
	}

	// Nothing queued, nothing at either mailbox.
	if out, err := a.List("out", "", 100); err != nil || len(out) != 0 {
		t.Fatalf("outgoing after the refusals: %+v, %v", out, err)
	}
	for _, name := range []string{"oslo", "oslo2"} {
		if items, err := e.Client(name).Poll(t.Context(), 0, 100); err != nil || len(items) != 0 {
			t.Fatalf("%s's mailbox after the refusals: %d items, %v", name, len(items), err)
		}
	}

	// By account id the case goes through, to Oslo only.
	res, err := lc.Send(t.Context(), localSend(t, oslo))
	if err != nil {
		t.Fatalf("send by account id: %v", err)
	}
	got := gatewaytest.PollUntil(t, e.Client("oslo"), 1)
	if got[0].Routing.ID != res.ID || got[0].Kind != api.KindMessage {
		t.Fatalf("oslo's mailbox: %+v, want message %s", got[0].Routing, res.ID)
	}
	if items, err := e.Client("oslo2").Poll(t.Context(), 0, 100); err != nil || len(items) != 0 {
		t.Fatalf("the other account's mailbox: %d items, %v", len(items), err)
	}
}

// localSend is the example case as a local API send to to.
func localSend(t *testing.T, to string) localapi.SendRequest {
	t.Helper()
	c := exampleCase(t)
	req := localapi.SendRequest{Type: c.Type, To: to, Metadata: c.Metadata}
	for _, f := range c.Files {
		req.Files = append(req.Files, localapi.SendFile{Name: f.Name, Size: -1,
			Open: func() (io.ReadCloser, error) { return os.Open(f.Path) }})
	}
	return req
}
