package cli

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/api"
	gwclient "github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/internal/audit"
	"github.com/kurer/kurer/internal/config"
	"github.com/kurer/kurer/internal/durable"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
)

func newGatewayCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run and operate the central gateway (broker of ciphertext)",
		Long: `The gateway routes, stores and forwards envelopes between agents. It holds
ciphertext only: no key that opens an envelope is ever on the gateway.

Operators manage the account catalog and watch messages through the admin API
with the operator token (--token-file or KURER_OPERATOR_TOKEN).`,
	}
	cmd.AddCommand(
		newGatewayServeCommand(),
		newGatewayAccountCommand(),
		newGatewayMessagesCommand(),
		newGatewayOperatorTokenCommand(),
		newAuditCommand("gateway"),
	)
	return cmd
}

type gatewayServeOptions struct {
	config string
	dev    bool
}

func newGatewayServeCommand() *cobra.Command {
	o := &gatewayServeOptions{}
	cmd := &cobra.Command{
		Use:   "serve --config FILE [--dev]",
		Short: "Run the gateway until interrupted",
		Example: `  kurer gateway serve --config /etc/kurer/gateway.yaml
  kurer gateway serve --config examples/gateway.yaml --dev   # trusts certs-dev/ (never in production)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	cmd.Flags().StringVar(&o.config, "config", "", "gateway configuration file (YAML; see docs/gateway.md)")
	cmd.Flags().BoolVar(&o.dev, "dev", false, "allow the kurer development PKI: its CA as trust root, its certificates and keys as tls_cert and signing_key (never in production)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// rawGatewayConfig decodes the YAML without running Validate, so that flags
// (--dev) are applied before validation.
type rawGatewayConfig gateway.Config

// LoadGatewayConfig reads a gateway configuration file, resolves its paths
// relative to the file's folder, applies dev and validates it.
func LoadGatewayConfig(path string, dev bool) (gateway.Config, error) {
	var raw rawGatewayConfig
	if err := config.Load(path, &raw); err != nil {
		return gateway.Config{}, exitf(ExitUsage, "%v", err)
	}
	cfg := gateway.Config(raw)
	cfg.Dev = dev
	base := filepath.Dir(path)
	for _, p := range []*string{&cfg.TLSCert, &cfg.TLSKey, &cfg.SigningKey, &cfg.DataDir, &cfg.AuditLog} {
		*p = resolvePath(base, *p)
	}
	for i := range cfg.TrustRoots {
		cfg.TrustRoots[i] = resolvePath(base, cfg.TrustRoots[i])
	}
	if err := cfg.Validate(); err != nil {
		return gateway.Config{}, exitf(ExitUsage, "%s: %v", path, err)
	}
	return cfg, nil
}

// resolvePath makes p relative to base unless it is empty or absolute.
func resolvePath(base, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}

func (o *gatewayServeOptions) run(cmd *cobra.Command) error {
	cfg, err := LoadGatewayConfig(o.config, o.dev)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil)).With("component", "gateway")
	gateway.SetRuntime(cfg) // the operator's GOGC, GOMAXPROCS and GOMEMLIMIT win
	srv, err := gateway.New(cfg, logger)
	if err != nil {
		return fmt.Errorf("start gateway: %w", err)
	}
	logger.Info("gateway listening", "addr", srv.Addr().String(), "admin", addrString(srv.AdminAddr()), "metrics", addrString(srv.MetricsAddr()), "dev", cfg.Dev,
		"gomaxprocs", runtime.GOMAXPROCS(0), "gc_percent", gcPercent(), "memory_limit", debug.SetMemoryLimit(-1))
	if err := srv.Run(cmd.Context()); err != nil && !errors.Is(err, cmd.Context().Err()) {
		return fmt.Errorf("gateway: %w", err)
	}
	return nil
}

// gcPercent reads the collector target in force (GOGC) without changing it.
func gcPercent() int64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return -1
	}
	return int64(s[0].Value.Uint64())
}

func addrString(a interface{ String() string }) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// adminFlags are the flags every operator command shares.
type adminFlags struct {
	url       string
	ca        string
	dev       bool
	tokenFile string
	output    string
}

func (a *adminFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.url, "admin", "https://127.0.0.1:8444", "the gateway's admin API URL")
	cmd.Flags().StringVar(&a.ca, "ca", "", "PEM file of the CA that issued the gateway's TLS certificate (default: system roots)")
	cmd.Flags().BoolVar(&a.dev, "dev", false, "allow the kurer development CA as --ca (never in production)")
	cmd.Flags().StringVar(&a.tokenFile, "token-file", "", "file holding the operator token (or set KURER_OPERATOR_TOKEN)")
	registerOutput(cmd, &a.output)
}

func (a *adminFlags) client() (*gwclient.Admin, error) {
	if err := checkOutput(a.output); err != nil {
		return nil, err
	}
	token, err := config.Secret("KURER_OPERATOR_TOKEN", a.tokenFile)
	if err != nil {
		return nil, exitf(ExitUsage, "operator token: give --token-file or set KURER_OPERATOR_TOKEN")
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.ca != "" {
		roots, err := pki.LoadCerts(a.ca)
		if err != nil {
			return nil, exitf(ExitUsage, "--ca: %v", err)
		}
		// The dev CA's key is public: trusting it outside dev mode would
		// let anyone impersonate the gateway and take the operator token.
		pool, err := pki.TrustPool(roots, a.dev)
		if err != nil {
			return nil, exitf(ExitUsage, "--ca: %v", err)
		}
		tlsConf.RootCAs = pool
	}
	c, err := gwclient.NewAdmin(gwclient.AdminConfig{BaseURL: a.url, Token: token, TLS: tlsConf})
	if err != nil {
		return nil, exitf(ExitUsage, "%v", err)
	}
	return c, nil
}

// gatewayError maps an admin API error to one clear line and an exit code.
func gatewayError(what string, err error) error {
	var e *errs.Error
	if errors.As(err, &e) {
		if e.Code == errs.Unavailable {
			return &ExitErr{Code: ExitUnavailable, Err: fmt.Errorf("%s: the gateway is unavailable", what)}
		}
		msg := string(e.Code) + ": " + e.Code.Message()
		if e.Detail != "" {
			msg = string(e.Code) + ": " + e.Detail
		}
		return fmt.Errorf("%s: %s", what, msg)
	}
	return &ExitErr{Code: ExitUnavailable, Err: fmt.Errorf("%s: %v", what, err)}
}

func newGatewayAccountCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "account",
		Short: "Manage the account catalog (operator role)",
	}
	cmd.AddCommand(
		newAccountAddCommand(),
		newAccountListCommand(),
		newAccountShowCommand(),
		newAccountUpdateCommand(),
		newAccountRemoveCommand(),
		newAccountAddCertCommand(),
		newAccountRemoveCertCommand(),
	)
	return cmd
}

type accountFields struct {
	id, name, org, municipality, service string
	types, certs                         []string
}

func (f *accountFields) register(cmd *cobra.Command, withCerts bool) {
	cmd.Flags().StringVar(&f.name, "name", "", `display name, e.g. "Oslo kommune, barneverntjenesten"`)
	cmd.Flags().StringVar(&f.org, "org", "", "organisation number (9 digits, mod-11 checked)")
	cmd.Flags().StringVar(&f.municipality, "municipality", "", "municipality number (4 digits)")
	cmd.Flags().StringVar(&f.service, "service", "", `service, e.g. "barneverntjenesten"`)
	cmd.Flags().StringSliceVar(&f.types, "type", nil, "a message type the account receives (repeat or comma-separate)")
	if withCerts {
		cmd.Flags().StringVar(&f.id, "id", "", "account id (UUID; default: a new one)")
		cmd.Flags().StringSliceVar(&f.certs, "cert", nil, "PEM certificate file of the account (repeat for rotation)")
	}
}

func (f *accountFields) request() (api.AccountRequest, error) {
	req := api.AccountRequest{ID: f.id, Name: f.name, OrgNumber: f.org, Municipality: f.municipality, Service: f.service, Types: f.types}
	for _, c := range f.certs {
		data, err := durable.ReadFile(c, 1<<20)
		if err != nil {
			return req, exitf(ExitUsage, "--cert: %v", err)
		}
		req.Certificates = append(req.Certificates, string(data))
	}
	return req, nil
}

func newAccountAddCommand() *cobra.Command {
	var (
		a adminFlags
		f accountFields
	)
	cmd := &cobra.Command{
		Use:   "add --name N --org NNNNNNNNN --type T --cert FILE [flags]",
		Short: "Add an account to the catalog",
		Example: `  kurer gateway account add --token-file operator.token --ca certs-dev/ca.pem --dev \
    --name "Oslo kommune, barneverntjenesten" --org 310000027 --municipality 0301 \
    --service barneverntjenesten --type no.kurer.barnevern.sak.overforing.v1 --cert certs-dev/oslo.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			req, err := f.request()
			if err != nil {
				return err
			}
			acct, err := c.CreateAccount(cmd.Context(), req)
			if err != nil {
				return gatewayError("account add", err)
			}
			return printAccount(cmd.OutOrStdout(), a.output, acct)
		},
	}
	a.register(cmd)
	f.register(cmd, true)
	return cmd
}

