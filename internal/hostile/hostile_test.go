package hostile_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
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
	"github.com/kurer/kurer/internal/pki"
)

// noMessages asserts that the gateway holds no message at all (the
// operator's message list is empty): a refusal stored nothing.
func noMessages(t *testing.T, e *gatewaytest.Env) {
	t.Helper()
	ms, err := e.Admin().Messages(context.Background(), client.MessageFilter{})
	if err != nil {
		t.Fatalf("admin messages: %v", err)
	}
	if len(ms) != 0 {
		t.Fatalf("gateway stored %d message(s) after a refusal", len(ms))
	}
}

// messageCount is the number of messages the gateway holds.
func messageCount(t *testing.T, e *gatewaytest.Env) int {
	t.Helper()
	ms, err := e.Admin().Messages(context.Background(), client.MessageFilter{})
	if err != nil {
		t.Fatalf("admin messages: %v", err)
	}
	return len(ms)
}

// wantBody asserts that an error body is exactly the catalogue entry for
// code: the code, its fixed message and nothing internal.
func wantBody(t *testing.T, resp *http.Response, body []byte, code errs.Code) {
	t.Helper()
	if resp.StatusCode != code.Status() {
		t.Fatalf("status %d, want %d (%s); body %s", resp.StatusCode, code.Status(), code, body)
	}
	var b errs.Body
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("error body is not the catalogue shape: %v: %s", err, body)
	}
	if b.Code != code || b.Message != code.Message() {
		t.Fatalf("body = %+v, want code %s message %q", b, code, code.Message())
	}
	for _, leak := range []string{"/tmp", "goroutine", "panic", ".go:", "bolt", "x509:", "tls:"} {
		if strings.Contains(string(body), leak) {
			t.Fatalf("error body leaks internal text %q: %s", leak, body)
		}
	}
}

func token(t *testing.T, e *gatewaytest.Env, name string) string {
	t.Helper()
	tok, err := e.Client(name).Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestAssertions: every way a client assertion can be wrong is refused at
// /v1/token with the exact code, and no token is issued.
func TestAssertions(t *testing.T) {
	e := gatewaytest.New(t, nil, "annet")
	oslo := e.IDs["oslo"]
	key := e.PKI.Accounts["oslo"].Key
	now := e.Clock.Now()
	base := func() map[string]any {
		return map[string]any{
			"iss": oslo, "sub": oslo, "aud": e.Cfg.Audience, "jti": uuid.NewString(),
			"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		}
	}
	stranger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		key   any
		alg   jwa.SignatureAlgorithm
		claim func(map[string]any)
		want  errs.Code
	}{
		{"expired", key, jwa.RS256(), func(c map[string]any) {
			c["iat"] = now.Add(-10 * time.Minute).Unix()
			c["exp"] = now.Add(-9 * time.Minute).Unix()
		}, errs.InvalidAssertion},
		{"lifetime-over-2min", key, jwa.RS256(), func(c map[string]any) { c["exp"] = now.Add(10 * time.Minute).Unix() }, errs.InvalidAssertion},
		{"wrong-audience", key, jwa.RS256(), func(c map[string]any) { c["aud"] = "https://evil.example" }, errs.InvalidAssertion},
		{"iss-not-sub", key, jwa.RS256(), func(c map[string]any) { c["iss"] = e.IDs["bergen"] }, errs.InvalidAssertion},
		{"sub-other-account", key, jwa.RS256(), func(c map[string]any) { c["iss"], c["sub"] = e.IDs["bergen"], e.IDs["bergen"] }, errs.InvalidAssertion},
		{"key-not-in-catalog", stranger, jwa.ES256(), func(map[string]any) {}, errs.InvalidAssertion},
		{"no-jti", key, jwa.RS256(), func(c map[string]any) { delete(c, "jti") }, errs.InvalidAssertion},
		{"unknown-account", key, jwa.RS256(), func(c map[string]any) { id := uuid.NewString(); c["iss"], c["sub"] = id, id }, errs.InvalidAssertion},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.claim(c)
			_, err := e.PostToken(gatewaytest.Assertion(t, tc.key, tc.alg, c))
			gatewaytest.WantCode(t, err, tc.want)
		})
	}
	t.Run("garbage", func(t *testing.T) {
		_, err := e.PostToken("not.a.jws")
		gatewaytest.WantCode(t, err, errs.InvalidAssertion)
	})
	t.Run("replayed-jti", func(t *testing.T) {
		a := gatewaytest.Assertion(t, key, jwa.RS256(), base())
		if _, err := e.PostToken(a); err != nil {
			t.Fatalf("first use: %v", err)
		}
		_, err := e.PostToken(a)
		gatewaytest.WantCode(t, err, errs.ReplayedJTI)
	})
	noMessages(t, e)
}

