package agent

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the agent's configuration, read from YAML (docs/agent.md lists
// every field with its unit and default). Zero values take the defaults of
// SetDefaults; Validate checks the result. Paths are used as given (the CLI
// resolves them relative to the config file).
type Config struct {
	// Account is this agent's account id (UUID) at the gateway. Required.
	Account string `yaml:"account"`
	// DataDir holds the database, the outbox, the spool, the inbox and the
	// receipts. Required.
	DataDir string `yaml:"data_dir"`
	// Dev allows the development CA as a trust root and in
	// Gateway.CAFile (set by --dev, never from the file).
	Dev bool `yaml:"-"`

	Gateway GatewayConfig `yaml:"gateway"`
	// Keys are the account's keys, current first: the first signs, all
	// decrypt (rotation). At least one, unless keys are passed to New.
	Keys []KeyConfig `yaml:"keys"`
	// TrustRoots are PEM files of the CAs that account certificates must
	// chain to (at the time of checking). Required unless passed to New.
	TrustRoots []string `yaml:"trust_roots"`
	// Pins maps an account id to the certificate fingerprints (hex SHA-256
	// of DER) accepted for it; when set, catalog certificates of that
	// account outside the list are not used to seal or to verify.
	Pins map[string][]string `yaml:"pins"`
	// Profile is the envelope encryption profile: "" (default,
	// AuthEnvelopedData AES-256-GCM) or "fiks" (EnvelopedData AES-256-CBC).
	Profile string `yaml:"profile"`

	LocalAPI LocalAPIConfig `yaml:"local_api"`
	// MetricsListen is the address of the Prometheus /metrics, /healthz
	// and /readyz listener, e.g. "127.0.0.1:9480". Empty: no listener.
	MetricsListen string `yaml:"metrics_listen"`
	// AuditLog is the path of the hash-chained audit log. Default
	// DataDir/audit.log.
	AuditLog string `yaml:"audit_log"`

	Retry   RetryConfig   `yaml:"retry"`
	Receive ReceiveConfig `yaml:"receive"`
	// CatalogTTL is how long catalog lookups (receiver and sender
	// certificates) are cached. Default 5m.
	CatalogTTL time.Duration `yaml:"catalog_ttl"`
	// ShutdownTimeout bounds a graceful shutdown. Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// Adapters are the adapters to run; see docs/agent.md.
	Adapters []AdapterConfig `yaml:"adapters"`
}

// GatewayConfig says how to reach the gateway.
type GatewayConfig struct {
	// URL is the gateway's base URL, https://... Required unless a gateway
	// is passed to New.
	URL string `yaml:"url"`
	// CAFile is a PEM file of roots for the gateway's TLS certificate.
	// Default: the system roots. The kurer dev CA is refused unless Dev.
	CAFile string `yaml:"ca_file"`
	// Audience is the aud of client assertions. Default: URL.
	Audience string `yaml:"audience"`
}

// KeyConfig is one key and its certificate (PEM files).
type KeyConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// LocalAPIConfig configures the local API listener.
type LocalAPIConfig struct {
	// Listen is "127.0.0.1:PORT" (loopback only) or "unix:/path/to.sock".
	// Default "127.0.0.1:7480".
	Listen string `yaml:"listen"`
	// TokenEnv and TokenFile name where the Bearer token is read from (env
	// wins). One of them is required unless a token is passed to New.
	TokenEnv  string `yaml:"token_env"`
	TokenFile string `yaml:"token_file"`
	// MaxFileSize is the largest payload file of a send, in bytes. Default
	// 512 MiB.
	MaxFileSize int64 `yaml:"max_file_size"`
	// MaxTotalSize is the largest total of a send's files, in bytes.
	// Default 1 GiB.
	MaxTotalSize int64 `yaml:"max_total_size"`
	// MaxFiles is the most payload files of one send. Default 1000.
	MaxFiles int `yaml:"max_files"`
	// MaxMetadataSize is the largest metadata (melding.json), in bytes.
	// Default 4 MiB.
	MaxMetadataSize int64 `yaml:"max_metadata_size"`
}

// RetryConfig is the upload and adapter-delivery backoff: attempt n waits a
// random time in [0, min(Max, Initial*2^n)) (full jitter).
type RetryConfig struct {
	// Initial is the first backoff ceiling. Default 1s.
	Initial time.Duration `yaml:"initial"`
	// Max caps the backoff ceiling. Default 5m.
	Max time.Duration `yaml:"max"`
	// MaxAttempts: after this many failed uploads the message is failed
	// (dead letter, reason max_attempts). Default 100; 0 means the default.
	MaxAttempts int `yaml:"max_attempts"`
}

// ReceiveConfig tunes the mailbox long poll.
type ReceiveConfig struct {
	// Wait is the long-poll wait per request. Default 30s.
	Wait time.Duration `yaml:"wait"`
	// Max is the most items per poll. Default 16.
	Max int `yaml:"max"`
	// Workers is how many incoming messages are downloaded and opened at
	// once, and how many receipts and adapter deliveries run at once
	// (acks go together: up to 256 in one request). Default 4. All of the
	// agent's requests to the gateway share at most 16 kept-alive
	// connections (client.MaxConnsPerGateway).
	Workers int `yaml:"workers"`
	// MaxEnvelopeSize is the largest envelope accepted for download, in
	// bytes. Default 2 GiB.
	MaxEnvelopeSize int64 `yaml:"max_envelope_size"`
}

