package gateway

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// Config is the gateway's one validated configuration, read from YAML
// (examples/gateway.yaml) and flags. Every field's unit and default is in
// docs/gateway.md; Validate fills in the defaults.
type Config struct {
	// ID names the gateway in notices (NoticeClaims.Issuer). Default
	// "kurer-gateway".
	ID string `yaml:"id"`
	// Audience is the value client assertions must carry in aud, normally
	// the gateway's public base URL. Required.
	Audience string `yaml:"audience"`

	// Listen is the agents' HTTPS address. Default ":8443".
	Listen string `yaml:"listen"`
	// AdminListen is the operators' HTTPS address (admin API). Default
	// "127.0.0.1:8444". "off" serves the admin API on Listen instead.
	AdminListen string `yaml:"admin_listen"`
	// MetricsListen is the plain-HTTP Prometheus, /healthz and /readyz
	// address. Default "127.0.0.1:9464". "off" disables it.
	MetricsListen string `yaml:"metrics_listen"`

	// TLSCert and TLSKey are the server certificate chain and key (PEM).
	// Required: the gateway only speaks TLS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// TrustRoots are PEM files of the CAs account certificates must chain
	// to. The kurer dev CA is refused unless Dev is set.
	TrustRoots []string `yaml:"trust_roots"`
	// SigningKey is the PEM key (ECDSA P-256 -> ES256, RSA -> RS256) that
	// signs receipts and notices; its public half is at the JWKS path.
	SigningKey string `yaml:"signing_key"`
	// OperatorTokenSHA256 is the hex SHA-256 of the operator's Bearer
	// token. The token itself is never in the configuration. Required.
	OperatorTokenSHA256 string `yaml:"operator_token_sha256"`

	// DataDir holds the database, spool files and, by default, the audit
	// log. Default "/var/lib/kurer/gateway".
	DataDir string `yaml:"data_dir"`
	// AuditLog is the audit log path. Default DataDir/audit.log.
	AuditLog string `yaml:"audit_log"`

	// MaxMessageSize is the largest envelope accepted, in bytes ("5GiB",
	// "64MiB" and plain numbers are accepted in YAML). Default 5 GiB.
	MaxMessageSize ByteSize `yaml:"max_message_size"`
	// InlineMax: envelopes up to this size (bytes) are kept inside the
	// database instead of a spool file. Default 64 KiB; at most 1 MiB.
	InlineMax ByteSize `yaml:"inline_max"`

	// TokenLifetime of access tokens. Default 5m.
	TokenLifetime time.Duration `yaml:"token_lifetime"`
	// MaxAssertionLifetime: longest exp - iat (and exp - now) of a client
	// assertion. Default 2m; at most 2m.
	MaxAssertionLifetime time.Duration `yaml:"max_assertion_lifetime"`
	// ClockSkew tolerated on iat/exp. Default 30s.
	ClockSkew time.Duration `yaml:"clock_skew"`

	// LeaseTimeout: how long a delivered item stays leased before it is
	// offered again. Default 5m.
	LeaseTimeout time.Duration `yaml:"lease_timeout"`
	// MaxAttempts: leases of a message before it is dead-lettered.
	// Default 10.
	MaxAttempts int `yaml:"max_attempts"`
	// MaxPollWait caps ?wait= of a long poll. Default 60s.
	MaxPollWait time.Duration `yaml:"max_poll_wait"`
	// MaxPollItems caps ?max= of a long poll. Default 100.
	MaxPollItems int `yaml:"max_poll_items"`
	// SweepInterval: how often leases, expiry and retention are swept.
	// Default 1s.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// RecordRetention: how long the record (routing and history) of a
	// message in a terminal state is kept for status queries. Default
	// 720h (30 days). 0 in YAML means the default; negative keeps forever.
	RecordRetention time.Duration `yaml:"record_retention"`
	// UploadTTL: a partial upload (a large envelope whose connection was
	// cut) is kept this long after it started for the sender to resume,
	// or until its routing expires if that is sooner; then its bytes are
	// deleted and a later PUT starts from zero. Default 24h.
	UploadTTL time.Duration `yaml:"upload_ttl"`

	// BodyIdleTimeout: an upload or download that moves no byte for this
	// long is cut (slow-loris). Default 60s.
	BodyIdleTimeout time.Duration `yaml:"body_idle_timeout"`
	// ReadHeaderTimeout for every listener. Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout of keep-alive connections. Default 120s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ShutdownTimeout bounds graceful shutdown. Default 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// GCPercent is the Go garbage collector target (as GOGC) that `kurer
	// gateway serve` sets unless the GOGC environment variable is set. The
	// gateway's live heap is small (about 7 MiB under load in the
	// benchmark) and every request allocates, so a higher target trades
	// some memory for much less collector CPU: at 1000 the heap peaks near
	// 90 MiB and a collection runs about every 0.3 s under load instead of
	// every 0.13 s at 400. MemoryLimit keeps a larger live heap from
	// growing tenfold. Default DefaultGCPercent (1000); -1 turns the
	// collector off (then only MemoryLimit triggers it).
	GCPercent int `yaml:"gc_percent"`

	// MemoryLimit is the soft limit of the Go runtime's memory (as
	// GOMEMLIMIT) that `kurer gateway serve` sets unless the GOMEMLIMIT
	// environment variable is set: near it the collector runs as often as
	// it must, whatever GCPercent says. Default DefaultMemoryLimit (1GiB);
	// at least 64MiB.
	MemoryLimit ByteSize `yaml:"memory_limit"`

	// MaxProcs is the number of goroutines that run Go code at once
	// (GOMAXPROCS) that `kurer gateway serve` sets unless the GOMAXPROCS
	// environment variable is set. The store writer holds a processor
	// while it fsyncs (milliseconds on a virtual disk),
	// so on few cores more processors than cores keep requests moving
	// meanwhile (+30-40 % messages/s in the benchmark on 2 cores).
	// Default DefaultMaxProcs(): twice the CPUs Go sees, at least 4.
	MaxProcs int `yaml:"max_procs"`

	// Dev allows the kurer dev CA as trust root, and dev certificates and
	// the committed certs-dev/ keys as TLSCert and SigningKey (the --dev
	// flag only).
	Dev bool `yaml:"-"`
}

