// Package agent is kurer's on-prem daemon: it runs next to a case system,
// holds the account's private keys, and is the only place where plaintext
// exists.
//
// Outgoing: a case (from an adapter or the local API) is validated against
// its schema, sealed for the receiver's current certificates, fsynced into
// the outbox and recorded before the caller gets its id, then uploaded with
// retries (exponential backoff, full jitter, a cap, persisted across
// restarts; idempotent by message id).
//
// Incoming: the agent long-polls its mailbox, downloads to a spool file
// (resumable), opens the envelope with every check, validates melding.json,
// records the message durably in the inbox and only then acks the gateway.
// Ids are kept, so a redelivery is acked again without a second delivery. The
// adapter gets the message (idempotent by id), and the sender a signed
// application receipt (mottatt, avvist, behandlet).
//
// State: outgoing messages follow the monotonic state machine of
// docs/states.md, fed by verified gateway notices and verified receipts.
package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/internal/audit"
	"github.com/kurer/kurer/internal/pki"
)

// Key is one of the account's private keys with its certificate. The signer
// of an RSA key also decrypts (crypto.Decrypter); an HSM key implements both.
type Key struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
}

// Step names a point in the agent's work at which a test hook may stop it
// (see WithStepHook). Each step follows a durable write.
type Step string

// Steps.
const (
	StepOutboxWritten Step = "outbox_written" // outgoing envelope fsynced and recorded (queued)
	StepUploaded      Step = "uploaded"       // the gateway accepted an upload; record not yet updated
	StepSent          Step = "sent"           // the upload's sent state recorded
	StepDownloaded    Step = "downloaded"     // an incoming envelope is in the spool
	StepInboxWritten  Step = "inbox_written"  // opened payload fsynced and inbox record committed
	StepAcked         Step = "acked"          // the gateway acked; record not yet updated
	StepReceiptQueued Step = "receipt_queued" // an application receipt is in the outbox
	StepDelivered     Step = "delivered"      // the adapter took a message; record not yet updated
)

// ErrHalted is returned by Run when a step hook stopped the agent.
var ErrHalted = errors.New("agent halted by a step hook")

// Option configures New beyond Config (in-process use: tests, the demo).
type Option func(*options)

type options struct {
	keys     []Key
	roots    []*x509.Certificate
	gw       Gateway
	gwTLS    *tls.Config
	token    string
	tokenSet bool
	adapters []adapter.Adapter
	registry *prometheus.Registry
	hook     func(Step, string) error
	now      func() time.Time
	schemas  Schemas
	auditLog *audit.Log
}

// WithKeys sets the account's keys (current first) instead of Config.Keys.
func WithKeys(keys ...Key) Option { return func(o *options) { o.keys = keys } }

// WithTrustRoots sets the trust roots instead of Config.TrustRoots. The dev
// CA is still refused unless Config.Dev.
func WithTrustRoots(roots ...*x509.Certificate) Option {
	return func(o *options) { o.roots = roots }
}

// WithGateway sets the gateway client instead of one built from
// Config.Gateway.
func WithGateway(gw Gateway) Option { return func(o *options) { o.gw = gw } }

// WithGatewayTLS sets the TLS client config for the gateway (roots, e.g. an
// in-process test gateway) instead of Config.Gateway.CAFile.
func WithGatewayTLS(c *tls.Config) Option { return func(o *options) { o.gwTLS = c } }

// WithToken sets the local API token instead of reading it from
// Config.LocalAPI.TokenEnv/TokenFile. An empty token is refused by New.
func WithToken(token string) Option {
	return func(o *options) { o.token, o.tokenSet = token, true }
}

// WithAdapters adds adapters built by the caller (in addition to
// Config.Adapters).
func WithAdapters(a ...adapter.Adapter) Option {
	return func(o *options) { o.adapters = append(o.adapters, a...) }
}

// WithRegistry registers the agent's metrics in r instead of a new registry.
func WithRegistry(r *prometheus.Registry) Option { return func(o *options) { o.registry = r } }

// WithStepHook installs a hook called after each durable step with the step
// and the message id. A non-nil error stops the agent at that point as if the
// process died there: the step's follow-up work is not done, Run returns
// ErrHalted, and a new agent on the same data dir must finish the work
// without losing or duplicating anything. For fault-injection tests only.
func WithStepHook(h func(step Step, id string) error) Option {
	return func(o *options) { o.hook = h }
}

// WithClock replaces time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithSchemas replaces the schema registry (default schemas.Default()).
func WithSchemas(s Schemas) Option { return func(o *options) { o.schemas = s } }

