package gateway_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/errs"
)

func claims(e *gatewaytest.Env, name string, iat time.Time, life time.Duration) map[string]any {
	return map[string]any{
		"iss": e.IDs[name], "sub": e.IDs[name], "aud": e.Cfg.Audience,
		"iat": iat.Unix(), "exp": iat.Add(life).Unix(), "jti": uuid.NewString(),
	}
}

func TestAuthRefusals(t *testing.T) {
	e := gatewaytest.New(t, nil)
	oslo := e.PKI.Accounts["oslo"]
	now := e.Clock.Now()

	t.Run("valid assertion buys a token", func(t *testing.T) {
		tr, err := e.PostToken(gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(e, "oslo", now, time.Minute)))
		if err != nil || tr.AccessToken == "" || tr.TokenType != "Bearer" {
			t.Fatalf("token: %+v %v", tr, err)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		_, err := e.PostToken(gatewaytest.Assertion(t, e.PKI.Accounts["bergen"].Key, jwa.RS256(), claims(e, "oslo", now, time.Minute)))
		gatewaytest.WantCode(t, err, errs.InvalidAssertion)
	})
	t.Run("replayed jti", func(t *testing.T) {
		a := gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(e, "oslo", now, time.Minute))
		if _, err := e.PostToken(a); err != nil {
			t.Fatal(err)
		}
		_, err := e.PostToken(a)
		gatewaytest.WantCode(t, err, errs.ReplayedJTI)
	})
	t.Run("expired assertion", func(t *testing.T) {
		_, err := e.PostToken(gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(e, "oslo", now.Add(-10*time.Minute), time.Minute)))
		gatewaytest.WantCode(t, err, errs.InvalidAssertion)
	})
	t.Run("lifetime over two minutes", func(t *testing.T) {
		_, err := e.PostToken(gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(e, "oslo", now, 10*time.Minute)))
		gatewaytest.WantCode(t, err, errs.InvalidAssertion)
	})
	t.Run("wrong audience", func(t *testing.T) {
		c := claims(e, "oslo", now, time.Minute)
		c["aud"] = "https://other.gateway"
		_, err := e.PostToken(gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), c))
		gatewaytest.WantCode(t, err, errs.InvalidAssertion)
	})
	t.Run("iss differs from sub", func(t *testing.T) {
		c := claims(e, "oslo", now, time.Minute)
		c["sub"] = e.IDs["bergen"]
		_, err := e.PostToken(gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), c))
		gatewaytest.WantCode(t, err, errs.InvalidAssertion)
	})
	t.Run("no token", func(t *testing.T) {
		resp, _ := e.Raw(http.MethodGet, e.URL()+api.PathMailbox+"?wait=0s", "", nil, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("expired access token", func(t *testing.T) {
		tr, err := e.PostToken(gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(e, "oslo", e.Clock.Now(), time.Minute)))
		if err != nil {
			t.Fatal(err)
		}
		// Past the 5-minute lifetime, within the 10 minutes the gateway keeps
		// an expired token so that its holder is told token_expired (after
		// that the sweeper forgets it and the answer is unauthenticated).
		e.Clock.Advance(6 * time.Minute)
		defer e.Clock.Advance(-6 * time.Minute)
		resp, body := e.Raw(http.MethodGet, e.URL()+api.PathMailbox+"?wait=0s", tr.AccessToken, nil, nil)
		if got := errs.FromResponse(resp.StatusCode, body).Code; got != errs.TokenExpired {
			t.Fatalf("code %s (status %d)", got, resp.StatusCode)
		}
	})
	t.Run("operator endpoint with an account token", func(t *testing.T) {
		tr, err := e.PostToken(gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(e, "oslo", e.Clock.Now(), time.Minute)))
		if err != nil {
			t.Fatal(err)
		}
		resp, body := e.Raw(http.MethodGet, e.AdminURL()+api.PathAdminAccounts, tr.AccessToken, nil, nil)
		if c := errs.FromResponse(resp.StatusCode, body).Code; resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d code %s", resp.StatusCode, c)
		}
	})
}

