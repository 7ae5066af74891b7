package gwload_test

import (
	"context"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/gwload"
)

func accounts(e *gatewaytest.Env, names ...string) []gwload.Account {
	var as []gwload.Account
	for _, n := range names {
		as = append(as, gwload.Account{ID: e.IDs[n], NewClient: func(inline int64) (*client.Client, error) {
			return e.ClientWith(n, func(c *client.Config) { c.PollInline = inline }), nil
		}})
	}
	return as
}

// delivered counts the gateway's messages in state delivered.
func delivered(t *testing.T, e *gatewaytest.Env) int {
	t.Helper()
	ms, err := e.Admin().Messages(t.Context(), client.MessageFilter{State: api.StateDelivered})
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

// TestRunDeliversEveryMessage: with agents on both sides, every message
// sent is delivered and acked at the gateway, every accept is timed, and
// the senders' delivered notices are acked too.
func TestRunDeliversEveryMessage(t *testing.T) {
	e := gatewaytest.New(t, nil)
	as := accounts(e, "oslo", "bergen", "trondheim")
	started := 0
	res, err := gwload.Run(t.Context(), gwload.Config{
		Senders: as, Receivers: as, Workers: 6, Messages: 90,
		Body: gatewaytest.RandBytes(10 << 10), Type: gatewaytest.MessageType, DownloadDir: t.TempDir(),
		Started: func() { started++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	if started != 1 || res.Messages != 90 || len(res.Latencies) != 90 || res.PerSec <= 0 || res.Polls < 1 {
		t.Fatalf("started %d, result %+v", started, res)
	}
	if p50, p99 := res.Percentile(0.5), res.Percentile(0.99); p50 <= 0 || p99 < p50 {
		t.Fatalf("accept p50 %v p99 %v", p50, p99)
	}
	if n := delivered(t, e); n != 90 {
		t.Fatalf("%d messages delivered at the gateway, want 90", n)
	}
	// Each message brings its sender two notices, accepted and delivered.
	// Those of the last messages may still be on their way when the last
	// message is acked; most are acked within the run.
	if res.NoticesAcked < 90 || res.NoticesAcked > 180 {
		t.Fatalf("%d notices acked for 90 messages", res.NoticesAcked)
	}
}

// TestRunOneReceiver: two senders to one mailbox; envelopes above the
// inline limit are downloaded.
func TestRunOneReceiver(t *testing.T) {
	e := gatewaytest.New(t, nil)
	res, err := gwload.Run(t.Context(), gwload.Config{
		Senders: accounts(e, "oslo", "trondheim"), Receivers: accounts(e, "bergen"), Workers: 4, Messages: 12,
		Body: gatewaytest.RandBytes(gwload.InlineLimit + 1), Type: gatewaytest.MessageType, DownloadDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages != 12 || res.NoticesAcked != 0 {
		t.Fatalf("result %+v", res)
	}
	if n := delivered(t, e); n != 12 {
		t.Fatalf("%d delivered, want 12", n)
	}
}

// TestRunPaces: an open loop sends message i at start + i/rate, so 21
// messages at 100/s take at least 0.2 s, and no longer than a few times
// that on an idle gateway.
func TestRunPaces(t *testing.T) {
	e := gatewaytest.New(t, nil)
	as := accounts(e, "oslo", "bergen")
	res, err := gwload.Run(t.Context(), gwload.Config{
		Senders: as, Receivers: as, Workers: 2, Messages: 21, Rate: 100,
		Body: []byte("ciphertext"), Type: gatewaytest.MessageType, DownloadDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Elapsed < 200*time.Millisecond || res.Elapsed > 5*time.Second {
		t.Fatalf("21 messages at 100/s took %v", res.Elapsed)
	}
}

// TestRunStopsOnRefusal: a submit the gateway refuses ends the run with
// the gateway's error code, at once, instead of waiting for acks that
// cannot come.
func TestRunStopsOnRefusal(t *testing.T) {
	e := gatewaytest.New(t, nil)
	as := accounts(e, "oslo", "bergen")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	_, err := gwload.Run(ctx, gwload.Config{
		Senders: as, Receivers: as, Workers: 2, Messages: 10,
		Body: []byte("ciphertext"), Type: "no.kurer.not.taken.v1", DownloadDir: t.TempDir(),
	})
	gatewaytest.WantCode(t, err, errs.UnknownType)
	if d := time.Since(t0); d > 10*time.Second {
		t.Fatalf("refusal ended the run after %v", d)
	}
}

func TestRunChecksConfig(t *testing.T) {
	e := gatewaytest.New(t, nil)
	for name, c := range map[string]gwload.Config{
		"no senders":                {Receivers: accounts(e, "oslo"), Workers: 1, Messages: 1, Body: []byte("x")},
		"no body":                   {Senders: accounts(e, "oslo"), Receivers: accounts(e, "bergen"), Workers: 1, Messages: 1},
		"receivers not the senders": {Senders: accounts(e, "oslo", "bergen"), Receivers: accounts(e, "bergen", "trondheim"), Workers: 2, Messages: 1, Body: []byte("x")},
	} {
		if _, err := gwload.Run(t.Context(), c); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
