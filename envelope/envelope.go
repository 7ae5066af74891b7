// Package envelope seals and opens kurer envelopes: a signed ASiC-E container
// (ZIP with mimetype first, the payload files, META-INF/manifest.json and a
// detached CMS signature over the manifest in META-INF/signature.p7s),
// encrypted as CMS to one or more recipient certificates.
//
// Two encryption profiles exist. ProfileGCM (the default) is AuthEnvelopedData
// (RFC 5083) with AES-256-GCM (RFC 5084); ProfileFiks is EnvelopedData with
// AES-256-CBC, the profile Fiks IO and eFormidling use. Key transport is
// RSAES-OAEP with SHA-256 and MGF1-SHA-256 in both. The CMS encryption layer is
// written here (x/crypto/cryptobyte for the ASN.1) so that both sealing and
// opening stream: the encrypted content is a BER indefinite-length constructed
// OCTET STRING, and memory stays bounded whatever the payload size.
//
// Opening is strict and ordered (see DESIGN.md): decrypt to a spool file,
// check the GCM tag, check the signature chains to the configured roots at the
// time of checking, check the signer is the expected sender, check every
// file's size and SHA-256, check the manifest's binding to the routing header.
// Payload files appear in the output directory only after every check passed.
// All failures are *Error values with a Reason; outside the process they must
// all map to the one public code errs.InvalidEnvelope.
//
// The package does not log and knows no business schema.
package envelope

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"
)

// Profile selects the CMS content-encryption profile.
type Profile string

// Profiles.
const (
	// ProfileGCM is AuthEnvelopedData with AES-256-GCM (the default).
	ProfileGCM Profile = "gcm"
	// ProfileFiks is EnvelopedData with AES-256-CBC, as Fiks IO and eFormidling use.
	ProfileFiks Profile = "fiks"
)

// MimeType is the content of the container's first entry, "mimetype".
const MimeType = "application/vnd.etsi.asic-e+zip"

// Reserved container entry names.
const (
	ManifestName  = "META-INF/manifest.json"
	SignatureName = "META-INF/signature.p7s"
	mimetypeName  = "mimetype"
)

// File is one payload file to seal.
type File struct {
	// Name is the path in the container, '/' separated. It is NFC-normalised
	// by Seal and must pass the same name rules as Open enforces.
	Name string
	// MediaType is recorded in the manifest (optional).
	MediaType string
	// Size is the exact size in bytes; Seal fails if Open yields a different count.
	Size int64
	// Open returns the file's content; Seal closes it.
	Open func() (io.ReadCloser, error)
}

// FileEntry describes one payload file in the manifest.
type FileEntry struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"` // lowercase hex
	MediaType string `json:"media_type,omitempty"`
}

// Manifest is META-INF/manifest.json, the signed description of a message.
type Manifest struct {
	// ID is the message id (a UUID); Seal generates one when empty.
	ID string `json:"id"`
	// Type is the message type, e.g. "no.kurer.barnevern.melding.v1".
	Type string `json:"type"`
	// From and To are the sender and receiver account ids.
	From string `json:"from"`
	To   string `json:"to"`
	// Conversation groups related messages (optional).
	Conversation string `json:"conversation,omitempty"`
	// InReplyTo is the id of the message this one answers (optional).
	InReplyTo string `json:"in_reply_to,omitempty"`
	// Created is set by Seal (UTC, from SealOptions.Now) when zero.
	Created time.Time `json:"created"`
	// Expires is when the message should no longer be delivered (optional).
	Expires time.Time `json:"expires,omitzero"`
	// Headers are free-form string headers (optional).
	Headers map[string]string `json:"headers,omitempty"`
	// Files is filled by Seal: one entry per payload file, in container order.
	Files []FileEntry `json:"files"`
}

// SealOptions configures Seal.
type SealOptions struct {
	// Profile selects the encryption profile; empty means ProfileGCM.
	Profile Profile
	// Signer signs the manifest (RSA: PKCS#1 v1.5 SHA-256; ECDSA P-256: SHA-256).
	Signer crypto.Signer
	// SignerCert is the certificate of Signer; it is embedded in the signature.
	SignerCert *x509.Certificate
	// SignerChain are intermediates embedded after SignerCert (optional).
	SignerChain []*x509.Certificate
	// Recipients are the receiver's RSA certificates (1..n, e.g. during rotation).
	Recipients []*x509.Certificate
	// Rand is the randomness source; nil means crypto/rand.
	Rand io.Reader
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// TempDir is accepted for symmetry with OpenOptions. Sealing streams from
	// the files straight to dst (the manifest follows the payload in the
	// container), so Seal never needs a temporary file and ignores it.
	TempDir string
	// Limits are checked before sealing so that Seal never produces an
	// envelope a receiver with the same limits refuses; zero means DefaultLimits.
	Limits Limits
}

// Key is one private key able to open envelopes, with its certificate (used
// to find the matching recipient entry).
type Key struct {
	Cert      *x509.Certificate
	Decrypter crypto.Decrypter
}

// Binding is what the routing header says about a message; Open checks the
// signed manifest agrees. Empty fields are not checked.
type Binding struct {
	ID, Type, From, To string
}

