// Package gateway is kurer's central broker: it authenticates agents, takes
// their envelopes (ciphertext only) durably, offers them to the receiver's
// mailbox, and tells senders what happened with gateway-signed notices in
// their own mailbox. See docs/gateway.md for operations and
// gateway/openapi.yaml for the HTTP API.
//
// The Server owns three listeners: the agents' HTTPS API (Addr), the
// operators' HTTPS admin API (AdminAddr) and plain-HTTP Prometheus metrics
// with health endpoints (MetricsAddr). Storage is pluggable behind
// gateway/store; the default is gateway/store/bolt in Config.DataDir.
package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/gateway/store/bolt"
	"github.com/kurer/kurer/internal/audit"
	"github.com/kurer/kurer/internal/boltdb"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/httprecover"
	"github.com/kurer/kurer/internal/pki"
)

// OpenAPI is the HTTP API description, served at api.PathOpenAPI.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Option adjusts New.
type Option func(*options)

type options struct {
	st    store.Store
	q     store.Queue
	now   func() time.Time
	audit *audit.Log
}

// WithBackend makes the server use st and q instead of opening the bbolt
// backend in Config.DataDir. The server closes st when it stops.
func WithBackend(st store.Store, q store.Queue) Option {
	return func(o *options) { o.st, o.q = st, q }
}

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// Server is a running gateway.
type Server struct {
	cfg    Config
	log    *slog.Logger
	st     store.Store
	q      store.Queue
	audit  *audit.Log
	signer *signer
	trust  *x509.CertPool
	opHash []byte
	tokens *tokenCache
	met    *metrics
	now    func() time.Time

	tlsCfg                 *tls.Config
	ln, adminLn, metricsLn net.Listener

	shipMu sync.Mutex // one audit journal shipper at a time

	// catalogMu serialises the catalog's writes (account create, update,
	// delete, certificate add and remove), so that each read-check-write
	// is one step: the receiver-uniqueness check holds for what is
	// written, and an update cannot bring back a certificate or an
	// account removed meanwhile.
	catalogMu sync.Mutex

	uploadsMu sync.Mutex
	uploads   map[string]bool // ids with an upload in progress
	// uploadsBusy counts stale uploads a sweep found busy (for tests).
	uploadsBusy atomic.Int64

	ready     atomic.Bool
	stopping  chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// New builds a gateway from a validated cfg: it loads keys and trust roots,
// opens storage and the audit log, and binds the listeners (so Addr is
// known before Run).
func New(cfg Config, logger *slog.Logger, opts ...Option) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	o := options{now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, log: logger, now: o.now,
		tokens:   newTokenCache(),
		uploads:  map[string]bool{},
		stopping: make(chan struct{}),
	}
	var cleanup []func() error
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				_ = cleanup[i]()
			}
		}
	}()

	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	s.tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	var roots []*x509.Certificate
	for _, p := range cfg.TrustRoots {
		cs, err := pki.LoadCerts(p)
		if err != nil {
			return nil, fmt.Errorf("trust roots: %w", err)
		}
		roots = append(roots, cs...)
	}
	if s.trust, err = pki.TrustPool(roots, cfg.Dev); err != nil {
		return nil, fmt.Errorf("trust roots: %w", err)
	}
	key, err := pki.LoadKey(cfg.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if err := checkDevPKI(cfg, cert, key); err != nil {
		return nil, err
	}
	if s.signer, err = newSigner(key, cfg.ID); err != nil {
		return nil, err
	}
	s.opHash, _ = hex.DecodeString(cfg.OperatorTokenSHA256)

	if o.st != nil {
		s.st, s.q = o.st, o.q
	} else {
		b, err := bolt.Open(filepath.Join(cfg.DataDir, "store"), bolt.Options{Journal: AuditJournal})
		if err != nil {
			return nil, err
		}
		s.st, s.q = b, b
	}
	cleanup = append(cleanup, s.st.Close)
	if s.audit, err = audit.Open(cfg.AuditLog, audit.Options{}); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	cleanup = append(cleanup, s.audit.Close)
	s.met = newMetrics(s)
	if err := s.resumeJournal(context.Background()); err != nil {
		return nil, fmt.Errorf("resume audit journal: %w", err)
	}

	listen := func(addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		cleanup = append(cleanup, ln.Close)
		return ln, nil
	}
	if s.ln, err = listen(cfg.Listen); err != nil {
		return nil, err
	}
	if cfg.AdminListen != "off" {
		if s.adminLn, err = listen(cfg.AdminListen); err != nil {
			return nil, err
		}
	}
	if cfg.MetricsListen != "off" {
		if s.metricsLn, err = listen(cfg.MetricsListen); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Addr is the agents' API listener address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// AdminAddr is the admin API listener address (nil when served on Addr).
func (s *Server) AdminAddr() net.Addr {
	if s.adminLn == nil {
		return nil
	}
	return s.adminLn.Addr()
}

// MetricsAddr is the metrics listener address (nil when off).
func (s *Server) MetricsAddr() net.Addr {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Addr()
}

// writerStats is the optional ability of a store with a single writer
// (the embedded bbolt store) to report its saturation.
type writerStats interface {
	WriterStats() boltdb.Stats
}

// StoreStats returns the store writer's counters, if the store has one.
func (s *Server) StoreStats() (boltdb.Stats, bool) {
	if w, ok := s.st.(writerStats); ok {
		return w.WriterStats(), true
	}
	return boltdb.Stats{}, false
}

// JWKS returns the gateway's public JWKS document.
func (s *Server) JWKS() []byte { return s.signer.jwks }

func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		TLSConfig:         s.tlsCfg.Clone(),
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		// ReadTimeout and WriteTimeout stay 0: bodies of up to
		// MaxMessageSize stream for long. Every handler sets per-request
		// deadlines through http.ResponseController and extends them only
		// while bytes move (BodyIdleTimeout).
	}
}