// DefaultGCPercent is Config.GCPercent's default.
const DefaultGCPercent = 1000

// DefaultMemoryLimit is Config.MemoryLimit's default.
const DefaultMemoryLimit = 1 << 30

// DefaultMaxProcs is Config.MaxProcs's default: twice the CPUs the Go
// runtime sees (its own GOMAXPROCS default, which respects container
// limits), at least 4.
func DefaultMaxProcs() int { return max(4, 2*runtime.NumCPU()) }

// SetRuntime sets the Go runtime's GC target, GOMAXPROCS and memory
// limit to c's GCPercent, MaxProcs and MemoryLimit (their defaults where
// zero), each unless the environment sets it (GOGC, GOMAXPROCS,
// GOMEMLIMIT: the operator's setting wins), as `kurer gateway serve` does.
// It returns a function that puts back what it changed.
func SetRuntime(c Config) (restore func()) {
	var undo []func()
	if os.Getenv("GOGC") == "" {
		gc := c.GCPercent
		if gc == 0 {
			gc = DefaultGCPercent
		}
		old := debug.SetGCPercent(gc)
		undo = append(undo, func() { debug.SetGCPercent(old) })
	}
	if os.Getenv("GOMAXPROCS") == "" {
		n := c.MaxProcs
		if n == 0 {
			n = DefaultMaxProcs()
		}
		old := runtime.GOMAXPROCS(n)
		undo = append(undo, func() { runtime.GOMAXPROCS(old) })
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		lim := int64(c.MemoryLimit)
		if lim == 0 {
			lim = DefaultMemoryLimit
		}
		old := debug.SetMemoryLimit(lim)
		undo = append(undo, func() { debug.SetMemoryLimit(old) })
	}
	return func() {
		for _, u := range undo {
			u()
		}
	}
}

// ByteSize is a size in bytes; YAML accepts "5GiB", "64MiB", "512KiB" or a
// number.
type ByteSize int64

// UnmarshalText parses a size.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// ParseByteSize parses "5GiB", "64MiB", "512KiB", "100B" or "123".
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q (want e.g. 5GiB, 64MiB, 1024)", s)
	}
	return ByteSize(n * mult), nil
}

