package cli

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kurer/kurer/internal/pki"
)

// Files dev-certs writes besides NAME.pem and NAME.key per account.
const (
	devCACert          = "ca.pem"
	devCAKey           = "ca.key"
	devGatewayCert     = "gateway.pem"
	devGatewayKey      = "gateway.key"
	devGatewaySignCert = "gateway-signing.pem"
	devGatewaySignKey  = "gateway-signing.key"
)

// devAccountName is what an account name may look like: it becomes a file
// name and a certificate CN.
var devAccountName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// devReservedNames are the file stems dev-certs uses itself.
var devReservedNames = map[string]bool{"ca": true, "gateway": true, "gateway-signing": true}

type devCertsOptions struct {
	out          string
	accounts     []string
	keyType      string
	gatewayHosts []string
	force        bool
}

// newDevCertsCommand builds `kurer dev-certs`.
func newDevCertsCommand() *cobra.Command {
	var o devCertsOptions
	cmd := &cobra.Command{
		Use:   "dev-certs --out DIR [--accounts NAME,...]",
		Short: "Generate a development CA, account certificates and gateway keys (DEV ONLY)",
		Long: `Generate a throw-away PKI for development, tests and the demo:

  DIR/ca.pem, DIR/ca.key                    the dev CA
  DIR/NAME.pem, DIR/NAME.key                one per --accounts name (RSA: accounts decrypt)
  DIR/gateway.pem, DIR/gateway.key          gateway TLS server certificate for localhost,
                                            127.0.0.1, ::1 and every --gateway-host
  DIR/gateway-signing.pem, .key             ECDSA P-256 key (and certificate) the gateway
                                            signs its receipts and notices with

Every certificate carries the marker "` + pki.DevMarker + `";
kurer refuses it as a trust root unless started with --dev. Keys are written
with mode 0600. Existing files are never overwritten without --force.

--key-type applies to the CA and the gateway TLS certificate. Accounts always
get RSA-3072 keys, because envelopes are encrypted to them with RSA-OAEP;
asking for --key-type ecdsa-p256 together with --accounts is refused.`,
		Example: `  kurer dev-certs --out certs-dev --accounts oslo,bergen
  kurer dev-certs --out /tmp/pki --key-type ecdsa-p256 --gateway-host gw.test,10.0.0.5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDevCerts(cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.out, "out", "", "directory to write to (created if missing; required)")
	f.StringSliceVar(&o.accounts, "accounts", nil, "account names, comma-separated (lowercase letters, digits, '-')")
	f.StringVar(&o.keyType, "key-type", string(pki.RSA3072), "key type of the CA and the gateway TLS certificate: rsa3072 or ecdsa-p256")
	f.StringSliceVar(&o.gatewayHosts, "gateway-host", nil, "extra DNS names or IP addresses for the gateway TLS certificate, comma-separated")
	f.BoolVar(&o.force, "force", false, "overwrite existing files")
	return cmd
}

// devFile is one file to write.
type devFile struct {
	name   string
	data   []byte
	secret bool // private key: mode 0600
}

func runDevCerts(w io.Writer, o devCertsOptions) error {
	if o.out == "" {
		return exitf(ExitUsage, "--out DIR is required")
	}
	kt := pki.KeyType(o.keyType)
	if kt != pki.RSA3072 && kt != pki.ECDSAP256 {
		return exitf(ExitUsage, "--key-type %q: want %s or %s", o.keyType, pki.RSA3072, pki.ECDSAP256)
	}
	if kt != pki.RSA3072 && len(o.accounts) > 0 {
		return exitf(ExitUsage, "--key-type %s cannot be used for accounts: envelopes are encrypted to account keys with RSA-OAEP, so accounts need %s (see docs/decisions/2026-11-23-dev-pki.md)", kt, pki.RSA3072)
	}
	seen := map[string]bool{}
	for _, a := range o.accounts {
		switch {
		case !devAccountName.MatchString(a):
			return exitf(ExitUsage, "account name %q: use 1-63 lowercase letters, digits or '-', starting with a letter or digit", a)
		case devReservedNames[a]:
			return exitf(ExitUsage, "account name %q is reserved for dev-certs' own files", a)
		case seen[a]:
			return exitf(ExitUsage, "account %q given twice", a)
		}
		seen[a] = true
	}
	dnsNames, ips := []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, h := range o.gatewayHosts {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(h); {
		case h == "":
			return exitf(ExitUsage, "--gateway-host: empty name")
		case ip != nil:
			ips = append(ips, ip)
		default:
			dnsNames = append(dnsNames, h)
		}
	}

	names := []string{devCACert, devCAKey, devGatewayCert, devGatewayKey, devGatewaySignCert, devGatewaySignKey}
	for _, a := range o.accounts {
		names = append(names, a+".pem", a+".key")
	}
	if !o.force {
		var exist []string
		for _, n := range names {
			if _, err := os.Lstat(filepath.Join(o.out, n)); err == nil {
				exist = append(exist, n)
			} else if !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("dev-certs: %w", err)
			}
		}
		if len(exist) > 0 {
			return exitf(ExitUsage, "%s already has %s; use --force to overwrite", o.out, strings.Join(exist, ", "))
		}
	}

	ca, err := pki.NewDevCA(kt, pki.Options{})
	if err != nil {
		return err
	}
	var files []devFile
	add := func(stem string, cert *x509.Certificate, key crypto.Signer) error {
		kp, err := pki.EncodeKeyPEM(key)
		if err != nil {
			return err
		}
		files = append(files,
			devFile{name: stem + ".pem", data: pki.EncodeCertPEM(cert)},
			devFile{name: stem + ".key", data: kp, secret: true})
		return nil
	}
	if err := add("ca", ca.Cert, ca.Key); err != nil {
		return err
	}
	for _, a := range o.accounts {
		cert, key, err := ca.Issue(pki.LeafRequest{CommonName: a, KeyType: pki.RSA3072}, pki.Options{})
		if err != nil {
			return fmt.Errorf("issue %s: %w", a, err)
		}
		if err := add(a, cert, key); err != nil {
			return err
		}
	}
	gw, gwKey, err := ca.Issue(pki.LeafRequest{CommonName: "kurer gateway", DNSNames: dnsNames, IPs: ips, KeyType: kt}, pki.Options{})
	if err != nil {
		return fmt.Errorf("issue gateway TLS certificate: %w", err)
	}
	if err := add("gateway", gw, gwKey); err != nil {
		return err
	}
	signKey, err := pki.GenerateKey(pki.ECDSAP256, pki.Options{})
	if err != nil {
		return err
	}
	sign, _, err := ca.Issue(pki.LeafRequest{CommonName: "kurer gateway receipts", Key: signKey}, pki.Options{})
	if err != nil {
		return fmt.Errorf("issue gateway signing certificate: %w", err)
	}
	if err := add("gateway-signing", sign, signKey); err != nil {
		return err
	}

	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("dev-certs: %w", err)
	}
	for _, f := range files {
		if err := writeDevFile(filepath.Join(o.out, f.name), f.data, f.secret, o.force); err != nil {
			return err
		}
	}

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "DEV ONLY - never use these in production\n")
	fmt.Fprintf(tw, "file\tsubject\tsha256 fingerprint\n")
	for _, c := range []struct {
		file string
		cert *x509.Certificate
	}{{devCACert, ca.Cert}, {devGatewayCert, gw}, {devGatewaySignCert, sign}} {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", filepath.Join(o.out, c.file), c.cert.Subject.CommonName, pki.Fingerprint(c.cert))
	}
	for _, a := range o.accounts {
		cert, err := pki.LoadCert(filepath.Join(o.out, a+".pem"))
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", filepath.Join(o.out, a+".pem"), a, pki.Fingerprint(cert))
	}
	return tw.Flush()
}

// writeDevFile creates path with mode 0600 (keys) or 0644 (certificates).
// With force an existing file is removed first, so that an old file's
// looser mode is not kept.
func writeDevFile(path string, data []byte, secret, force bool) error {
	mode := os.FileMode(0o644)
	if secret {
		mode = 0o600
	}
	if force {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("dev-certs: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("dev-certs: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("dev-certs: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("dev-certs: write %s: %w", path, err)
	}
	return f.Close()
}