// Run serves until ctx ends, then shuts down within ShutdownTimeout: it
// stops accepting, wakes long polls, waits for requests in flight, stops the
// sweeper and closes storage and the audit log.
func (s *Server) Run(ctx context.Context) error {
	s.warnAmbiguousCatalog(ctx)
	api := s.newHTTPServer(s.apiHandler())
	fresh := newFreshConns()
	api.ConnState = func(c net.Conn, st http.ConnState) {
		s.met.connState(c, st)
		fresh.track(c, st)
	}
	servers := []*http.Server{api}
	errc := make(chan error, 3)
	serve := func(srv *http.Server, ln net.Listener, useTLS bool) {
		var err error
		if useTLS {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}
	go serve(api, s.ln, true)
	if s.adminLn != nil {
		admin := s.newHTTPServer(s.adminHandler())
		servers = append(servers, admin)
		go serve(admin, s.adminLn, true)
	}
	if s.metricsLn != nil {
		m := s.newHTTPServer(s.metricsHandler())
		servers = append(servers, m)
		go serve(m, s.metricsLn, false)
	}
	sweepCtx, stopSweep := context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.sweeper(sweepCtx)
	}()
	go func() {
		defer s.wg.Done()
		s.shipper(sweepCtx)
	}()
	s.ready.Store(true)
	s.log.Info("gateway started", "addr", s.Addr().String(), "admin", fmt.Sprint(s.AdminAddr()), "metrics", fmt.Sprint(s.MetricsAddr()))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		s.log.Error("listener failed", "err", runErr)
	}
	s.ready.Store(false)
	close(s.stopping)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	for _, srv := range servers {
		shut := make(chan error, 1)
		go func() { shut <- srv.Shutdown(sctx) }()
		var err error
		if srv == api {
			err = fresh.closeUntil(shut)
		} else {
			err = <-shut
		}
		if err != nil {
			_ = srv.Close()
		}
	}
	stopSweep()
	s.wg.Wait()
	if err := s.Close(); err != nil && runErr == nil {
		runErr = err
	}
	s.log.Info("gateway stopped")
	return runErr
}

// Close releases storage, the audit log and the listeners. Run calls it;
// call it directly only for a server that was never run. Idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		for _, ln := range []net.Listener{s.ln, s.adminLn, s.metricsLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		// What the last changes put into the journal goes to the log
		// now; anything left (a failure) is shipped at the next start.
		shipErr := s.shipAudit(context.Background())
		if shipErr != nil {
			shipErr = fmt.Errorf("ship audit journal: %w", shipErr)
		}
		s.closeErr = errors.Join(shipErr, s.st.Close(), s.audit.Close())
	})
	return s.closeErr
}

// operatorOK reports whether token is the operator credential.
func (s *Server) operatorOK(token string) bool {
	sum := sha256.Sum256([]byte(token))
	return len(s.opHash) == 32 && subtleEqual(sum[:], s.opHash)
}

// fail writes err as a JSON error and logs its internal cause.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := errs.CodeOf(err)
	if code.Status() >= 500 {
		s.log.Error("request failed", "route", r.Pattern, "code", string(code), "err", err)
	} else {
		s.log.Debug("request refused", "route", r.Pattern, "code", string(code), "err", err)
	}
	errs.Write(w, err)
}

// recoverPanics keeps a panicking handler from taking its request down
// unseen (internal/httprecover): the client gets the catalogue's 500
// internal_error, which instrument, outside, counts, and the panic is
// logged with its value (the gateway holds no plaintext).
func (s *Server) recoverPanics(h http.Handler) http.Handler {
	return httprecover.Handler(s.log, h, httprecover.Options{LogValue: true})
}

// guard runs f, part of request r's handling on a goroutine of its own
// (where recoverPanics cannot see): a panic is logged as recoverPanics
// logs it and becomes an internal_error for that part alone, instead of
// taking the whole gateway down.
func (s *Server) guard(r *http.Request, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			httprecover.Log(s.log, r, v, false, httprecover.Options{LogValue: true})
			err = errs.New(errs.Internal, fmt.Errorf("panic: %v", v))
		}
	}()
	return f()
}

// freshConns tracks the API connections that have not yet carried a
// request (http.StateNew). An HTTP/1.1 client may hold such a connection
// for long: it dials one for a request that then goes out on another it
// freed first, and keeps the new one. http.Server.Shutdown counts a new
// connection as busy for its first 5 seconds, so each would hold a
// restart up that long; the gateway closes them when it shuts down.
type freshConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newFreshConns() *freshConns { return &freshConns{conns: map[net.Conn]struct{}{}} }

// track is an http.Server.ConnState hook.
func (f *freshConns) track(c net.Conn, st http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st == http.StateNew {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
}

// closeUntil closes the fresh connections every 20 ms (Shutdown closes the
// listener first; a connection accepted before that may still arrive)
// until shut delivers Shutdown's result, and returns it. A request whose
// headers are still arriving on such a connection is cut, as one a moment
// later would find the listener closed; clients retry either.
func (f *freshConns) closeUntil(shut <-chan error) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var batch []net.Conn
	for {
		f.mu.Lock()
		for c := range f.conns {
			batch = append(batch, c)
			delete(f.conns, c)
		}
		f.mu.Unlock()
		for _, c := range batch {
			_ = c.Close()
		}
		batch = batch[:0]
		select {
		case err := <-shut:
			return err
		case <-t.C:
		}
	}
}