func TestMailboxIsolation(t *testing.T) {
	e := gatewaytest.New(t, nil)
	oslo, bergen, trondheim := e.Client("oslo"), e.Client("bergen"), e.Client("trondheim")
	body := gatewaytest.RandBytes(2048)
	r := e.Routing("oslo", "bergen", body)
	if _, err := oslo.Submit(t.Context(), r, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	// Sending as someone else is refused.
	forged := e.Routing("bergen", "trondheim", body)
	_, err := oslo.Submit(t.Context(), forged, bytes.NewReader(body))
	gatewaytest.WantCode(t, err, errs.Forbidden)
	// Trondheim sees nothing of Bergen's mailbox and cannot touch its message.
	items, err := trondheim.Poll(t.Context(), 0, 10)
	if err != nil || len(items) != 0 {
		t.Fatalf("trondheim mailbox: %v %v", items, err)
	}
	gatewaytest.WantCode(t, trondheim.Ack(t.Context(), r.ID), errs.NotFound)
	_, err = trondheim.Status(t.Context(), r.ID)
	gatewaytest.WantCode(t, err, errs.NotFound)
	got := gatewaytest.PollUntil(t, bergen, 1)
	if got[0].Routing.ID != r.ID || got[0].Kind != api.KindMessage {
		t.Fatalf("bergen got %+v", got[0])
	}
}

func TestSubmitIdempotentAndConflict(t *testing.T) {
	e := gatewaytest.New(t, nil)
	oslo := e.Client("oslo")
	body := gatewaytest.RandBytes(4096)
	r := e.Routing("oslo", "bergen", body)
	first, err := oslo.Submit(t.Context(), r, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	claims, err := oslo.VerifyNotice(first.Receipt)
	if err != nil || claims.Event != api.EventAccepted || claims.MessageID != r.ID || claims.Digest != r.Digest {
		t.Fatalf("accepted receipt: %+v %v", claims, err)
	}
	again, err := oslo.Submit(t.Context(), r, bytes.NewReader(body))
	if err != nil || again.Receipt != first.Receipt {
		t.Fatalf("idempotent resubmit: %v, same receipt %v", err, again.Receipt == first.Receipt)
	}
	other := gatewaytest.RandBytes(4096)
	r2 := e.Routing("oslo", "bergen", other)
	r2.ID = r.ID
	_, err = oslo.Submit(t.Context(), r2, bytes.NewReader(other))
	gatewaytest.WantCode(t, err, errs.Conflict)
	// The same id and bytes with any other routing is a conflict too: the
	// first answer would tell the sender that this submit was accepted.
	for name, mod := range map[string]func(*api.Routing){
		"receiver":     func(r *api.Routing) { r.To = e.IDs["trondheim"] },
		"expiry":       func(r *api.Routing) { r.Expires = r.Expires.Add(time.Hour) },
		"conversation": func(r *api.Routing) { r.Conversation = "0190b3a2-7d1e-7c3a-9f00-000000000001" },
		"in reply to":  func(r *api.Routing) { r.InReplyTo = "0190b3a2-7d1e-7c3a-9f00-000000000002" },
	} {
		r3 := r
		mod(&r3)
		_, err = oslo.Submit(t.Context(), r3, bytes.NewReader(body))
		if errs.CodeOf(err) != errs.Conflict {
			t.Errorf("same id and bytes, other %s: %v, want %s", name, err, errs.Conflict)
		}
	}
	// Exactly one delivery for the id.
	items := gatewaytest.PollUntil(t, e.Client("bergen"), 1)
	more, _ := e.Client("bergen").Poll(t.Context(), 0, 10)
	if len(items)+len(more) != 1 {
		t.Fatalf("%d deliveries, want 1", len(items)+len(more))
	}
}

func TestSubmitRefusalsStoreNothing(t *testing.T) {
	e := gatewaytest.New(t, func(c *gateway.Config) { c.MaxMessageSize = 64 << 10 })
	oslo := e.Client("oslo")
	body := gatewaytest.RandBytes(1024)
	cases := []struct {
		name string
		mod  func(*api.Routing, *[]byte)
		code errs.Code
	}{
		{"unknown receiver", func(r *api.Routing, _ *[]byte) { r.To = uuid.NewString() }, errs.UnknownReceiver},
		{"type not taken", func(r *api.Routing, _ *[]byte) { r.Type = "no.kurer.barnevern.rapportering.v1" }, errs.TypeNotAccepted},
		{"expired", func(r *api.Routing, _ *[]byte) { r.Expires = e.Clock.Now().Add(-time.Minute) }, errs.Expired},
		{"digest mismatch", func(r *api.Routing, b *[]byte) { *b = gatewaytest.RandBytes(1024) }, errs.DigestMismatch},
		{"oversize", func(r *api.Routing, b *[]byte) {
			*b = gatewaytest.RandBytes(65<<10 + 1)
			*r = e.Routing("oslo", "bergen", *b)
		}, errs.TooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := body
			r := e.Routing("oslo", "bergen", body)
			tc.mod(&r, &b)
			_, err := oslo.Submit(t.Context(), r, bytes.NewReader(b))
			gatewaytest.WantCode(t, err, tc.code)
			_, err = oslo.Status(t.Context(), r.ID)
			gatewaytest.WantCode(t, err, errs.NotFound)
		})
	}
	msgs, err := e.Admin().Messages(t.Context(), noFilter())
	if err != nil || len(msgs) != 0 {
		t.Fatalf("stored after refusals: %d %v", len(msgs), err)
	}
	items, _ := e.Client("bergen").Poll(t.Context(), 0, 10)
	if len(items) != 0 {
		t.Fatalf("mailbox has %d items after refusals", len(items))
	}
}

func TestRedeliveryAfterLeaseTimeout(t *testing.T) {
	e := gatewaytest.New(t, func(c *gateway.Config) { c.LeaseTimeout = time.Minute })
	body := gatewaytest.RandBytes(1000)
	r := e.Routing("oslo", "bergen", body)
	if _, err := e.Client("oslo").Submit(t.Context(), r, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	bergen := e.Client("bergen")
	first := gatewaytest.PollUntil(t, bergen, 1)
	if first[0].Attempt != 1 {
		t.Fatalf("attempt %d", first[0].Attempt)
	}
	// Leased: not offered again before the lease ends.
	if again, _ := bergen.Poll(t.Context(), 0, 10); len(again) != 0 {
		t.Fatalf("offered again while leased: %+v", again)
	}
	e.Clock.Advance(2 * time.Minute)
	second := gatewaytest.PollUntil(t, bergen, 1)
	if second[0].Routing.ID != r.ID || second[0].Attempt != 2 {
		t.Fatalf("redelivery %+v", second[0])
	}
	if err := bergen.Ack(t.Context(), r.ID); err != nil {
		t.Fatal(err)
	}
	st, err := e.Client("oslo").Status(t.Context(), r.ID)
	if err != nil || st.State != api.StateDelivered {
		t.Fatalf("status %+v %v", st, err)
	}
	// The sender learns it through its own mailbox: accepted and delivered notices.
	notices := gatewaytest.PollUntil(t, e.Client("oslo"), 1)
	var events []string
	for _, n := range notices {
		c, err := e.Client("oslo").VerifyNotice(n.Notice)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, c.Event)
	}
	if !strings.Contains(strings.Join(events, ","), api.EventDelivered) {
		// The delivered notice may follow the accepted one in a later poll.
		more := gatewaytest.PollUntil(t, e.Client("oslo"), 1)
		c, _ := e.Client("oslo").VerifyNotice(more[0].Notice)
		events = append(events, c.Event)
	}
	if !strings.Contains(strings.Join(events, ","), api.EventDelivered) {
		t.Fatalf("sender notices %v lack delivered", events)
	}
}

func TestDeadLetterAfterMaxAttempts(t *testing.T) {
	e := gatewaytest.New(t, func(c *gateway.Config) { c.LeaseTimeout = time.Minute; c.MaxAttempts = 2 })
	body := gatewaytest.RandBytes(1000)
	r := e.Routing("oslo", "bergen", body)
	if _, err := e.Client("oslo").Submit(t.Context(), r, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	bergen := e.Client("bergen")
	for range 2 {
		gatewaytest.PollUntil(t, bergen, 1)
		e.Clock.Advance(2 * time.Minute)
	}
	waitState(t, e, "oslo", r.ID, api.StateDeadLettered)
	if items, _ := bergen.Poll(t.Context(), 0, 10); len(items) != 0 {
		t.Fatalf("dead-lettered message offered again: %+v", items)
	}
	waitNotice(t, e, "oslo", r.ID, api.EventFailed)
	msgs, err := e.Admin().Messages(t.Context(), filterState(api.StateDeadLettered))
	if err != nil || len(msgs) != 1 || msgs[0].Routing.ID != r.ID {
		t.Fatalf("operator list of dead letters: %+v %v", msgs, err)
	}
}

func TestExpiryOfMessageBehindOthers(t *testing.T) {
	e := gatewaytest.New(t, nil)
	oslo := e.Client("oslo")
	var ids []string
	for i := range 3 {
		body := gatewaytest.RandBytes(500 + i)
		r := e.Routing("oslo", "bergen", body)
		if i == 1 {
			r.Expires = e.Clock.Now().Add(time.Hour).UTC().Truncate(time.Second)
		}
		if _, err := oslo.Submit(t.Context(), r, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	e.Clock.Advance(2 * time.Hour)
	waitState(t, e, "oslo", ids[1], api.StateExpired)
	waitNotice(t, e, "oslo", ids[1], api.EventExpired)
	got := gatewaytest.PollUntil(t, e.Client("bergen"), 2)
	for _, it := range got {
		if it.Routing.ID == ids[1] {
			t.Fatal("expired message was delivered")
		}
	}
}

func TestRestartLosesNothing(t *testing.T) {
	e := gatewaytest.New(t, func(c *gateway.Config) { c.LeaseTimeout = time.Minute })
	oslo := e.Client("oslo")
	want := map[string][]byte{}
	for range 6 {
		body := gatewaytest.RandBytes(3000)
		r := e.Routing("oslo", "bergen", body)
		if _, err := oslo.Submit(t.Context(), r, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		want[r.ID] = body
	}
	// Two are leased (in flight) when the gateway stops.
	leased := gatewaytest.PollUntil(t, e.Client("bergen"), 1)
	e.Restart()
	e.Clock.Advance(2 * time.Minute)
	bergen := e.Client("bergen")
	got := map[string]bool{}
	deadline := time.Now().Add(15 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		items, err := bergen.Poll(t.Context(), time.Second, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			if it.Kind != api.KindMessage {
				continue
			}
			f, err := openTemp(t)
			if err != nil {
				t.Fatal(err)
			}
			if err := bergen.Download(t.Context(), it.Routing.ID, f); err != nil {
				t.Fatal(err)
			}
			data := readAll(t, f)
			if !bytes.Equal(data, want[it.Routing.ID]) {
				t.Fatalf("message %s corrupted after restart", it.Routing.ID)
			}
			if err := bergen.Ack(t.Context(), it.Routing.ID); err != nil {
				t.Fatal(err)
			}
			got[it.Routing.ID] = true
		}
	}
	if len(got) != len(want) {
		t.Fatalf("after restart %d of %d messages delivered (leased before: %d)", len(got), len(want), len(leased))
	}
}

func waitState(t *testing.T, e *gatewaytest.Env, who, id, state string) {
	t.Helper()
	c := e.Client(who)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status(context.Background(), id)
		if err == nil && st.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s: state %q (%v), want %s", id, st.State, err, state)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

func waitNotice(t *testing.T, e *gatewaytest.Env, who, id, event string) {
	t.Helper()
	c := e.Client(who)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		items, err := c.Poll(context.Background(), time.Second, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			if it.Kind != api.KindNotice {
				continue
			}
			cl, err := c.VerifyNotice(it.Notice)
			if err != nil {
				t.Fatalf("notice does not verify: %v", err)
			}
			if err := c.Ack(context.Background(), it.Routing.ID); err != nil {
				t.Fatal(err)
			}
			if cl.MessageID == id && cl.Event == event {
				return
			}
		}
	}
	t.Fatalf("no %s notice for %s", event, id)
}

func noFilter() client.MessageFilter { return client.MessageFilter{} }

func filterState(s string) client.MessageFilter { return client.MessageFilter{State: s} }

func openTemp(t *testing.T) (*os.File, error) {
	f, err := os.CreateTemp(t.TempDir(), "dl")
	if err == nil {
		t.Cleanup(func() { f.Close() })
	}
	return f, err
}

func readAll(t *testing.T, f *os.File) []byte {
	t.Helper()
	data, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestUnknownTypeRefused: the gateway knows the message types (schemas): a
// submit of an unknown type and an account claiming one are refused, and
// nothing is stored.
func TestUnknownTypeRefused(t *testing.T) {
	e := gatewaytest.New(t, nil)
	body := gatewaytest.RandBytes(512)
	r := e.Routing("oslo", "bergen", body)
	r.Type = "no.kurer.finnes.ikke.v1"
	_, err := e.Client("oslo").Submit(t.Context(), r, bytes.NewReader(body))
	gatewaytest.WantCode(t, err, errs.UnknownType)
	_, err = e.Client("oslo").Status(t.Context(), r.ID)
	gatewaytest.WantCode(t, err, errs.NotFound)
	_, err = e.Admin().CreateAccount(t.Context(), api.AccountRequest{
		Name: "x", OrgNumber: gatewaytest.OrgNumber("oslo"), Types: []string{"no.kurer.finnes.ikke.v1"},
	})
	gatewaytest.WantCode(t, err, errs.UnknownType)
}