func newAccountListCommand() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the accounts in the catalog",
		Example: `  kurer gateway account list --token-file operator.token --ca certs-dev/ca.pem --dev -o json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			list, err := c.Accounts(cmd.Context())
			if err != nil {
				return gatewayError("account list", err)
			}
			if a.output == outputJSON {
				return writeJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tORG\tMUNICIPALITY\tTYPES\tCERTS")
			for _, ac := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", ac.ID, ac.Name, ac.OrgNumber, ac.Municipality, len(ac.Types), len(ac.Certificates))
			}
			return tw.Flush()
		},
	}
	a.register(cmd)
	return cmd
}

func newAccountShowCommand() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:     "show ID",
		Short:   "Show one account with its certificates and their validity",
		Example: `  kurer gateway account show 897028ee-1d43-591c-bb6c-b98ced0afa70 --token-file operator.token`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			acct, err := c.Account(cmd.Context(), args[0])
			if err != nil {
				return gatewayError("account show", err)
			}
			return printAccount(cmd.OutOrStdout(), a.output, acct)
		},
	}
	a.register(cmd)
	return cmd
}

func newAccountUpdateCommand() *cobra.Command {
	var (
		a adminFlags
		f accountFields
	)
	cmd := &cobra.Command{
		Use:   "update ID [flags]",
		Short: "Change an account's descriptive fields and received types",
		Long:  "Flags not given keep their current value. Certificates change with add-cert and remove-cert.",
		Example: `  kurer gateway account update 897028ee-1d43-591c-bb6c-b98ced0afa70 --token-file operator.token \
    --type no.kurer.barnevern.sak.overforing.v1,no.kurer.barnevern.bekymringsmelding.v1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			cur, err := c.Account(cmd.Context(), args[0])
			if err != nil {
				return gatewayError("account update", err)
			}
			req := api.AccountRequest{Name: cur.Name, OrgNumber: cur.OrgNumber, Municipality: cur.Municipality, Service: cur.Service, Types: cur.Types}
			fl := cmd.Flags()
			if fl.Changed("name") {
				req.Name = f.name
			}
			if fl.Changed("org") {
				req.OrgNumber = f.org
			}
			if fl.Changed("municipality") {
				req.Municipality = f.municipality
			}
			if fl.Changed("service") {
				req.Service = f.service
			}
			if fl.Changed("type") {
				req.Types = f.types
			}
			acct, err := c.UpdateAccount(cmd.Context(), args[0], req)
			if err != nil {
				return gatewayError("account update", err)
			}
			return printAccount(cmd.OutOrStdout(), a.output, acct)
		},
	}
	a.register(cmd)
	f.register(cmd, false)
	return cmd
}