// AdapterConfig names one adapter. Options are decoded strictly into the
// adapter kind's own config (agent/adapter/folder.Config,
// agent/adapter/webhook.Config).
type AdapterConfig struct {
	Kind    string    `yaml:"kind"`
	Name    string    `yaml:"name"`
	Options yaml.Node `yaml:"options"`
}

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.LocalAPI.Listen == "" {
		c.LocalAPI.Listen = "127.0.0.1:7480"
	}
	if c.LocalAPI.MaxFileSize == 0 {
		c.LocalAPI.MaxFileSize = 512 << 20
	}
	if c.LocalAPI.MaxTotalSize == 0 {
		c.LocalAPI.MaxTotalSize = 1 << 30
	}
	if c.LocalAPI.MaxFiles == 0 {
		c.LocalAPI.MaxFiles = 1000
	}
	if c.LocalAPI.MaxMetadataSize == 0 {
		c.LocalAPI.MaxMetadataSize = 4 << 20
	}
	if c.Retry.Initial == 0 {
		c.Retry.Initial = time.Second
	}
	if c.Retry.Max == 0 {
		c.Retry.Max = 5 * time.Minute
	}
	if c.Retry.MaxAttempts == 0 {
		c.Retry.MaxAttempts = 100
	}
	if c.Receive.Wait == 0 {
		c.Receive.Wait = 30 * time.Second
	}
	if c.Receive.Workers == 0 {
		c.Receive.Workers = 4
	}
	if c.Receive.Max == 0 {
		c.Receive.Max = 16
	}
	if c.Receive.MaxEnvelopeSize == 0 {
		c.Receive.MaxEnvelopeSize = 2 << 30
	}
	if c.CatalogTTL == 0 {
		c.CatalogTTL = 5 * time.Minute
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Gateway.Audience == "" {
		c.Gateway.Audience = c.Gateway.URL
	}
}

var (
	uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	fpRE   = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Validate checks c after SetDefaults. It reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !uuidRE.MatchString(c.Account) {
		bad("account: want a lowercase UUID, got %q", c.Account)
	}
	if c.DataDir == "" {
		bad("data_dir: required")
	}
	if c.Gateway.URL != "" {
		u, err := url.Parse(c.Gateway.URL)
		if err != nil || u.Host == "" || (u.Scheme != "https" && !(c.Dev && u.Scheme == "http")) {
			bad("gateway.url: want an https:// URL, got %q", c.Gateway.URL)
		}
	}
	for i, k := range c.Keys {
		if k.Cert == "" || k.Key == "" {
			bad("keys[%d]: cert and key are both required", i)
		}
	}
	for acct, fps := range c.Pins {
		if !uuidRE.MatchString(acct) {
			bad("pins: %q is not an account id", acct)
		}
		for _, fp := range fps {
			if !fpRE.MatchString(fp) {
				bad("pins[%s]: %q is not a hex SHA-256 fingerprint", acct, fp)
			}
		}
	}
	switch c.Profile {
	case "", "fiks":
	default:
		bad("profile: want \"\" or \"fiks\", got %q", c.Profile)
	}
	if l := c.LocalAPI.Listen; strings.HasPrefix(l, "unix:") {
		if p, _ := socketPath(l); !filepath.IsAbs(p) || strings.HasPrefix(p, "//") {
			bad("local_api.listen: want unix:/absolute/path (or unix:///absolute/path), got %q", l)
		}
	} else if !loopback(l) {
		bad("local_api.listen: want 127.0.0.1:PORT, [::1]:PORT, localhost:PORT or unix:/path, got %q", l)
	}
	if c.LocalAPI.MaxFileSize < 0 || c.LocalAPI.MaxTotalSize < 0 || c.LocalAPI.MaxFiles < 0 || c.LocalAPI.MaxMetadataSize < 0 {
		bad("local_api: limits must not be negative")
	}
	if c.Retry.Initial < 0 || c.Retry.Max < c.Retry.Initial || c.Retry.MaxAttempts < 0 {
		bad("retry: want 0 <= initial <= max and max_attempts >= 0")
	}
	if c.Receive.Wait < time.Second || c.Receive.Wait > 5*time.Minute {
		bad("receive.wait: want 1s..5m, got %s", c.Receive.Wait)
	}
	if c.Receive.Workers < 1 || c.Receive.Workers > 64 {
		bad("receive.workers: want 1..64, got %d", c.Receive.Workers)
	}
	if c.Receive.Max < 1 || c.Receive.Max > 1000 {
		bad("receive.max: want 1..1000, got %d", c.Receive.Max)
	}
	names := map[string]bool{}
	for i, a := range c.Adapters {
		if a.Kind == "" {
			bad("adapters[%d].kind: required", i)
		}
		n := a.Name
		if n == "" {
			n = a.Kind
		}
		if names[n] {
			bad("adapters[%d]: name %q used twice", i, n)
		}
		names[n] = true
	}
	return errors.Join(errs...)
}

func loopback(addr string) bool {
	for _, p := range []string{"127.0.0.1:", "[::1]:", "localhost:"} {
		if strings.HasPrefix(addr, p) {
			return true
		}
	}
	return false
}

// decodeOptions decodes an adapter's options node strictly into v.
func decodeOptions(n yaml.Node) func(v any) error {
	return func(v any) error {
		if n.Kind == 0 {
			return nil
		}
		data, err := yaml.Marshal(&n)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(strings.NewReader(string(data)))
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("adapter options: %w", err)
		}
		return nil
	}
}