// TestAccessControl: tokens give an account its own mailbox and messages,
// nothing else.
func TestAccessControl(t *testing.T) {
	e := gatewaytest.New(t, nil, "annet")
	ctx := context.Background()
	body := gatewaytest.RandBytes(2048)
	r := e.Routing("bergen", "trondheim", body)
	if _, err := e.Client("bergen").Submit(ctx, r, strings.NewReader(string(body))); err != nil {
		t.Fatal(err)
	}
	before := messageCount(t, e)
	osloTok := token(t, e, "oslo")
	msgURL := e.URL() + api.PathMessages + r.ID

	t.Run("no-token", func(t *testing.T) {
		resp, b := e.Raw("GET", e.URL()+api.PathMailbox+"?wait=0s", "", nil, nil)
		wantBody(t, resp, b, errs.Unauthenticated)
	})
	t.Run("bogus-token", func(t *testing.T) {
		resp, b := e.Raw("GET", e.URL()+api.PathMailbox+"?wait=0s", "bogus-"+uuid.NewString(), nil, nil)
		wantBody(t, resp, b, errs.Unauthenticated)
	})
	t.Run("status-of-others-message", func(t *testing.T) {
		resp, b := e.Raw("GET", msgURL+"/status", osloTok, nil, nil)
		wantBody(t, resp, b, errs.NotFound)
		// Same answer as for an id that never existed: no existence leak.
		resp2, b2 := e.Raw("GET", e.URL()+api.PathMessages+uuid.NewString()+"/status", osloTok, nil, nil)
		wantBody(t, resp2, b2, errs.NotFound)
		if string(b) != string(b2) {
			t.Fatalf("existing and unknown ids answer differently: %s vs %s", b, b2)
		}
	})
	t.Run("download-others-message", func(t *testing.T) {
		// The download route is the mailbox's: GET /v1/mailbox/{id}/content.
		resp, b := e.Raw("GET", e.URL()+api.PathMailbox+"/"+r.ID+"/content", osloTok, nil, nil)
		wantBody(t, resp, b, errs.NotFound)
		if strings.Contains(string(b), string(body[:16])) {
			t.Fatal("ciphertext leaked")
		}
	})
	t.Run("ack-others-message", func(t *testing.T) {
		err := e.Client("oslo").Ack(ctx, r.ID)
		gatewaytest.WantCode(t, err, errs.NotFound)
	})
	t.Run("reject-others-message", func(t *testing.T) {
		err := e.Client("oslo").Reject(ctx, r.ID, string(errs.InvalidEnvelope), "")
		gatewaytest.WantCode(t, err, errs.NotFound)
	})
	t.Run("submit-as-other", func(t *testing.T) {
		b2 := gatewaytest.RandBytes(512)
		r2 := e.Routing("bergen", "trondheim", b2) // From bergen, token oslo
		_, err := e.Client("oslo").Submit(ctx, r2, strings.NewReader(string(b2)))
		gatewaytest.WantCode(t, err, errs.Forbidden)
	})
	t.Run("operator-endpoint-with-account-token", func(t *testing.T) {
		resp, b := e.Raw("GET", e.AdminURL()+api.PathAdminAccounts, osloTok, nil, nil)
		wantBody(t, resp, b, errs.OperatorOnly)
	})
	t.Run("operator-endpoint-without-token", func(t *testing.T) {
		resp, b := e.Raw("GET", e.AdminURL()+api.PathAdminMessages, "", nil, nil)
		wantBody(t, resp, b, errs.Unauthenticated)
	})
	t.Run("operator-endpoint-on-agent-listener", func(t *testing.T) {
		resp, b := e.Raw("GET", e.URL()+api.PathAdminAccounts, e.OperatorToken, nil, nil)
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("operator API served on the agent listener: %s", b)
		}
	})
	t.Run("expired-access-token", func(t *testing.T) {
		tok := token(t, e, "trondheim")
		e.Clock.Advance(effectiveTokenLifetime(e) + time.Minute)
		defer e.Clock.Advance(-(effectiveTokenLifetime(e) + time.Minute))
		resp, b := e.Raw("GET", e.URL()+api.PathMailbox+"?wait=0s", tok, nil, nil)
		wantBody(t, resp, b, errs.TokenExpired)
	})
	if got := messageCount(t, e); got != before {
		t.Fatalf("message count changed: %d -> %d", before, got)
	}
	st, err := e.Client("bergen").Status(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "accepted" && st.State != "queued" && st.State != "delivering" {
		t.Logf("state after hostile calls: %s", st.State)
	}
	for _, h := range st.History {
		if h.State == "acked" || h.State == "rejected" || h.State == "delivered" {
			t.Fatalf("another account moved the message: %+v", st.History)
		}
	}
}

