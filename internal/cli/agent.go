package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/kurer/kurer/agent"
	gwclient "github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/internal/config"
	"github.com/kurer/kurer/internal/pki"
)

func newAgentCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the on-prem agent next to a case system",
		Long: `The agent holds the account's private keys and is the only place where
plaintext exists. It seals outgoing cases, uploads them to the gateway with
retries, long-polls its mailbox, opens and verifies incoming envelopes, hands
them to its adapters exactly once and sends signed receipts.`,
	}
	cmd.AddCommand(newAgentRunCommand(), newAgentKeysCommand(), newAuditCommand("agent"))
	return cmd
}

// rawAgentConfig decodes the YAML without running Validate, so that --dev is
// applied first.
type rawAgentConfig agent.Config

// LoadAgentConfig reads an agent configuration file, resolves its paths
// relative to the file's folder, applies dev, fills defaults and validates.
func LoadAgentConfig(path string, dev bool) (agent.Config, error) {
	var raw rawAgentConfig
	if err := config.Load(path, &raw); err != nil {
		return agent.Config{}, exitf(ExitUsage, "%v", err)
	}
	cfg := agent.Config(raw)
	cfg.Dev = dev
	base := filepath.Dir(path)
	for _, p := range []*string{&cfg.DataDir, &cfg.AuditLog, &cfg.Gateway.CAFile, &cfg.LocalAPI.TokenFile} {
		*p = resolvePath(base, *p)
	}
	for i := range cfg.Keys {
		cfg.Keys[i].Cert = resolvePath(base, cfg.Keys[i].Cert)
		cfg.Keys[i].Key = resolvePath(base, cfg.Keys[i].Key)
	}
	for i := range cfg.TrustRoots {
		cfg.TrustRoots[i] = resolvePath(base, cfg.TrustRoots[i])
	}
	// Paths in adapter options (folder folders, webhook secret and CA
	// files) are relative to the file too.
	for i := range cfg.Adapters {
		opts := &cfg.Adapters[i].Options
		if opts.Kind != yaml.MappingNode {
			continue
		}
		for j := 0; j+1 < len(opts.Content); j += 2 {
			switch opts.Content[j].Value {
			case "outbox", "sent", "failed", "inbox", "receipts", "secret_file", "ca_file":
				opts.Content[j+1].Value = resolvePath(base, opts.Content[j+1].Value)
			}
		}
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return agent.Config{}, exitf(ExitUsage, "%s: %v", path, err)
	}
	return cfg, nil
}

type agentRunOptions struct {
	config string
	dev    bool
}

func newAgentRunCommand() *cobra.Command {
	o := &agentRunOptions{}
	cmd := &cobra.Command{
		Use:   "run --config FILE [--dev]",
		Short: "Run the agent until interrupted",
		Example: `  kurer agent run --config /etc/kurer/agent.yaml
  kurer agent run --config examples/agent-oslo.yaml --dev   # trusts certs-dev/ (never in production)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := LoadAgentConfig(o.config, o.dev)
			if err != nil {
				return err
			}
			logger := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil)).With("component", "agent")
			a, err := agent.New(cfg, logger)
			if err != nil {
				return fmt.Errorf("start agent: %w", err)
			}
			logger.Info("agent running", "account", a.Account(), "local_api", a.LocalURL(), "dev", cfg.Dev)
			if err := a.Run(cmd.Context()); err != nil && !errors.Is(err, cmd.Context().Err()) {
				return fmt.Errorf("agent: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.config, "config", "", "agent configuration file (YAML; see docs/agent.md)")
	cmd.Flags().BoolVar(&o.dev, "dev", false, "allow the kurer development CA as trust root and gateway.ca_file (never in production)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func newAgentKeysCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Check the agent's keys against the gateway catalog"}
	var (
		path   string
		dev    bool
		within time.Duration
		output string
	)
	check := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Prove each configured key matches a catalog certificate; warn of expiry",
		Long: `For every key in the agent configuration, checks that its certificate is one
of the account's certificates in the gateway catalog and that the key is the
private half of it; lists the catalog certificates that expire within
--within (default 30 days). Exits 1 if a key has no matching catalog
certificate.`,
		Example: `  kurer agent keys check --config /etc/kurer/agent.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			cfg, err := LoadAgentConfig(path, dev)
			if err != nil {
				return err
			}
			rep, err := checkAgentKeys(cmd, cfg, within)
			if err != nil {
				return err
			}
			if output == outputJSON {
				if err := writeJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "KEY\tCERTIFICATE\tIN CATALOG\tKEY MATCHES\tNOT AFTER")
				for _, k := range rep.Keys {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.KeyFile, k.Fingerprint[:16], yesNo(k.InCatalog), yesNo(k.KeyMatches), k.NotAfter.Format(time.DateOnly))
				}
				_ = tw.Flush()
				for _, e := range rep.Expiring {
					fmt.Fprintf(cmd.OutOrStdout(), "warning: catalog certificate %s expires %s\n", e.Fingerprint, e.NotAfter.Format(time.RFC3339))
				}
			}
			if !rep.OK {
				return fmt.Errorf("keys check: a configured key has no matching certificate in the catalog")
			}
			return nil
		},
	}
	check.Flags().StringVar(&path, "config", "", "agent configuration file")
	check.Flags().BoolVar(&dev, "dev", false, "allow the kurer development CA")
	check.Flags().DurationVar(&within, "within", 30*24*time.Hour, "warn of catalog certificates expiring within this long")
	registerOutput(check, &output)
	_ = check.MarkFlagRequired("config")
	cmd.AddCommand(check)
	return cmd
}