// Validate checks c and fills in defaults.
func (c *Config) Validate() error {
	var errs []error
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.ID == "" {
		c.ID = "kurer-gateway"
	}
	if c.Listen == "" {
		c.Listen = ":8443"
	}
	if c.AdminListen == "" {
		c.AdminListen = "127.0.0.1:8444"
	}
	if c.MetricsListen == "" {
		c.MetricsListen = "127.0.0.1:9464"
	}
	if c.DataDir == "" {
		c.DataDir = "/var/lib/kurer/gateway"
	}
	if c.AuditLog == "" {
		c.AuditLog = filepath.Join(c.DataDir, "audit.log")
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 5 << 30
	}
	if c.InlineMax == 0 {
		c.InlineMax = 64 << 10
	}
	def(&c.TokenLifetime, 5*time.Minute)
	def(&c.MaxAssertionLifetime, 2*time.Minute)
	def(&c.ClockSkew, 30*time.Second)
	def(&c.LeaseTimeout, 5*time.Minute)
	def(&c.MaxPollWait, 60*time.Second)
	def(&c.SweepInterval, time.Second)
	def(&c.RecordRetention, 720*time.Hour)
	def(&c.UploadTTL, 24*time.Hour)
	def(&c.BodyIdleTimeout, 60*time.Second)
	def(&c.ReadHeaderTimeout, 10*time.Second)
	def(&c.IdleTimeout, 120*time.Second)
	def(&c.ShutdownTimeout, 30*time.Second)
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 10
	}
	if c.MaxPollItems == 0 {
		c.MaxPollItems = 100
	}
	if c.GCPercent == 0 {
		c.GCPercent = DefaultGCPercent
	}
	if c.MaxProcs == 0 {
		c.MaxProcs = DefaultMaxProcs()
	}
	if c.MemoryLimit == 0 {
		c.MemoryLimit = DefaultMemoryLimit
	}

	if c.Audience == "" {
		errs = append(errs, errors.New("audience is required (the gateway's public URL)"))
	} else if u, err := url.Parse(c.Audience); err != nil || u.Scheme == "" || u.Host == "" {
		errs = append(errs, fmt.Errorf("audience %q is not an absolute URL", c.Audience))
	}
	if c.TLSCert == "" || c.TLSKey == "" {
		errs = append(errs, errors.New("tls_cert and tls_key are required"))
	}
	if len(c.TrustRoots) == 0 {
		errs = append(errs, errors.New("trust_roots is required"))
	}
	if c.SigningKey == "" {
		errs = append(errs, errors.New("signing_key is required"))
	}
	if b, err := hex.DecodeString(c.OperatorTokenSHA256); err != nil || len(b) != 32 {
		errs = append(errs, errors.New("operator_token_sha256 must be 64 hex digits (sha256sum of the token)"))
	}
	if c.MaxMessageSize < 0 {
		errs = append(errs, errors.New("max_message_size must be positive"))
	}
	if c.InlineMax < 0 || c.InlineMax > 1<<20 {
		errs = append(errs, errors.New("inline_max must be between 0 and 1MiB"))
	}
	if c.MaxAssertionLifetime < 0 || c.MaxAssertionLifetime > 2*time.Minute {
		errs = append(errs, errors.New("max_assertion_lifetime must be at most 2m"))
	}
	for name, d := range map[string]time.Duration{
		"token_lifetime": c.TokenLifetime, "clock_skew": c.ClockSkew, "lease_timeout": c.LeaseTimeout,
		"max_poll_wait": c.MaxPollWait, "sweep_interval": c.SweepInterval, "body_idle_timeout": c.BodyIdleTimeout, "upload_ttl": c.UploadTTL,
		"read_header_timeout": c.ReadHeaderTimeout, "idle_timeout": c.IdleTimeout, "shutdown_timeout": c.ShutdownTimeout,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, errors.New("max_attempts must be at least 1"))
	}
	if c.MaxProcs < 1 {
		errs = append(errs, errors.New("max_procs must be at least 1"))
	}
	if c.GCPercent < -1 {
		errs = append(errs, errors.New("gc_percent must be at least -1 (off)"))
	}
	if c.MemoryLimit < 64<<20 {
		errs = append(errs, errors.New("memory_limit must be at least 64MiB"))
	}
	if c.MaxPollItems < 1 || c.MaxPollItems > 1000 {
		errs = append(errs, errors.New("max_poll_items must be between 1 and 1000"))
	}
	return errors.Join(errs...)
}