func effectiveTokenLifetime(e *gatewaytest.Env) time.Duration {
	if e.Cfg.TokenLifetime > 0 {
		return e.Cfg.TokenLifetime
	}
	return 5 * time.Minute // gateway.Config default
}

// TestSubmitRefusals: bad routing headers and bodies are refused with the
// exact code and store nothing.
func TestSubmitRefusals(t *testing.T) {
	e := gatewaytest.New(t, func(c *gateway.Config) { c.MaxMessageSize = 64 << 10 }, "annet")
	// An account that takes no message type of ours.
	other, err := e.Admin().CreateAccount(context.Background(), api.AccountRequest{
		Name: "Andre etat", OrgNumber: "971526920", Types: []string{"no.kurer.barnevern.rapportering.v1"},
		Certificates: []string{string(pki.EncodeCertPEM(e.PKI.Accounts["annet"].Cert))},
	})
	if err != nil {
		t.Fatalf("create account: %v", err)
	}
	tok := token(t, e, "oslo")
	body := gatewaytest.RandBytes(4096)
	hdrs := func(r api.Routing) map[string]string {
		return map[string]string{
			api.HeaderFrom: r.From, api.HeaderTo: r.To, api.HeaderType: r.Type,
			api.HeaderExpires: r.Expires.Format(time.RFC3339), api.HeaderDigest: r.Digest,
			"Content-Type": "application/octet-stream",
		}
	}
	cases := []struct {
		name string
		mod  func(r *api.Routing, h map[string]string) []byte
		want errs.Code
	}{
		{"unknown-receiver", func(r *api.Routing, h map[string]string) []byte { h[api.HeaderTo] = uuid.NewString(); return body }, errs.UnknownReceiver},
		{"receiver-not-uuid", func(r *api.Routing, h map[string]string) []byte { h[api.HeaderTo] = "../../etc"; return body }, errs.InvalidHeader},
		// The gateway checks the type against the registry (schemas) before
		// asking whether the receiver takes it.
		{"unknown-type", func(r *api.Routing, h map[string]string) []byte {
			h[api.HeaderType] = "no.kurer.finnes.ikke.v1"
			return body
		}, errs.UnknownType},
		{"type-not-accepted", func(r *api.Routing, h map[string]string) []byte { h[api.HeaderTo] = other.ID; return body }, errs.TypeNotAccepted},
		{"expired-at-submit", func(r *api.Routing, h map[string]string) []byte {
			h[api.HeaderExpires] = e.Clock.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
			return body
		}, errs.Expired},
		{"expires-garbage", func(r *api.Routing, h map[string]string) []byte { h[api.HeaderExpires] = "tomorrow"; return body }, errs.InvalidHeader},
		{"digest-mismatch", func(r *api.Routing, h map[string]string) []byte {
			b := append([]byte(nil), body...)
			b[100] ^= 1
			return b
		}, errs.DigestMismatch},
		{"digest-malformed", func(r *api.Routing, h map[string]string) []byte {
			h[api.HeaderDigest] = "sha-256=notbase64"
			return body
		}, errs.InvalidHeader},
		{"digest-wrong-alg", func(r *api.Routing, h map[string]string) []byte { h[api.HeaderDigest] = "md5=:AAAA:"; return body }, errs.InvalidHeader},
		{"missing-from", func(r *api.Routing, h map[string]string) []byte { delete(h, api.HeaderFrom); return body }, errs.InvalidHeader},
		{"oversize", func(r *api.Routing, h map[string]string) []byte { return gatewaytest.RandBytes(65<<10 + 1) }, errs.TooLarge},
		{"id-not-uuid", func(r *api.Routing, h map[string]string) []byte { r.ID = "not-a-uuid"; return body }, errs.InvalidHeader},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Routing("oslo", "bergen", body)
			h := hdrs(r)
			b := tc.mod(&r, h)
			resp, rb := e.Raw("PUT", e.URL()+api.PathMessages+r.ID, tok, b, h)
			wantBody(t, resp, rb, tc.want)
			noMessages(t, e)
		})
	}
	t.Run("id-reuse-other-bytes", func(t *testing.T) {
		r := e.Routing("oslo", "bergen", body)
		if _, err := e.Client("oslo").Submit(context.Background(), r, strings.NewReader(string(body))); err != nil {
			t.Fatal(err)
		}
		b2 := gatewaytest.RandBytes(len(body))
		r2 := e.Routing("oslo", "bergen", b2)
		r2.ID = r.ID
		_, err := e.Client("oslo").Submit(context.Background(), r2, strings.NewReader(string(b2)))
		gatewaytest.WantCode(t, err, errs.Conflict)
		if n := messageCount(t, e); n != 1 {
			t.Fatalf("messages = %d, want 1", n)
		}
	})
}