func newAccountRemoveCommand() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:     "remove ID",
		Short:   "Remove an account from the catalog",
		Example: `  kurer gateway account remove 897028ee-1d43-591c-bb6c-b98ced0afa70 --token-file operator.token`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteAccount(cmd.Context(), args[0]); err != nil {
				return gatewayError("account remove", err)
			}
			if a.output == outputJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"removed": args[0]})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
			return nil
		},
	}
	a.register(cmd)
	return cmd
}

func newAccountAddCertCommand() *cobra.Command {
	var (
		a    adminFlags
		cert string
	)
	cmd := &cobra.Command{
		Use:     "add-cert ID --cert FILE",
		Short:   "Add a certificate to an account (key rotation)",
		Example: `  kurer gateway account add-cert 897028ee-1d43-591c-bb6c-b98ced0afa70 --cert oslo-2027.pem --token-file operator.token`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			data, err := durable.ReadFile(cert, 1<<20)
			if err != nil {
				return exitf(ExitUsage, "--cert: %v", err)
			}
			acct, err := c.AddCert(cmd.Context(), args[0], string(data))
			if err != nil {
				return gatewayError("account add-cert", err)
			}
			return printAccount(cmd.OutOrStdout(), a.output, acct)
		},
	}
	a.register(cmd)
	cmd.Flags().StringVar(&cert, "cert", "", "PEM certificate file")
	_ = cmd.MarkFlagRequired("cert")
	return cmd
}

