package gateway_test

import (
	"crypto"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
)

// token buys an access token for account name with key (RS256).
func token(t *testing.T, e *gatewaytest.Env, name string, key crypto.Signer) string {
	t.Helper()
	tr, err := e.PostToken(gatewaytest.Assertion(t, key, jwa.RS256(), claims(e, name, e.Clock.Now(), time.Minute)))
	if err != nil {
		t.Fatalf("token for %s: %v", name, err)
	}
	return tr.AccessToken
}

// wantAuth checks that tok is taken (200) or refused as unauthenticated
// (401) by an agent poll, a catalog lookup and an account read.
func wantAuth(t *testing.T, e *gatewaytest.Env, tok string, ok bool) {
	t.Helper()
	for _, u := range []string{
		e.URL() + api.PathMailbox + "?wait=0s",
		e.URL() + api.PathAccounts + "?" + url.Values{"municipality": {"0301"}}.Encode(),
		e.URL() + api.PathAccount + e.IDs["oslo"],
	} {
		resp, body := e.Raw(http.MethodGet, u, tok, nil, nil)
		switch {
		case ok && resp.StatusCode != http.StatusOK:
			t.Fatalf("GET %s: status %d %s, want 200", u, resp.StatusCode, body)
		case !ok && (resp.StatusCode != http.StatusUnauthorized || errs.FromResponse(resp.StatusCode, body).Code != errs.Unauthenticated):
			t.Fatalf("GET %s: status %d %s, want 401 %s", u, resp.StatusCode, body, errs.Unauthenticated)
		case !ok && resp.Header.Get("WWW-Authenticate") == "":
			t.Fatalf("GET %s: 401 without WWW-Authenticate", u)
		}
	}
}

// TestRevokeAccountRemoved: the access token of an account removed from
// the catalog is refused at once (not only after token_lifetime), on poll
// and lookup alike; other accounts' tokens are untouched, and the removed
// account cannot buy a new token.
func TestRevokeAccountRemoved(t *testing.T) {
	e := gatewaytest.New(t, nil)
	trondheim := e.PKI.Accounts["trondheim"]
	tok := token(t, e, "trondheim", trondheim.Key)
	other := token(t, e, "oslo", e.PKI.Accounts["oslo"].Key)
	wantAuth(t, e, tok, true)

	if err := e.Admin().DeleteAccount(t.Context(), e.IDs["trondheim"]); err != nil {
		t.Fatal(err)
	}
	wantAuth(t, e, tok, false)
	wantAuth(t, e, other, true)
	_, err := e.PostToken(gatewaytest.Assertion(t, trondheim.Key, jwa.RS256(), claims(e, "trondheim", e.Clock.Now(), time.Minute)))
	gatewaytest.WantCode(t, err, errs.InvalidAssertion)

	// A token minted by a request that read the catalog just before the
	// removal committed is refused too.
	late, err := e.Srv.IssueTokenForTest(e.IDs["trondheim"], trondheim.Cert.Raw, e.Clock.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	wantAuth(t, e, late, false)
}

// TestRevokeCertRemoved: removing a certificate from an account cuts off
// the tokens bought with it at once, while a token bought with the
// account's other, still registered certificate keeps working.
func TestRevokeCertRemoved(t *testing.T) {
	e := gatewaytest.New(t, nil, "oslo-next")
	oslo, next := e.PKI.Accounts["oslo"], e.PKI.Accounts["oslo-next"]
	if _, err := e.Admin().AddCert(t.Context(), e.IDs["oslo"], string(pki.EncodeCertPEM(next.Cert))); err != nil {
		t.Fatal(err)
	}
	old := token(t, e, "oslo", oslo.Key)
	cur := token(t, e, "oslo", next.Key)
	wantAuth(t, e, old, true)
	wantAuth(t, e, cur, true)

	if _, err := e.Admin().RemoveCert(t.Context(), e.IDs["oslo"], pki.Fingerprint(oslo.Cert)); err != nil {
		t.Fatal(err)
	}
	wantAuth(t, e, old, false)
	wantAuth(t, e, cur, true)
	_, err := e.PostToken(gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(e, "oslo", e.Clock.Now(), time.Minute)))
	gatewaytest.WantCode(t, err, errs.InvalidAssertion)
	wantAuth(t, e, token(t, e, "oslo", next.Key), true)

	// A token minted with the removed certificate by a request in flight
	// during the removal is refused too.
	late, err := e.Srv.IssueTokenForTest(e.IDs["oslo"], oslo.Cert.Raw, e.Clock.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	wantAuth(t, e, late, false)

	// The client library recovers from the refusal by buying a new token;
	// one holding only the removed key fails cleanly at the assertion.
	if _, err := e.ClientWith("oslo", nil).Poll(t.Context(), 0, 1); err == nil {
		t.Fatal("a client with the removed key still polls")
	} else if code := errs.CodeOf(err); code != errs.InvalidAssertion {
		t.Fatalf("client with the removed key: %v (code %s), want %s", err, code, errs.InvalidAssertion)
	}
}