// OpenOptions configures Open.
type OpenOptions struct {
	// Keys are the receiver's private keys; any of them may open (rotation).
	Keys []Key
	// Roots are the trust roots the signer must chain to (required).
	Roots *x509.CertPool
	// SenderCerts, when non-empty, are the sender account's registered
	// certificates; the signer must be one of them.
	SenderCerts []*x509.Certificate
	// Expect is the routing header the manifest must match.
	Expect Binding
	// Limits for untrusted input; zero fields take DefaultLimits values.
	Limits Limits
	// Now is the clock for the chain check; nil means time.Now.
	Now func() time.Time
	// TempDir holds the plaintext spool file; empty means the parent
	// directory of outDir (same filesystem and protection as the output).
	TempDir string
	// Sync fsyncs the extracted files and directories before Open returns,
	// for callers that promise durability (the agent's inbox). Default false.
	Sync bool

	// spoolHook, when set, wraps the reads of the spool file: the
	// package's tests inject disk faults with it.
	spoolHook func(io.ReaderAt) io.ReaderAt
}

// Opened is the result of a successful Open.
type Opened struct {
	Manifest *Manifest
	// ManifestBytes are the exact signed bytes of META-INF/manifest.json.
	ManifestBytes []byte
	// Signature is META-INF/signature.p7s (DER), kept for receipts and audit.
	Signature []byte
	// SignerCert is the certificate that signed the manifest.
	SignerCert *x509.Certificate
	// Dir is the output directory holding the payload files.
	Dir string
	// Files are the manifest's file entries, as written to Dir.
	Files []FileEntry
}

// Limits bound what Open accepts from untrusted bytes (and what Seal
// produces). Zero fields take the DefaultLimits value.
type Limits struct {
	// MaxEnvelope is the largest encrypted envelope in bytes (default 4 GiB).
	MaxEnvelope int64
	// MaxTotal is the largest total uncompressed payload in bytes (default 4 GiB).
	MaxTotal int64
	// MaxFiles is the most payload files (default 10000).
	MaxFiles int
	// MaxNameLen is the longest file name in bytes (default 255).
	MaxNameLen int
	// MaxManifest is the largest manifest.json in bytes (default 4 MiB).
	MaxManifest int
	// MaxSignature is the largest signature.p7s in bytes (default 256 KiB).
	MaxSignature int
	// MaxASN1Depth is the deepest ASN.1 nesting parsed (default 24).
	MaxASN1Depth int
	// MaxRatio is the largest uncompressed/compressed ratio of one
	// compressed container entry above 64 KiB (default 200).
	MaxRatio int64
	// MaxRecipients is the most recipient entries in the CMS header (default 32).
	MaxRecipients int
}

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{
		MaxEnvelope:   4 << 30,
		MaxTotal:      4 << 30,
		MaxFiles:      10000,
		MaxNameLen:    255,
		MaxManifest:   4 << 20,
		MaxSignature:  256 << 10,
		MaxASN1Depth:  24,
		MaxRatio:      200,
		MaxRecipients: 32,
	}
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxEnvelope <= 0 {
		l.MaxEnvelope = d.MaxEnvelope
	}
	if l.MaxTotal <= 0 {
		l.MaxTotal = d.MaxTotal
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxNameLen <= 0 {
		l.MaxNameLen = d.MaxNameLen
	}
	if l.MaxManifest <= 0 {
		l.MaxManifest = d.MaxManifest
	}
	if l.MaxSignature <= 0 {
		l.MaxSignature = d.MaxSignature
	}
	if l.MaxASN1Depth <= 0 {
		l.MaxASN1Depth = d.MaxASN1Depth
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = d.MaxRatio
	}
	if l.MaxRecipients <= 0 {
		l.MaxRecipients = d.MaxRecipients
	}
	return l
}

// Reason classifies why an envelope was refused. Reasons are for logs and
// callers inside the process; outsiders see errs.InvalidEnvelope only.
type Reason string

// Reasons.
const (
	ReasonDecrypt   Reason = "decrypt"   // no usable key, or the content did not decrypt (uniform, no oracle)
	ReasonTag       Reason = "tag"       // the GCM authentication tag did not verify
	ReasonSignature Reason = "signature" // the manifest signature is missing, malformed or invalid
	ReasonChain     Reason = "chain"     // the signer does not chain to a trust root at the time of checking
	ReasonSigner    Reason = "signer"    // the signer is not one of the expected sender certificates
	ReasonDigest    Reason = "digest"    // a payload file's size or SHA-256 differs from the manifest
	ReasonBinding   Reason = "binding"   // the manifest disagrees with the routing header
	ReasonLimits    Reason = "limits"    // a size, count, depth or ratio limit was exceeded
	ReasonFormat    Reason = "format"    // malformed CMS, ZIP or manifest, or an unsupported algorithm
	ReasonNames     Reason = "names"     // a file name is unsafe, not NFC, or duplicated
	ReasonUsage     Reason = "usage"     // the caller's options are unusable (Seal/Open arguments)
	ReasonIO        Reason = "io"        // reading the source or writing output failed
)

// Error is the error type of Seal, Open, Inspect and VerifySignature.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return string(e.Reason)
	}
	return string(e.Reason) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of err if it is (or wraps) an *Error, else "".
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func fail(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

// wrapErr keeps an existing *Error, or classifies err with r.
func wrapErr(r Reason, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Reason: r, Err: err}
}

func now(f func() time.Time) time.Time {
	if f != nil {
		return f()
	}
	return time.Now()
}
