package hostile_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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
	"github.com/kurer/kurer/internal/pki/pkitest"
)

const msgType = "no.kurer.barnevern.sak.overforing.v1"

// clock is a settable test clock: real time plus an offset.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// env is a real gateway on 127.0.0.1:0 with TLS from a test PKI.
type env struct {
	t       testing.TB
	pki     *pkitest.PKI
	dir     string
	cfg     gateway.Config
	clk     *clock
	opToken string
	tls     *tls.Config
	ids     map[string]string // account name -> id

	srv    *gateway.Server
	cancel context.CancelFunc
	done   chan error
}

var orgNumbers = map[string]string{"oslo": "974760673", "bergen": "964338531", "trondheim": "942110464"}
var municipalities = map[string]string{"oslo": "0301", "bergen": "4601", "trondheim": "5001"}

func newEnv(t testing.TB, mod func(*gateway.Config)) *env {
	t.Helper()
	p := pkitest.New(t, "gateway", "oslo", "bergen", "trondheim", "annet")
	dir := t.TempDir()
	p.WriteFiles(t, dir)
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	skPEM, _ := pki.EncodeKeyPEM(sk)
	skFile := filepath.Join(dir, "gateway-signing.key")
	if err := os.WriteFile(skFile, skPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	op := "operator-secret-" + uuid.NewString()
	sum := sha256.Sum256([]byte(op))
	e := &env{
		t: t, pki: p, dir: dir, clk: &clock{}, opToken: op,
		tls: &tls.Config{RootCAs: p.Pool, MinVersion: tls.VersionTLS12},
		ids: map[string]string{},
	}
	e.cfg = gateway.Config{
		Audience:            "https://gateway.test",
		Listen:              "127.0.0.1:0",
		AdminListen:         "127.0.0.1:0",
		MetricsListen:       "127.0.0.1:0",
		TLSCert:             p.Accounts["gateway"].CertFile,
		TLSKey:              p.Accounts["gateway"].KeyFile,
		TrustRoots:          []string{p.CAFile},
		SigningKey:          skFile,
		OperatorTokenSHA256: hex.EncodeToString(sum[:]),
		DataDir:             filepath.Join(dir, "data"),
		SweepInterval:       20 * time.Millisecond,
		ShutdownTimeout:     5 * time.Second,
		Dev:                 true,
	}
	if mod != nil {
		mod(&e.cfg)
	}
	e.start()
	t.Cleanup(e.stop)
	for _, name := range []string{"oslo", "bergen", "trondheim"} {
		a, err := e.admin().CreateAccount(context.Background(), api.AccountRequest{
			Name: name + " kommune", OrgNumber: orgNumbers[name], Municipality: municipalities[name],
			Service: "barneverntjenesten", Types: []string{msgType},
			Certificates: []string{string(pki.EncodeCertPEM(p.Accounts[name].Cert))},
		})
		if err != nil {
			t.Fatalf("create account %s: %v", name, err)
		}
		e.ids[name] = a.ID
	}
	return e
}

func (e *env) start() {
	e.t.Helper()
	logger := slog.New(slog.NewJSONHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := gateway.New(e.cfg, logger, gateway.WithClock(e.clk.Now))
	if err != nil {
		e.t.Fatalf("gateway.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.srv, e.cancel, e.done = srv, cancel, make(chan error, 1)
	go func() { e.done <- srv.Run(ctx) }()
	// Wait for readiness by polling /readyz.
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Get("http://" + srv.MetricsAddr().String() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatal("gateway did not become ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	if err := <-e.done; err != nil {
		e.t.Errorf("gateway Run: %v", err)
	}
	e.cancel = nil
}

func (e *env) restart() {
	e.t.Helper()
	e.stop()
	e.start()
}

func (e *env) url() string      { return "https://" + e.srv.Addr().String() }
func (e *env) adminURL() string { return "https://" + e.srv.AdminAddr().String() }

func (e *env) admin() *client.Admin {
	e.t.Helper()
	a, err := client.NewAdmin(client.AdminConfig{BaseURL: e.adminURL(), Token: e.opToken, TLS: e.tls})
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func (e *env) client(name string) *client.Client {
	e.t.Helper()
	acct := e.pki.Accounts[name]
	c, err := client.New(client.Config{
		BaseURL: e.url(), AccountID: e.ids[name], Signer: acct.Key, Cert: acct.Cert,
		TLS: e.tls, Audience: e.cfg.Audience, Now: e.clk.Now, MaxRetries: 3,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// routing builds a routing header from -> to for body.
func (e *env) routing(from, to string, body []byte) api.Routing {
	sum := sha256.Sum256(body)
	return api.Routing{
		ID: uuid.NewString(), From: e.ids[from], To: e.ids[to], Type: msgType,
		Expires: e.clk.Now().Add(24 * time.Hour).UTC().Truncate(time.Second),
		Size:    int64(len(body)), Digest: "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":",
	}
}

// assertion signs custom claims with key (tests of refusals).
func assertion(t testing.TB, key any, alg jwa.SignatureAlgorithm, claims map[string]any) string {
	t.Helper()
	payload, _ := json.Marshal(claims)
	out, err := jws.Sign(payload, jws.WithKey(alg, key))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// postToken posts a client assertion and returns the answer.
func (e *env) postToken(a string) (api.TokenResponse, error) {
	body := "grant_type=client_credentials&client_assertion_type=" + api.AssertionType + "&client_assertion=" + a
	hc := client.NewHTTPClient(e.tls)
	resp, err := hc.Post(e.url()+api.PathToken, "application/x-www-form-urlencoded", bytes.NewReader([]byte(body)))
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

// rawGet does an HTTP request with a bearer token.
func (e *env) raw(method, url, token string, body []byte, hdr map[string]string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.NewHTTPClient(e.tls).Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp, buf.Bytes()
}

func wantCode(t testing.TB, err error, code errs.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := errs.CodeOf(err); got != code {
		t.Fatalf("error code = %s (%v), want %s", got, err, code)
	}
}

// pollUntil polls c's mailbox until n items arrived or the deadline.
func pollUntil(t testing.TB, c *client.Client, n int) []api.MailboxItem {
	t.Helper()
	var got []api.MailboxItem
	deadline := time.Now().Add(15 * time.Second)
	for len(got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("mailbox: got %d items, want %d", len(got), n)
		}
		items, err := c.Poll(context.Background(), 2*time.Second, 100)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, items...)
	}
	return got
}

type testWriter struct{ t testing.TB }

var twMu sync.Mutex

func (w testWriter) Write(p []byte) (int, error) {
	twMu.Lock()
	defer twMu.Unlock()
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

var _ = errors.New
var _ = fmt.Sprint