// Agent is one running agent. Create it with New, run it with Run.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	account string
	keys    []Key
	roots   *x509.CertPool
	gw      Gateway
	// closeGW closes the kept connections of a gateway client the agent
	// made itself, when it stops; nil for one passed in (WithGateway).
	closeGW func()
	token   string
	schemas Schemas
	now     func() time.Time
	hook    func(Step, string) error

	store    *store
	audit    *audit.Log
	catalog  *catalog
	metrics  *metrics
	adapters []adapter.Adapter
	receiver adapter.Receiver

	idLocks keyedMutex

	wakeUpload  chan struct{}
	wakeWork    chan struct{}
	wakeDeliver chan struct{}

	apiLn, metricsLn   net.Listener
	apiSrv, metricsSrv *http.Server

	halted   atomic.Bool
	haltOnce sync.Once
	halt     chan struct{}
	ready    atomic.Bool
	runOnce  sync.Once
	closed   chan struct{}
}

// New builds an agent from cfg: it loads keys and roots, opens the store and
// the audit log, and binds the local API and metrics listeners (so that
// LocalAddr is known before Run). Close releases what New opened if Run is
// never called.
func New(cfg Config, logger *slog.Logger, opts ...Option) (*Agent, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	a := &Agent{
		cfg:         cfg,
		log:         logger.With("component", "agent"),
		account:     cfg.Account,
		now:         o.now,
		hook:        o.hook,
		schemas:     o.schemas,
		wakeUpload:  make(chan struct{}, 1),
		wakeWork:    make(chan struct{}, 1),
		wakeDeliver: make(chan struct{}, 1),
		halt:        make(chan struct{}),
		closed:      make(chan struct{}),
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.schemas == nil {
		a.schemas = defaultSchemas()
	}
	var err error
	if a.keys, err = loadKeys(cfg, o.keys); err != nil {
		return nil, err
	}
	if a.roots, err = loadRoots(cfg, o.roots); err != nil {
		return nil, err
	}
	if a.token, err = loadToken(cfg, o); err != nil {
		return nil, err
	}
	a.gw = o.gw
	if a.gw == nil {
		if a.gw, err = newGatewayClient(cfg, a.keys[0], o.gwTLS); err != nil {
			return nil, err
		}
		if c, ok := a.gw.(interface{ CloseIdleConnections() }); ok {
			a.closeGW = c.CloseIdleConnections
		}
	}
	a.catalog = newCatalog(a.gw, cfg.CatalogTTL, cfg.Pins, a.roots, a.now)

	if a.store, err = openStore(cfg.DataDir); err != nil {
		return nil, err
	}
	cleanup := func() { _ = a.store.Close() }
	auditPath := cfg.AuditLog
	if auditPath == "" {
		auditPath = a.store.path("audit.log")
	}
	if a.audit, err = audit.Open(auditPath, audit.Options{Now: a.now}); err != nil {
		cleanup()
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	cleanup = func() { _ = a.audit.Close(); _ = a.store.Close() }

	reg := o.registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if a.metrics, err = newMetrics(reg, a.store); err != nil {
		cleanup()
		return nil, err
	}

	a.adapters = append(a.adapters, o.adapters...)
	for _, ac := range cfg.Adapters {
		name := ac.Name
		if name == "" {
			name = ac.Kind
		}
		ad, err := adapter.New(ac.Kind, name, decodeOptions(ac.Options), a.log)
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("adapter %s: %w", name, err)
		}
		a.adapters = append(a.adapters, ad)
	}
	for _, ad := range a.adapters {
		if r, ok := adapter.IsReceiver(ad); ok {
			if a.receiver != nil {
				cleanup()
				return nil, fmt.Errorf("adapters %s and %s both take incoming messages; configure one", a.receiver.Name(), ad.Name())
			}
			a.receiver = r
		}
	}

	if a.apiLn, err = listenLocal(cfg.LocalAPI.Listen); err != nil {
		cleanup()
		return nil, fmt.Errorf("local api listen: %w", err)
	}
	if cfg.MetricsListen != "" {
		if a.metricsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			_ = a.apiLn.Close()
			cleanup()
			return nil, fmt.Errorf("metrics listen: %w", err)
		}
	}
	a.apiSrv = &http.Server{
		Handler:           a.apiHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	if a.metricsLn != nil {
		a.metricsSrv = &http.Server{
			Handler:           a.metricsHandler(reg),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       time.Minute,
		}
	}
	return a, nil
}

// LocalAddr is the local API's listening address ("127.0.0.1:PORT" or the
// socket path).
func (a *Agent) LocalAddr() string { return a.apiLn.Addr().String() }

// LocalURL is the base URL of the local API for localapi.NewClient.
func (a *Agent) LocalURL() string {
	if a.apiLn.Addr().Network() == "unix" {
		return "unix://" + a.apiLn.Addr().String()
	}
	return "http://" + a.apiLn.Addr().String()
}

// MetricsAddr is the metrics listener's address, or "" without one.
func (a *Agent) MetricsAddr() string {
	if a.metricsLn == nil {
		return ""
	}
	return a.metricsLn.Addr().String()
}

// Account is the agent's account id.
func (a *Agent) Account() string { return a.account }

// Ready reports whether the agent has reached the gateway since it started.
func (a *Agent) Ready() bool { return a.ready.Load() && !a.halted.Load() }

// Run serves the local API and runs the uploader, the receiver, the work
// loop and the adapters until ctx ends (then it shuts down gracefully within
// Config.ShutdownTimeout and returns nil), an adapter fails, or a step hook
// halts it (ErrHalted). Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	err := errors.New("agent: Run called twice")
	a.runOnce.Do(func() { err = a.run(ctx) })
	return err
}

