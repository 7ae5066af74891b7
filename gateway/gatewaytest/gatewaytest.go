// Package gatewaytest starts a real kurer gateway in-process for tests:
// TLS on 127.0.0.1:0 from a pkitest PKI, a settable clock, and the accounts
// oslo, bergen and trondheim registered through the admin API. It also
// holds the helpers the gateway's tests share: account clients, routing
// headers, raw requests, client assertions and error-code checks.
//
// It imports gateway, so only external test packages (gateway_test,
// hostile_test, ...) can use it.
package gatewaytest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/pki"
	"github.com/kurer/kurer/internal/pki/pkitest"
)

// MessageType is the message type every test account takes.
const MessageType = "no.kurer.barnevern.sak.overforing.v1"

// accounts are the names of the accounts New registers, in order.
var accounts = []string{"oslo", "bergen", "trondheim"}

var orgNumbers = map[string]string{"oslo": "974760673", "bergen": "964338531", "trondheim": "942110464"}
var municipalities = map[string]string{"oslo": "0301", "bergen": "4601", "trondheim": "5001"}

// OrgNumber is the organisation number New registers for the account name
// ("oslo", "bergen" or "trondheim"), "" for any other name.
func OrgNumber(name string) string { return orgNumbers[name] }

// Clock is a settable test clock: real time plus an offset. The zero value
// is real time.
type Clock struct{ off atomic.Int64 }

// Now is the real time plus the clock's offset.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// Advance moves the clock by d (negative d moves it back).
func (c *Clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// Env is a real gateway on 127.0.0.1:0 with TLS from a test PKI. The
// fields are set by New; tests read them and may change Cfg before a
// Restart.
type Env struct {
	PKI           *pkitest.PKI      // CA, the gateway's TLS pair and one pair per account name
	Dir           string            // temp dir holding the PKI files, the signing key and DataDir
	Cfg           gateway.Config    // the configuration Start passes to gateway.New
	Clock         *Clock            // the gateway's and the clients' clock
	OperatorToken string            // the operator's bearer token for the admin API
	TLS           *tls.Config       // client TLS config trusting the test CA
	IDs           map[string]string // account name -> account id
	Srv           *gateway.Server   // the running server (replaced by Restart)

	tb     testing.TB
	orgSeq int // synthetic organisation numbers handed out by AddAccount
	cancel context.CancelFunc
	done   chan error
}

// New starts a gateway with a fresh PKI (names "gateway", "oslo",
// "bergen", "trondheim" and extraPKINames), data under tb.TempDir, and
// registers the accounts oslo, bergen and trondheim taking MessageType.
// mod, if not nil, changes the configuration before the start. The
// gateway is stopped when the test ends.
func New(tb testing.TB, mod func(*gateway.Config), extraPKINames ...string) *Env {
	tb.Helper()
	names := append([]string{"gateway"}, accounts...)
	p := pkitest.New(tb, append(names, extraPKINames...)...)
	dir := tb.TempDir()
	p.WriteFiles(tb, dir)
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	skPEM, _ := pki.EncodeKeyPEM(sk)
	skFile := filepath.Join(dir, "gateway-signing.key")
	if err := os.WriteFile(skFile, skPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	op := "operator-secret-" + uuid.NewString()
	sum := sha256.Sum256([]byte(op))
	e := &Env{
		tb: tb, PKI: p, Dir: dir, Clock: &Clock{}, OperatorToken: op,
		TLS: &tls.Config{RootCAs: p.Pool, MinVersion: tls.VersionTLS12},
		IDs: map[string]string{},
	}
	e.Cfg = gateway.Config{
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
		mod(&e.Cfg)
	}
	e.Start()
	tb.Cleanup(e.Stop)
	for _, name := range accounts {
		a, err := e.Admin().CreateAccount(context.Background(), api.AccountRequest{
			Name: name + " kommune", OrgNumber: orgNumbers[name], Municipality: municipalities[name],
			Service: "barneverntjenesten", Types: []string{MessageType},
			Certificates: []string{string(pki.EncodeCertPEM(p.Accounts[name].Cert))},
		})
		if err != nil {
			tb.Fatalf("create account %s: %v", name, err)
		}
		e.IDs[name] = a.ID
	}
	return e
}

// Start builds a gateway from Cfg (logging warnings and errors to the
// test log), runs it and waits up to 10s for /readyz to answer 200.
func (e *Env) Start() {
	e.tb.Helper()
	logger := slog.New(slog.NewJSONHandler(testWriter{e.tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := gateway.New(e.Cfg, logger, gateway.WithClock(e.Clock.Now))
	if err != nil {
		e.tb.Fatalf("gateway.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.Srv, e.cancel, e.done = srv, cancel, make(chan error, 1)
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
			e.tb.Fatal("gateway did not become ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Stop cancels the running gateway and waits for Run to return, reporting
// its error. It does nothing when the gateway is not running.
func (e *Env) Stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	if err := <-e.done; err != nil {
		e.tb.Errorf("gateway Run: %v", err)
	}
	e.cancel = nil
}

// Restart stops the gateway and starts a new one on the same data
// directory (and new ports).
func (e *Env) Restart() {
	e.tb.Helper()
	e.Stop()
	e.Start()
}

// URL is the base URL of the agent listener.
func (e *Env) URL() string { return "https://" + e.Srv.Addr().String() }

// AdminURL is the base URL of the operator listener.
func (e *Env) AdminURL() string { return "https://" + e.Srv.AdminAddr().String() }

// testWriter writes the gateway's log lines to the test log.
type testWriter struct{ tb testing.TB }

var twMu sync.Mutex

func (w testWriter) Write(p []byte) (int, error) {
	twMu.Lock()
	defer twMu.Unlock()
	w.tb.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
