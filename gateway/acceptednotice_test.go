package gateway_test

import (
	"bytes"
	"testing"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/gatewaytest"
)

// TestAcceptedNoticeInSendersMailbox: the accepted receipt of the submit
// answer is also a notice in the sender's mailbox (a sender that lost the
// answer learns it there, through the channel that brings every other
// outcome), once per message: an idempotent resubmit adds none.
func TestAcceptedNoticeInSendersMailbox(t *testing.T) {
	e := gatewaytest.New(t, nil)
	oslo := e.Client("oslo")
	body := gatewaytest.RandBytes(2048)
	r := e.Routing("oslo", "bergen", body)
	res, err := oslo.Submit(t.Context(), r, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oslo.Submit(t.Context(), r, bytes.NewReader(body)); err != nil {
		t.Fatalf("idempotent resubmit: %v", err)
	}
	items := gatewaytest.PollUntil(t, oslo, 1)
	if more, _ := oslo.Poll(t.Context(), 0, 10); len(items)+len(more) != 1 {
		t.Fatalf("%d items in the sender's mailbox, want the one accepted notice", len(items)+len(more))
	}
	it := items[0]
	if it.Kind != api.KindNotice || it.Routing.InReplyTo != r.ID || it.Notice != res.Receipt {
		t.Fatalf("sender's item = %+v, want the accepted receipt as a notice", it)
	}
	claims, err := oslo.VerifyNotice(it.Notice)
	if err != nil || claims.Event != api.EventAccepted || claims.MessageID != r.ID || claims.ID != it.Routing.ID {
		t.Fatalf("accepted notice: %+v, %v", claims, err)
	}
	if err := oslo.Ack(t.Context(), it.Routing.ID); err != nil {
		t.Fatalf("ack of the notice: %v", err)
	}
	if more, _ := oslo.Poll(t.Context(), 0, 10); len(more) != 0 {
		t.Fatalf("after the ack the sender's mailbox holds %d items", len(more))
	}
	// The receiver is not told: it gets the message only.
	got := gatewaytest.PollUntil(t, e.Client("bergen"), 1)
	if len(got) != 1 || got[0].Kind != api.KindMessage || got[0].Routing.ID != r.ID {
		t.Fatalf("receiver's mailbox = %+v", got)
	}
}