func newAccountRemoveCertCommand() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:     "remove-cert ID FINGERPRINT",
		Short:   "Remove a certificate (by its SHA-256 fingerprint) from an account",
		Example: `  kurer gateway account remove-cert 897028ee-1d43-591c-bb6c-b98ced0afa70 3f9a... --token-file operator.token`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			acct, err := c.RemoveCert(cmd.Context(), args[0], args[1])
			if err != nil {
				return gatewayError("account remove-cert", err)
			}
			return printAccount(cmd.OutOrStdout(), a.output, acct)
		},
	}
	a.register(cmd)
	return cmd
}

func printAccount(w io.Writer, output string, a api.Account) error {
	if output == outputJSON {
		return writeJSON(w, a)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\nname\t%s\norg number\t%s\nmunicipality\t%s\nservice\t%s\n", a.ID, a.Name, a.OrgNumber, a.Municipality, a.Service)
	fmt.Fprintf(tw, "receives\t%s\n", strings.Join(a.Types, ", "))
	now := time.Now()
	for _, c := range a.Certificates {
		state := "valid"
		switch {
		case now.After(c.NotAfter):
			state = "EXPIRED"
		case now.Before(c.NotBefore):
			state = "not yet valid"
		case c.NotAfter.Sub(now) < 30*24*time.Hour:
			state = "expires within 30 days"
		}
		fmt.Fprintf(tw, "certificate\t%s  %s .. %s  %s\n", c.Fingerprint, c.NotBefore.Format(time.DateOnly), c.NotAfter.Format(time.DateOnly), state)
	}
	return tw.Flush()
}

func newGatewayMessagesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "messages",
		Short: "Watch messages at the gateway (operator role)",
	}
	var (
		a adminFlags
		f gwclient.MessageFilter
	)
	list := &cobra.Command{
		Use:   "list [--state S] [--account ID] [--type T] [--older-than D]",
		Short: "List messages by state, account, type and age",
		Example: `  kurer gateway messages list --state dead_lettered --token-file operator.token
  kurer gateway messages list --state accepted --older-than 1h -o json   # stuck`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			msgs, err := c.Messages(cmd.Context(), f)
			if err != nil {
				return gatewayError("messages list", err)
			}
			if len(msgs) >= api.MaxMessagesListed {
				fmt.Fprintf(cmd.ErrOrStderr(), "messages list: the oldest %d shown; narrow the filter (--state, --account, --type, --older-than) to see the others\n", len(msgs))
			}
			if a.output == outputJSON {
				return writeJSON(cmd.OutOrStdout(), msgs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tTYPE\tFROM\tTO\tSIZE\tATTEMPTS\tSINCE")
			for _, m := range msgs {
				since := ""
				if n := len(m.History); n > 0 {
					since = m.History[n-1].At.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", m.Routing.ID, m.State, m.Routing.Type, m.Routing.From, m.Routing.To, m.Routing.Size, m.Attempts, since)
			}
			return tw.Flush()
		},
	}
	a.register(list)
	list.Flags().StringVar(&f.State, "state", "", "accepted, leased, delivered, rejected, expired or dead_lettered")
	list.Flags().StringVar(&f.Account, "account", "", "sender or receiver account id")
	list.Flags().StringVar(&f.Type, "type", "", "message type")
	list.Flags().DurationVar(&f.OlderThan, "older-than", 0, "only messages accepted longer ago than this, e.g. 1h (with --state accepted or leased: stuck ones)")
	cmd.AddCommand(list)
	return cmd
}

func newGatewayOperatorTokenCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "operator-token --out FILE",
		Short: "Create an operator token and print the SHA-256 the gateway config holds",
		Long: `Writes a new random operator token to FILE (mode 0600) and prints the hex
SHA-256 to put in the gateway configuration (operator_token_sha256). The token
itself never goes into the configuration.`,
		Example: `  kurer gateway operator-token --out /etc/kurer/operator.token`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var b [32]byte
			if _, err := rand.Read(b[:]); err != nil {
				return err
			}
			token := hex.EncodeToString(b[:])
			f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return exitf(ExitUsage, "--out: %v", err)
			}
			if _, err := f.WriteString(token + "\n"); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			sum := sha256.Sum256([]byte(token))
			fmt.Fprintf(cmd.OutOrStdout(), "operator_token_sha256: %s\n", hex.EncodeToString(sum[:]))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the new token to (must not exist)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// newAuditCommand is `kurer gateway audit` and `kurer agent audit`: both keep