// KeyReport is the outcome of `kurer agent keys check`.
type KeyReport struct {
	Account  string       `json:"account"`
	OK       bool         `json:"ok"`
	Keys     []KeyStatus  `json:"keys"`
	Expiring []ExpiryNote `json:"expiring,omitempty"`
}

// KeyStatus is one configured key.
type KeyStatus struct {
	KeyFile     string    `json:"key_file"`
	Fingerprint string    `json:"fingerprint"`
	InCatalog   bool      `json:"in_catalog"`
	KeyMatches  bool      `json:"key_matches"`
	NotAfter    time.Time `json:"not_after"`
}

// ExpiryNote names a catalog certificate that expires soon.
type ExpiryNote struct {
	Fingerprint string    `json:"fingerprint"`
	NotAfter    time.Time `json:"not_after"`
}

func checkAgentKeys(cmd *cobra.Command, cfg agent.Config, within time.Duration) (KeyReport, error) {
	rep := KeyReport{Account: cfg.Account, OK: true}
	if len(cfg.Keys) == 0 {
		return rep, exitf(ExitUsage, "the configuration names no keys")
	}
	type loaded struct {
		cfg  agent.KeyConfig
		key  agent.Key
		okKM bool
	}
	var roots []*x509.Certificate
	for _, f := range cfg.TrustRoots {
		rs, err := pki.LoadCerts(f)
		if err != nil {
			return rep, exitf(ExitUsage, "trust_roots: %v", err)
		}
		roots = append(roots, rs...)
	}
	pool, err := pki.TrustPool(roots, cfg.Dev)
	if err != nil {
		return rep, exitf(ExitUsage, "trust_roots: %v", err)
	}
	var keys []loaded
	for _, kc := range cfg.Keys {
		cert, err := pki.LoadCert(kc.Cert)
		if err != nil {
			return rep, exitf(ExitUsage, "%v", err)
		}
		signer, err := pki.LoadKey(kc.Key)
		if err != nil {
			return rep, exitf(ExitUsage, "%v", err)
		}
		if err := pki.VerifyAt(cert, pool, nil, time.Now()); err != nil {
			return rep, &ExitErr{Code: ExitVerify, Err: fmt.Errorf("keys check: %s does not chain to the trust roots now: %v", kc.Cert, err)}
		}
		keys = append(keys, loaded{cfg: kc, key: agent.Key{Cert: cert, Signer: signer}, okKM: pki.KeyMatches(signer, cert)})
	}
	var tlsConf *tls.Config
	if cfg.Gateway.CAFile != "" {
		roots, err := pki.LoadCerts(cfg.Gateway.CAFile)
		if err != nil {
			return rep, exitf(ExitUsage, "gateway.ca_file: %v", err)
		}
		pool, err := pki.TrustPool(roots, cfg.Dev)
		if err != nil {
			return rep, exitf(ExitUsage, "gateway.ca_file: %v", err)
		}
		tlsConf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	// Authenticate with the first key whose certificate matches it.
	var auth *agent.Key
	for i := range keys {
		if keys[i].okKM {
			auth = &keys[i].key
			break
		}
	}
	if auth == nil {
		return rep, fmt.Errorf("keys check: no configured key is the private half of its certificate")
	}
	c, err := gwclient.New(gwclient.Config{BaseURL: cfg.Gateway.URL, AccountID: cfg.Account, Signer: auth.Signer, Cert: auth.Cert, TLS: tlsConf, Audience: cfg.Gateway.Audience})
	if err != nil {
		return rep, exitf(ExitUsage, "%v", err)
	}
	acct, err := c.Lookup(cmd.Context(), cfg.Account)
	if err != nil {
		return rep, gatewayError("keys check: catalog lookup", err)
	}
	inCatalog := map[string]bool{}
	now := time.Now()
	for _, cc := range acct.Certificates {
		inCatalog[cc.Fingerprint] = true
		if cc.NotAfter.Sub(now) < within {
			rep.Expiring = append(rep.Expiring, ExpiryNote{Fingerprint: cc.Fingerprint, NotAfter: cc.NotAfter})
		}
	}
	for _, k := range keys {
		fp := pki.Fingerprint(k.key.Cert)
		st := KeyStatus{KeyFile: k.cfg.Key, Fingerprint: fp, InCatalog: inCatalog[fp], KeyMatches: k.okKM, NotAfter: k.key.Cert.NotAfter}
		if !st.InCatalog || !st.KeyMatches {
			rep.OK = false
		}
		rep.Keys = append(rep.Keys, st)
	}
	return rep, nil
}
