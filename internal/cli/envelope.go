package cli

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/internal/pki"
)

// newEnvelopeCommand builds `kurer envelope` with seal, open and inspect.
func newEnvelopeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "envelope",
		Short: "Seal, open and inspect envelopes (signed ASiC-E containers, CMS-encrypted)",
		Long: `An envelope is a signed ASiC-E container (files + META-INF/manifest.json +
META-INF/signature.p7s) encrypted as CMS to the receiver's certificate(s).
See docs/envelope.md for the format. OpenSSL opens them:

  openssl cms -decrypt -binary -inform DER -in FILE -recip CERT -inkey KEY -out container.zip`,
	}
	cmd.AddCommand(newEnvelopeSealCommand(), newEnvelopeOpenCommand(), newEnvelopeInspectCommand())
	return cmd
}

type envelopeSealOptions struct {
	msgType, from, to        string
	id, conversation, inRepl string
	expires                  string
	headers                  map[string]string
	signCert, signKey        string
	toCerts                  []string
	profile                  string
	out                      string
}

func newEnvelopeSealCommand() *cobra.Command {
	var o envelopeSealOptions
	cmd := &cobra.Command{
		Use:   "seal --type T --from ID --to ID --sign-cert C --sign-key K --to-cert C --out FILE PATH...",
		Short: "Sign files and encrypt them to the receiver",
		Long: `Seal files into an envelope. A folder contributes every file below it under
its path relative to the folder; a single file is stored under its base name.
The envelope is written to a temporary file beside --out and renamed into
place, so --out never holds a partial envelope.`,
		Example: `  kurer envelope seal --type no.kurer.barnevern.melding.v1 --from $OSLO --to $TRONDHEIM \
    --sign-cert certs-dev/oslo.pem --sign-key certs-dev/oslo.key \
    --to-cert certs-dev/trondheim.pem --out sak.kenv ./sak/`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runEnvelopeSeal(cmd, o, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.msgType, "type", "", "message type (required)")
	f.StringVar(&o.from, "from", "", "sender account id (required)")
	f.StringVar(&o.to, "to", "", "receiver account id (required)")
	f.StringVar(&o.id, "id", "", "message id (UUID; default: a new random UUID)")
	f.StringVar(&o.conversation, "conversation", "", "conversation id (optional)")
	f.StringVar(&o.inRepl, "in-reply-to", "", "id of the message this one answers (optional)")
	f.StringVar(&o.expires, "expires", "", "expiry: a duration from now (e.g. 72h) or an RFC 3339 time (optional)")
	f.StringToStringVar(&o.headers, "header", nil, "manifest header KEY=VALUE (repeatable)")
	f.StringVar(&o.signCert, "sign-cert", "", "PEM certificate of the signing key (required)")
	f.StringVar(&o.signKey, "sign-key", "", "PEM private key to sign with, RSA or ECDSA P-256 (required)")
	f.StringArrayVar(&o.toCerts, "to-cert", nil, "PEM certificate of the receiver (repeatable: every certificate can open)")
	f.StringVar(&o.profile, "profile", string(envelope.ProfileGCM), "encryption profile: gcm (AES-256-GCM) or fiks (AES-256-CBC)")
	f.StringVar(&o.out, "out", "", "envelope file to write (required)")
	for _, n := range []string{"type", "from", "to", "sign-cert", "sign-key", "to-cert", "out"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func runEnvelopeSeal(cmd *cobra.Command, o envelopeSealOptions, paths []string) error {
	p := envelope.Profile(o.profile)
	if p != envelope.ProfileGCM && p != envelope.ProfileFiks {
		return exitf(ExitUsage, "--profile %q: want gcm or fiks", o.profile)
	}
	if o.id != "" {
		if _, err := uuid.Parse(o.id); err != nil {
			return exitf(ExitUsage, "--id %q: want a UUID", o.id)
		}
	}
	m := &envelope.Manifest{ID: o.id, Type: o.msgType, From: o.from, To: o.to,
		Conversation: o.conversation, InReplyTo: o.inRepl, Headers: o.headers}
	if o.expires != "" {
		if d, err := time.ParseDuration(o.expires); err == nil {
			if d <= 0 {
				return exitf(ExitUsage, "--expires %q: must be in the future", o.expires)
			}
			m.Expires = time.Now().Add(d).UTC().Truncate(time.Second)
		} else if t, err := time.Parse(time.RFC3339, o.expires); err == nil {
			m.Expires = t.UTC()
		} else {
			return exitf(ExitUsage, "--expires %q: want a duration (72h) or an RFC 3339 time", o.expires)
		}
	}
	signer, err := pki.LoadKey(o.signKey)
	if err != nil {
		return exitf(ExitUsage, "--sign-key: %v", err)
	}
	signCerts, err := pki.LoadCerts(o.signCert)
	if err != nil {
		return exitf(ExitUsage, "--sign-cert: %v", err)
	}
	if !pki.KeyMatches(signer, signCerts[0]) {
		return exitf(ExitUsage, "--sign-key does not belong to --sign-cert")
	}
	var recips []*x509.Certificate
	for _, c := range o.toCerts {
		cert, err := pki.LoadCert(c)
		if err != nil {
			return exitf(ExitUsage, "--to-cert: %v", err)
		}
		recips = append(recips, cert)
	}
	files, err := envelope.FilesFromPaths(paths...)
	if err != nil {
		return exitf(ExitUsage, "%v", err)
	}
	dir := filepath.Dir(o.out)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(o.out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	err = envelope.Seal(cmd.Context(), tmp, m, files, envelope.SealOptions{
		Profile: p, Signer: signer, SignerCert: signCerts[0], SignerChain: signCerts[1:], Recipients: recips,
	})
	if err != nil {
		if envelope.ReasonOf(err) == envelope.ReasonUsage || envelope.ReasonOf(err) == envelope.ReasonNames || envelope.ReasonOf(err) == envelope.ReasonLimits {
			return &ExitErr{Code: ExitUsage, Err: err}
		}
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	if err := os.Rename(tmp.Name(), o.out); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	var total int64
	for _, f := range m.Files {
		total += f.Size
	}
	fmt.Fprintf(cmd.OutOrStdout(), "sealed %s: %d file(s), %d bytes, profile %s, to %d certificate(s) -> %s\n",
		m.ID, len(m.Files), total, p, len(recips), o.out)
	return nil
}

type envelopeOpenOptions struct {
	certs, keys []string
	trust       []string
	senderCerts []string
	expect      envelope.Binding
	dev         bool
	out         string
	output      string
}

func newEnvelopeOpenCommand() *cobra.Command {
	var o envelopeOpenOptions
	cmd := &cobra.Command{
		Use: "open --cert C --key K --trust CA --out DIR FILE",
		Example: `  kurer envelope open --cert certs-dev/oslo.pem --key certs-dev/oslo.key --trust certs-dev/ca.pem --dev \
    --sender-cert certs-dev/trondheim.pem --out received/ case.kenv`,
		Short: "Decrypt and verify an envelope; extract its files only if every check passes",
		Long: `Open an envelope: decrypt it with any of the given keys (--cert/--key pairs,
in order; several for key rotation), check the GCM tag, the signature chain to
--trust at the time of checking, the signer against --sender-cert, every
file's size and SHA-256, and the manifest against --expect-*. Files appear in
--out (absent or empty) only if every check passed.

Exit 0: opened and verified. Exit 3: the envelope failed a check (the reason
is printed). Exit 2: bad flags (a dev CA given to --trust without --dev is
refused).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runEnvelopeOpen(cmd, o, args[0])
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.certs, "cert", nil, "PEM certificate of a decryption key (repeatable, paired with --key in order)")
	f.StringArrayVar(&o.keys, "key", nil, "PEM private key (repeatable, paired with --cert in order)")
	f.StringArrayVar(&o.trust, "trust", nil, "PEM trust root(s) the signer must chain to (repeatable)")
	f.StringArrayVar(&o.senderCerts, "sender-cert", nil, "PEM certificate(s) of the sender; the signer must be one of them (repeatable)")
	f.StringVar(&o.expect.ID, "expect-id", "", "message id the manifest must carry")
	f.StringVar(&o.expect.Type, "expect-type", "", "message type the manifest must carry")
	f.StringVar(&o.expect.From, "expect-from", "", "sender account id the manifest must carry")
	f.StringVar(&o.expect.To, "expect-to", "", "receiver account id the manifest must carry")
	f.BoolVar(&o.dev, "dev", false, "accept the kurer development CA as a trust root")
	f.StringVar(&o.out, "out", "", "output directory, absent or empty (required)")
	f.StringVar(&o.output, "output", "text", "output format: text or json")
	for _, n := range []string{"cert", "key", "trust", "out"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func runEnvelopeOpen(cmd *cobra.Command, o envelopeOpenOptions, file string) error {
	if o.output != "text" && o.output != "json" {
		return exitf(ExitUsage, "--output %q: want text or json", o.output)
	}
	if len(o.certs) != len(o.keys) {
		return exitf(ExitUsage, "give --cert and --key in pairs (%d --cert, %d --key)", len(o.certs), len(o.keys))
	}
	var keys []envelope.Key
	for i := range o.keys {
		k, err := pki.LoadKey(o.keys[i])
		if err != nil {
			return exitf(ExitUsage, "--key: %v", err)
		}
		c, err := pki.LoadCert(o.certs[i])
		if err != nil {
			return exitf(ExitUsage, "--cert: %v", err)
		}
		if !pki.KeyMatches(k, c) {
			return exitf(ExitUsage, "--key %s does not belong to --cert %s", o.keys[i], o.certs[i])
		}
		d, ok := k.(crypto.Decrypter)
		if !ok {
			return exitf(ExitUsage, "--key %s cannot decrypt", o.keys[i])
		}
		keys = append(keys, envelope.Key{Cert: c, Decrypter: d})
	}
	var roots []*x509.Certificate
	for _, t := range o.trust {
		cs, err := pki.LoadCerts(t)
		if err != nil {
			return exitf(ExitUsage, "--trust: %v", err)
		}
		roots = append(roots, cs...)
	}
	pool, err := pki.TrustPool(roots, o.dev)
	if err != nil {
		return exitf(ExitUsage, "--trust: %v", err)
	}
	var senders []*x509.Certificate
	for _, s := range o.senderCerts {
		cs, err := pki.LoadCerts(s)
		if err != nil {
			return exitf(ExitUsage, "--sender-cert: %v", err)
		}
		senders = append(senders, cs...)
	}
	src, err := os.Open(file)
	if err != nil {
		return exitf(ExitUsage, "open %s: %v", file, err)
	}
	defer src.Close()
	res, err := envelope.Open(cmd.Context(), src, o.out, envelope.OpenOptions{
		Keys: keys, Roots: pool, SenderCerts: senders, Expect: o.expect,
	})
	if err != nil {
		return envelopeExit(err)
	}
	w := cmd.OutOrStdout()
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Manifest *envelope.Manifest `json:"manifest"`
			Signer   string             `json:"signer"`
			SignerFP string             `json:"signer_sha256"`
			Dir      string             `json:"dir"`
		}{res.Manifest, res.SignerCert.Subject.String(), pki.Fingerprint(res.SignerCert), res.Dir})
	}
	m := res.Manifest
	fmt.Fprintf(w, "opened %s: every check passed\n", m.ID)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "type\t%s\nfrom\t%s\nto\t%s\ncreated\t%s\n", m.Type, m.From, m.To, m.Created.Format(time.RFC3339))
	if !m.Expires.IsZero() {
		fmt.Fprintf(tw, "expires\t%s\n", m.Expires.Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "signer\t%s (sha256 %s)\n", res.SignerCert.Subject.String(), pki.Fingerprint(res.SignerCert))
	fmt.Fprintf(tw, "files\t%d in %s\n", len(res.Files), res.Dir)
	for _, f := range res.Files {
		fmt.Fprintf(tw, "  %s\t%d bytes\tsha256 %s\n", f.Name, f.Size, f.SHA256)
	}
	return tw.Flush()
}

// envelopeExit maps an envelope error to an exit code: a failed check is
// ExitVerify, a bad argument ExitUsage, anything else ExitError.
func envelopeExit(err error) error {
	switch envelope.ReasonOf(err) {
	case "", envelope.ReasonIO:
		return err
	case envelope.ReasonUsage:
		return &ExitErr{Code: ExitUsage, Err: err}
	default:
		return &ExitErr{Code: ExitVerify, Err: err}
	}
}

type envelopeInspectOptions struct {
	output string
}

func newEnvelopeInspectCommand() *cobra.Command {
	var o envelopeInspectOptions
	cmd := &cobra.Command{
		Use: "inspect FILE",
		Example: `  kurer envelope inspect case.kenv
  kurer envelope inspect case.kenv --output json`,
		Short: "Show an envelope's recipients, algorithms and sizes (no key needed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runEnvelopeInspect(cmd.OutOrStdout(), o, args[0])
		},
	}
	cmd.Flags().StringVar(&o.output, "output", "text", "output format: text or json")
	return cmd
}

func runEnvelopeInspect(w io.Writer, o envelopeInspectOptions, file string) error {
	if o.output != "text" && o.output != "json" {
		return exitf(ExitUsage, "--output %q: want text or json", o.output)
	}
	f, err := os.Open(file)
	if err != nil {
		return exitf(ExitUsage, "open %s: %v", file, err)
	}
	defer f.Close()
	info, err := envelope.Inspect(f)
	if err != nil {
		return envelopeExit(err)
	}
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "profile\t%s (%s, version %d)\n", info.Profile, info.ContentType, info.Version)
	enc := info.ContentEncryption
	if info.TagSize > 0 {
		enc += fmt.Sprintf(", %d-byte nonce, %d-byte tag", info.IVSize, info.TagSize)
	} else {
		enc += fmt.Sprintf(", %d-byte IV", info.IVSize)
	}
	fmt.Fprintf(tw, "content encryption\t%s\n", enc)
	fmt.Fprintf(tw, "encrypted content\t%d bytes\n", info.EncryptedSize)
	fmt.Fprintf(tw, "envelope\t%d bytes\n", info.EnvelopeSize)
	for i, r := range info.Recipients {
		id := "issuer " + r.Issuer + ", serial " + r.Serial
		if r.SKI != "" {
			id = "subject key id " + r.SKI
		}
		alg := r.KeyEncryption
		if r.OAEPHash != "" {
			alg += fmt.Sprintf(" (%s, mgf1-%s)", r.OAEPHash, r.MGF1Hash)
		}
		fmt.Fprintf(tw, "recipient %d\t%s\n\t%s, %d-byte key\n", i+1, id, alg, r.EncryptedKeySize)
	}
	if info.OtherRecipients > 0 {
		fmt.Fprintf(tw, "other recipients\t%d (not key transport)\n", info.OtherRecipients)
	}
	return tw.Flush()
}