// the same hash-chained log format (internal/audit).
func newAuditCommand(who string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the " + who + "'s hash-chained audit log",
	}
	var (
		path   string
		output string
		expect []string
	)
	verify := &cobra.Command{
		Use:   "verify --audit FILE [--expect SEQ:HASH]...",
		Short: "Verify the audit log's hash chain; exit 3 if any record was edited, removed or reordered",
		Long: `Verify the audit log's hash chain; exit 3 if any record was edited, removed or reordered.

The log's head file (FILE.head) must exist once the log has records: a
missing head file means records may have been cut off the end, and fails
the verification. --expect SEQ:HASH (repeatable) names a record whose hash
you noted somewhere the host cannot write (the "last hash" of an earlier
verification); the log must still hold that record with that hash.`,
		Example: fmt.Sprintf(`  kurer %[1]s audit verify --audit /var/lib/kurer/%[1]s/audit.log
  kurer %[1]s audit verify --audit /var/lib/kurer/%[1]s/audit.log \
    --expect 1042:b18fa857b88fa37855132afd6775cf98ec8436ab9f496464d144b1b7b9107e5a`, who),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			opts := audit.VerifyOptions{}
			seen := map[uint64]string{}
			for _, e := range expect {
				c, err := audit.ParseCheckpoint(e)
				if err != nil {
					return exitf(ExitUsage, "--expect: %v", err)
				}
				if h, ok := seen[c.Seq]; ok && h != c.Hash {
					return exitf(ExitUsage, "--expect: two different hashes for record %d", c.Seq)
				}
				seen[c.Seq] = c.Hash
				opts.Expect = append(opts.Expect, c)
			}
			rep, err := audit.VerifyWith(path, opts)
			if output == outputJSON {
				if werr := writeJSON(cmd.OutOrStdout(), map[string]any{"ok": err == nil, "report": rep}); werr != nil {
					return werr
				}
			}
			if err != nil {
				if errors.Is(err, audit.ErrTampered) || errors.Is(err, audit.ErrTornTail) {
					return &ExitErr{Code: ExitVerify, Err: fmt.Errorf("audit log %s: %v", path, err)}
				}
				return fmt.Errorf("audit log %s: %w", path, err)
			}
			if output != outputJSON {
				fmt.Fprintf(cmd.OutOrStdout(), "ok: %d records, chain intact, last hash %s\n", rep.Records, rep.LastHash)
				for _, c := range opts.Expect {
					fmt.Fprintf(cmd.OutOrStdout(), "expected: record %d has hash %s\n", c.Seq, c.Hash)
				}
			}
			return nil
		},
	}
	verify.Flags().StringVar(&path, "audit", "", "the audit log file")
	verify.Flags().StringArrayVar(&expect, "expect", nil, "SEQ:HASH of a record the log must hold with that hash (repeatable; e.g. the last hash of an earlier verification)")
	_ = verify.MarkFlagRequired("audit")
	registerOutput(verify, &output)
	cmd.AddCommand(verify)
	return cmd
}
