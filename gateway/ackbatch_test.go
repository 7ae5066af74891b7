package gateway_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/errs"
)

// TestAckMany: several items acked in one request: every message becomes
// delivered with its delivered notice to the sender; an unknown id and
// another account's message are reported failed (not_found) without
// touching them; malformed batches are refused whole.
func TestAckMany(t *testing.T) {
	e := gatewaytest.New(t, nil)
	oslo, bergen, trondheim := e.Client("oslo"), e.Client("bergen"), e.Client("trondheim")
	var ids []string
	for range 5 {
		body := gatewaytest.RandBytes(1000)
		r := e.Routing("oslo", "bergen", body)
		if _, err := oslo.Submit(t.Context(), r, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	body := gatewaytest.RandBytes(1000)
	forTrondheim := e.Routing("oslo", "trondheim", body)
	if _, err := oslo.Submit(t.Context(), forTrondheim, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	gatewaytest.PollUntil(t, bergen, 5)
	unknown := "6f1f8a52-5f0b-4c5e-9d1a-1d2b3c4d5e6f"
	failed, err := bergen.AckMany(t.Context(), append(append([]string{}, ids...), unknown, forTrondheim.ID))
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 2 || errs.CodeOf(failed[unknown]) != errs.NotFound || errs.CodeOf(failed[forTrondheim.ID]) != errs.NotFound {
		t.Fatalf("failed = %v; want the unknown id and Trondheim's message, not_found", failed)
	}
	for _, id := range ids {
		st, err := oslo.Status(t.Context(), id)
		if err != nil || st.State != api.StateDelivered {
			t.Errorf("%s: %v %v; want delivered", id, st.State, err)
		}
	}
	if st, err := trondheim.Status(t.Context(), forTrondheim.ID); err != nil || st.State != api.StateAccepted {
		t.Errorf("Trondheim's message: %v %v; want untouched (accepted)", st.State, err)
	}
	// Oslo gets a delivered notice per acked message.
	delivered := 0
	for _, it := range gatewaytest.PollUntil(t, oslo, 5) {
		if strings.Contains(it.Notice, ".") && it.Kind == api.KindNotice {
			if c, err := oslo.VerifyNotice(it.Notice); err == nil && c.Event == api.EventDelivered {
				delivered++
			}
		}
	}
	if delivered != 5 {
		t.Errorf("%d delivered notices, want 5", delivered)
	}
	// Acking again is idempotent.
	if failed, err := bergen.AckMany(t.Context(), ids); err != nil || len(failed) != 0 {
		t.Errorf("second ack: %v %v", failed, err)
	}
	tok, err := bergen.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]string{
		"empty":    `{"ids":[]}`,
		"twice":    `{"ids":["` + ids[0] + `","` + ids[0] + `"]}`,
		"not json": `{"ids":`,
		"unknown":  `{"ids":["` + ids[0] + `"],"x":1}`,
		"too many": `{"ids":[` + strings.Repeat(`"`+unknown+`",`, 256) + `"` + unknown + `"]}`,
	} {
		resp, out := e.Raw(http.MethodPost, e.URL()+api.PathMailbox+"/ack", tok, []byte(b), map[string]string{"Content-Type": "application/json"})
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", name, resp.StatusCode, out)
		}
	}
}