func (a *Agent) run(parent context.Context) error {
	defer close(a.closed)
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	a.log.Info("agent starting", "account", a.account, "local_api", a.LocalAddr(), "adapters", len(a.adapters))
	_, _ = a.audit.Append(ctx, a.account, "agent.start", a.account, nil)

	var wg sync.WaitGroup
	errc := make(chan error, 8+len(a.adapters))
	goRun := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	serve := func(srv *http.Server, ln net.Listener) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve: %w", err)
			}
		}()
	}
	serve(a.apiSrv, a.apiLn)
	if a.metricsSrv != nil {
		serve(a.metricsSrv, a.metricsLn)
	}
	goRun("uploader", a.uploadLoop)
	goRun("receiver", a.receiveLoop)
	goRun("work", a.workLoop)
	goRun("deliver", a.deliverLoop)
	host := &host{a: a}
	for _, ad := range a.adapters {
		ad := ad
		goRun("adapter "+ad.Name(), func(ctx context.Context) error {
			// A panic in Run stops the agent as an error return does,
			// but cleanly (shutdown, logged) rather than killing it.
			err := a.adapterCall(ad.Name(), "run", func() error { return ad.Run(ctx, host) })
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		})
	}

	var runErr error
	select {
	case <-ctx.Done():
		if a.halted.Load() { // halted, then cancelled before this select ran
			runErr = ErrHalted
		}
	case <-a.halt:
		runErr = ErrHalted
	case runErr = <-errc:
		a.log.Error("agent stopping after a failure", "err", runErr)
	}

	// Bounded graceful shutdown: stop taking requests, let in-flight ones
	// finish, stop the loops, then close the store and the log.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(parent), a.cfg.ShutdownTimeout)
	defer scancel()
	if runErr == ErrHalted {
		// A simulated crash: drop connections instead of draining them.
		_ = a.apiSrv.Close()
	} else {
		_ = a.apiSrv.Shutdown(sctx)
	}
	cancel()
	if a.metricsSrv != nil {
		_ = a.metricsSrv.Shutdown(sctx)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		a.log.Warn("shutdown timed out; some goroutines still running")
	}
	if a.closeGW != nil {
		a.closeGW()
	}
	if runErr != ErrHalted {
		_, _ = a.audit.Append(context.WithoutCancel(parent), a.account, "agent.stop", a.account, nil)
	}
	_ = a.audit.Close()
	_ = a.store.Close()
	a.log.Info("agent stopped")
	return runErr
}

// Close releases the listeners, store and audit log of an agent whose Run
// was never called. After Run it only waits for Run to end.
func (a *Agent) Close() error {
	ran := true
	a.runOnce.Do(func() {
		ran = false
		_ = a.apiLn.Close()
		if a.metricsLn != nil {
			_ = a.metricsLn.Close()
		}
		_ = a.audit.Close()
		_ = a.store.Close()
		close(a.closed)
	})
	if ran {
		<-a.closed
	}
	return nil
}

// step runs the step hook; when it halts the agent, step returns ErrHalted
// and the caller abandons its work as a crashed process would.
func (a *Agent) step(s Step, id string) error {
	if a.halted.Load() {
		return ErrHalted
	}
	if a.hook == nil {
		return nil
	}
	if err := a.hook(s, id); err != nil {
		a.halted.Store(true)
		a.haltOnce.Do(func() { close(a.halt) })
		return ErrHalted
	}
	return nil
}