// TestLengthLies: bodies longer or shorter than Content-Length, and a
// Content-Length over the limit refused before any body byte is read.
func TestLengthLies(t *testing.T) {
	e := gatewaytest.New(t, func(c *gateway.Config) { c.MaxMessageSize = 64 << 10 }, "annet")
	tok := token(t, e, "oslo")
	body := gatewaytest.RandBytes(4096)
	send := func(t *testing.T, r api.Routing, contentLength int64, payload []byte, waitAnswerFirst bool) (int, string) {
		t.Helper()
		conn, err := tls.Dial("tcp", e.Srv.Addr().String(), e.TLS)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "PUT %s%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s: %s\r\n%s: %s\r\n%s: %s\r\n%s: %s\r\n%s: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
			api.PathMessages, r.ID, tok, api.HeaderFrom, r.From, api.HeaderTo, r.To, api.HeaderType, r.Type,
			api.HeaderExpires, r.Expires.Format(time.RFC3339), api.HeaderDigest, r.Digest, contentLength)
		if !waitAnswerFirst {
			_, _ = conn.Write(payload)
			if cw, ok := any(conn).(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var eb errs.Body
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		return resp.StatusCode, string(eb.Code)
	}
	t.Run("content-length-over-limit-refused-before-body", func(t *testing.T) {
		r := e.Routing("oslo", "bergen", body)
		// No body byte is sent: the answer must come from the headers alone.
		st, code := send(t, r, 1<<30, nil, true)
		if st != errs.TooLarge.Status() || code != string(errs.TooLarge) {
			t.Fatalf("got %d %s, want %s before the body", st, code, errs.TooLarge)
		}
		noMessages(t, e)
	})
	t.Run("body-shorter-than-content-length", func(t *testing.T) {
		r := e.Routing("oslo", "bergen", body)
		st, code := send(t, r, int64(len(body)), body[:len(body)/2], false)
		if st == http.StatusOK || st == http.StatusCreated || st == http.StatusAccepted {
			t.Fatalf("short body accepted: %d %s", st, code)
		}
		noMessages(t, e)
	})
	t.Run("body-longer-than-content-length", func(t *testing.T) {
		r := e.Routing("oslo", "bergen", body)
		long := append(append([]byte(nil), body...), gatewaytest.RandBytes(1000)...)
		st, code := send(t, r, int64(len(body)-10), long, false)
		if st != errs.SizeMismatch.Status() && st != errs.DigestMismatch.Status() {
			t.Fatalf("status %d", st)
		}
		if code != string(errs.SizeMismatch) && code != string(errs.DigestMismatch) {
			t.Fatalf("code %q, want size_mismatch or digest_mismatch", code)
		}
		noMessages(t, e)
	})
}

// TestAdminMalformedJSON: the operator API refuses malformed bodies and the
// catalog is unchanged.
func TestAdminMalformedJSON(t *testing.T) {
	e := gatewaytest.New(t, nil, "annet")
	before, err := e.Admin().Accounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, body string
		want       errs.Code
	}{
		{"truncated", `{"name":"x"`, errs.MalformedJSON},
		{"not-json", `name=x`, errs.MalformedJSON},
		{"unknown-field", `{"name":"x","org_number":"971526920","types":[],"admin":true}`, errs.MalformedJSON},
		{"trailing-garbage", `{"name":"x","org_number":"971526920","types":[]} {}`, errs.MalformedJSON},
		{"wrong-type", `{"name":1}`, errs.MalformedJSON},
		{"bad-org-number", `{"name":"x","org_number":"123","types":["` + gatewaytest.MessageType + `"]}`, errs.BadRequest},
		{"huge", `{"name":"` + strings.Repeat("a", 4<<20) + `"}`, errs.TooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := e.Raw("POST", e.AdminURL()+api.PathAdminAccounts, e.OperatorToken, []byte(tc.body),
				map[string]string{"Content-Type": "application/json"})
			wantBody(t, resp, b, tc.want)
		})
	}
	after, err := e.Admin().Accounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("catalog changed: %d -> %d accounts", len(before), len(after))
	}
}

// TestSlowLoris: a client trickling its headers is cut by the server within
// its ReadHeaderTimeout (plus a margin), not held open.
func TestSlowLoris(t *testing.T) {
	const rht = 500 * time.Millisecond
	e := gatewaytest.New(t, func(c *gateway.Config) { c.ReadHeaderTimeout = rht }, "annet")
	conn, err := tls.Dial("tcp", e.Srv.Addr().String(), e.TLS)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := conn.Write([]byte("GET " + api.PathMailbox + " HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	cut := make(chan time.Duration, 1)
	go func() {
		buf := make([]byte, 512)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, err := conn.Read(buf); err != nil {
				cut <- time.Since(start)
				return
			}
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case d := <-cut:
			if d > rht+2*time.Second {
				t.Fatalf("slow-loris connection cut after %v, ReadHeaderTimeout %v", d, rht)
			}
			t.Logf("slow-loris connection cut after %v (ReadHeaderTimeout %v)", d, rht)
			return
		case <-tick.C:
			_, _ = conn.Write([]byte("X-Trickle-" + strconv.Itoa(i) + ": a\r\n"))
			if time.Since(start) > 10*time.Second {
				t.Fatal("server never cut the trickling client")
			}
		}
	}
}
