package gatewaytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
)

// Admin is an operator client for the admin listener, with the operator
// token.
func (e *Env) Admin() *client.Admin {
	e.tb.Helper()
	a, err := client.NewAdmin(client.AdminConfig{BaseURL: e.AdminURL(), Token: e.OperatorToken, TLS: e.TLS})
	if err != nil {
		e.tb.Fatal(err)
	}
	return a
}

// Client is a client of the account name (its PKI key and certificate),
// on the gateway's clock, with up to 3 retries.
func (e *Env) Client(name string) *client.Client {
	e.tb.Helper()
	return e.ClientWith(name, nil)
}

// ClientWith is Client with its config changed by mod (nil: none).
func (e *Env) ClientWith(name string, mod func(*client.Config)) *client.Client {
	e.tb.Helper()
	acct := e.PKI.Accounts[name]
	cfg := client.Config{
		BaseURL: e.URL(), AccountID: e.IDs[name], Signer: acct.Key, Cert: acct.Cert,
		TLS: e.TLS, Audience: e.Cfg.Audience, Now: e.Clock.Now, MaxRetries: 3,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		e.tb.Fatal(err)
	}
	return c
}

// Routing builds a routing header from -> to for body: a new id,
// MessageType, expiry 24h after the clock's now, body's size and digest.
func (e *Env) Routing(from, to string, body []byte) api.Routing {
	sum := sha256.Sum256(body)
	return api.Routing{
		ID: uuid.NewString(), From: e.IDs[from], To: e.IDs[to], Type: MessageType,
		Expires: e.Clock.Now().Add(24 * time.Hour).UTC().Truncate(time.Second),
		Size:    int64(len(body)), Digest: "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":",
	}
}

// Assertion signs custom claims with key (tests of refusals).
func Assertion(tb testing.TB, key any, alg jwa.SignatureAlgorithm, claims map[string]any) string {
	tb.Helper()
	payload, _ := json.Marshal(claims)
	out, err := jws.Sign(payload, jws.WithKey(alg, key))
	if err != nil {
		tb.Fatal(err)
	}
	return string(out)
}

// PostToken posts the client assertion a to the token endpoint and
// returns the answer; a refusal is returned as the catalogue error.
func (e *Env) PostToken(a string) (api.TokenResponse, error) {
	body := "grant_type=client_credentials&client_assertion_type=" + api.AssertionType + "&client_assertion=" + a
	hc := client.NewHTTPClient(e.TLS)
	resp, err := hc.Post(e.URL()+api.PathToken, "application/x-www-form-urlencoded", bytes.NewReader([]byte(body)))
	if err != nil {
		return api.TokenResponse{}, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return api.TokenResponse{}, errs.FromResponse(resp.StatusCode, buf.Bytes())
	}
	var tr api.TokenResponse
	return tr, json.Unmarshal(buf.Bytes(), &tr)
}

// Raw does an HTTP request with a bearer token (none if token is "") and
// the headers hdr, and returns the response with its whole body read.
func (e *Env) Raw(method, url, token string, body []byte, hdr map[string]string) (*http.Response, []byte) {
	e.tb.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		e.tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.NewHTTPClient(e.TLS).Do(req)
	if err != nil {
		e.tb.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp, buf.Bytes()
}

// WantCode fails the test unless err carries the catalogue code.
func WantCode(tb testing.TB, err error, code errs.Code) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error, want %s", code)
	}
	if got := errs.CodeOf(err); got != code {
		tb.Fatalf("error code = %s (%v), want %s", got, err, code)
	}
}

// PollUntil polls c's mailbox until n items arrived or 15s passed.
func PollUntil(tb testing.TB, c *client.Client, n int) []api.MailboxItem {
	tb.Helper()
	var got []api.MailboxItem
	deadline := time.Now().Add(15 * time.Second)
	for len(got) < n {
		if time.Now().After(deadline) {
			tb.Fatalf("mailbox: got %d items, want %d", len(got), n)
		}
		items, err := c.Poll(context.Background(), 2*time.Second, 100)
		if err != nil {
			tb.Fatal(err)
		}
		got = append(got, items...)
	}
	return got
}

// RandBytes is n random bytes.
func RandBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// SetTypes makes account name take exactly types (the catalog's message
// types), through the admin API.
func (e *Env) SetTypes(name string, types ...string) {
	e.tb.Helper()
	_, err := e.Admin().UpdateAccount(context.Background(), e.IDs[name], api.AccountRequest{
		Name: name + " kommune", OrgNumber: orgNumbers[name], Municipality: municipalities[name],
		Service: "barneverntjenesten", Types: types,
	})
	if err != nil {
		e.tb.Fatalf("set types of %s: %v", name, err)
	}
}

// AddAccount issues name a P-256 key and certificate from the test CA and
// registers it as an account taking MessageType, with a synthetic
// organisation number of its own and no municipality. It returns the
// account id (also in IDs); Client(name) then works as for the others.
func (e *Env) AddAccount(name string) string {
	e.tb.Helper()
	acct := e.PKI.Add(e.tb, name, nil, time.Time{}, time.Time{})
	a, err := e.Admin().CreateAccount(context.Background(), api.AccountRequest{
		Name: name, OrgNumber: e.nextOrgNumber(), Service: "barneverntjenesten", Types: []string{MessageType},
		Certificates: []string{string(pki.EncodeCertPEM(acct.Cert))},
	})
	if err != nil {
		e.tb.Fatalf("create account %s: %v", name, err)
	}
	e.IDs[name] = a.ID
	return a.ID
}

// nextOrgNumber is a synthetic organisation number (99xxxxxxx with a valid
// mod-11 check digit) not handed out before by this Env.
func (e *Env) nextOrgNumber() string {
	for {
		e.orgSeq++
		base := strconv.Itoa(99_000_000 + e.orgSeq)
		for d := range 10 {
			if s := base + strconv.Itoa(d); gateway.ValidOrgNumber(s) {
				return s
			}
		}
	}
}