// record appends an audit record; a failing audit log is logged loudly (the
// state change itself is already durable in the store).
func (a *Agent) record(ctx context.Context, action, subject string, attrs map[string]string) {
	if _, err := a.audit.Append(context.WithoutCancel(ctx), a.account, action, subject, attrs); err != nil {
		a.log.Error("audit append failed", "action", action, "err", err)
	}
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func loadKeys(cfg Config, given []Key) ([]Key, error) {
	keys := given
	if len(keys) == 0 {
		for i, kc := range cfg.Keys {
			cert, err := pki.LoadCert(kc.Cert)
			if err != nil {
				return nil, fmt.Errorf("keys[%d]: %w", i, err)
			}
			key, err := pki.LoadKey(kc.Key)
			if err != nil {
				return nil, fmt.Errorf("keys[%d]: %w", i, err)
			}
			keys = append(keys, Key{Cert: cert, Signer: key})
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys configured (keys: [{cert, key}])")
	}
	for i, k := range keys {
		if k.Cert == nil || k.Signer == nil {
			return nil, fmt.Errorf("keys[%d]: certificate and key are both required", i)
		}
		if !pki.KeyMatches(k.Signer, k.Cert) {
			return nil, fmt.Errorf("keys[%d]: the key does not match the certificate %s", i, pki.Fingerprint(k.Cert))
		}
		if pki.IsDev(k.Cert) && !cfg.Dev {
			return nil, fmt.Errorf("keys[%d]: %w", i, pki.ErrDevCA)
		}
	}
	return keys, nil
}

func loadRoots(cfg Config, given []*x509.Certificate) (*x509.CertPool, error) {
	roots := given
	if len(roots) == 0 {
		for _, p := range cfg.TrustRoots {
			certs, err := pki.LoadCerts(p)
			if err != nil {
				return nil, fmt.Errorf("trust_roots: %w", err)
			}
			roots = append(roots, certs...)
		}
	}
	pool, err := pki.TrustPool(roots, cfg.Dev)
	if err != nil {
		return nil, fmt.Errorf("trust_roots: %w", err)
	}
	return pool, nil
}

func loadToken(cfg Config, o options) (string, error) {
	if o.tokenSet {
		if o.token == "" {
			return "", errors.New("local api token is empty")
		}
		return o.token, nil
	}
	var tok string
	if cfg.LocalAPI.TokenEnv != "" {
		tok = os.Getenv(cfg.LocalAPI.TokenEnv)
	}
	if tok == "" && cfg.LocalAPI.TokenFile != "" {
		data, err := os.ReadFile(cfg.LocalAPI.TokenFile)
		if err != nil {
			return "", fmt.Errorf("local_api.token_file: %w", err)
		}
		tok = strings.TrimSpace(string(data))
	}
	if len(tok) < 16 {
		return "", errors.New("local api token missing or shorter than 16 characters (local_api.token_env or token_file)")
	}
	return tok, nil
}

func listenLocal(addr string) (net.Listener, error) {
	path, ok := socketPath(addr)
	if !ok {
		return net.Listen("tcp", addr)
	}
	// Only a stale socket is removed: never another kind of file (a typo
	// in the config must not delete data), never a live socket (another
	// agent is serving it).
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("%s: another process is serving this socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	// Bind under a temporary name, restrict it, then rename it into
	// place: the socket is never reachable with the umask's permissions.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return &unixListener{Listener: ln, path: path}, nil
}

// unixListener removes its socket file when closed.
type unixListener struct {
	net.Listener
	path string
	once sync.Once
}

// Addr is the socket's final path (it was bound under a temporary one).
func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { _ = os.Remove(l.path) })
	return err
}

// socketPath returns the file of a "unix:/path" (or "unix:///path")
// listen address.
func socketPath(addr string) (string, bool) {
	p, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		return "", false
	}
	if strings.HasPrefix(p, "///") {
		p = p[2:]
	}
	return p, true
}

// keyedMutex serialises work on one message id.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(id string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[id]
	if e == nil {
		e = &keyedEntry{}
		k.m[id] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.m, id)
		}
		k.mu.Unlock()
	}
}

// envelopeKeys converts the agent's keys for envelope.Open.
func (a *Agent) envelopeKeys() []envelope.Key {
	out := make([]envelope.Key, 0, len(a.keys))
	for _, k := range a.keys {
		if d, ok := k.Signer.(crypto.Decrypter); ok {
			out = append(out, envelope.Key{Cert: k.Cert, Decrypter: d})
		}
	}
	return out
}
