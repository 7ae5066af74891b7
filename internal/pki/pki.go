// Package pki holds the small X.509 toolkit kurer shares between the gateway,
// the agent and the envelope tooling: a development CA, account certificates,
// PEM loading of keys and certificates, and the trust-root policy that refuses
// the development CA unless a process is explicitly started in dev mode.
//
// Keys are handled as crypto.Signer so that an HSM-backed key can replace a
// file-backed one later. Randomness and clock are injectable (Options) so tests
// can build deterministic PKIs in memory.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// KeyType names the key algorithm of a generated key.
type KeyType string

// Supported key types.
const (
	RSA3072   KeyType = "rsa3072"
	ECDSAP256 KeyType = "ecdsa-p256"
)

// DevMarker is put in the Organization of every certificate the dev CA issues
// and in the CA's own subject, so that production code can recognise and
// refuse dev material.
const DevMarker = "kurer DEV ONLY - not for production"

// ErrDevCA is returned when a trust root is the development CA and the process
// was not started with the explicit dev flag.
var ErrDevCA = errors.New("the development CA is refused outside dev mode (start with --dev to allow it)")

// Options makes generation deterministic for tests. Zero values use
// crypto/rand and time.Now.
type Options struct {
	Rand io.Reader
	Now  func() time.Time
}

func (o Options) rand() io.Reader {
	if o.Rand != nil {
		return o.Rand
	}
	return rand.Reader
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// GenerateKey creates a private key of the given type.
func GenerateKey(kt KeyType, o Options) (crypto.Signer, error) {
	switch kt {
	case RSA3072, "":
		return rsa.GenerateKey(o.rand(), 3072)
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), o.rand())
	case "rsa2048": // tests only: fast; never offered on the CLI
		return rsa.GenerateKey(o.rand(), 2048)
	default:
		return nil, fmt.Errorf("unknown key type %q (want %s or %s)", kt, RSA3072, ECDSAP256)
	}
}

// CA is a certificate authority able to issue account certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewDevCA creates a self-signed development CA valid for ten years.
func NewDevCA(kt KeyType, o Options) (*CA, error) {
	return NewCA("kurer dev CA", DevMarker, 10, kt, o)
}

// NewCA creates a self-signed CA with common name cn and organisation org,
// valid for years (from an hour ago). Only an org of DevMarker makes it a
// development CA.
func NewCA(cn, org string, years int, kt KeyType, o Options) (*CA, error) {
	key, err := GenerateKey(kt, o)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := o.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(o),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{org}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(years, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(key.Public()),
	}
	der, err := x509.CreateCertificate(o.rand(), tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LeafRequest describes a certificate to issue.
type LeafRequest struct {
	// CommonName is the subject CN, e.g. the account name "oslo".
	CommonName string
	// Organization, when empty, defaults to DevMarker for a dev CA.
	Organization string
	// SerialNumberAttr goes to the subject serialNumber (e.g. the org number).
	SerialNumberAttr string
	// DNSNames and IPs make the certificate usable as a TLS server certificate.
	DNSNames []string
	IPs      []net.IP
	// NotBefore and NotAfter default to now-1h and now+2 years.
	NotBefore, NotAfter time.Time
	// KeyType of the generated key; default RSA3072.
	KeyType KeyType
	// Key, when set, is certified instead of generating a new one.
	Key crypto.Signer
}

// Issue creates a key (unless req.Key is set) and a certificate signed by ca.
// The certificate allows digital signatures, key encipherment (RSA), both
// TLS client and server authentication, and signing CMS (extended key usage
// emailProtection, which OpenSSL's default S/MIME purpose asks for, so that
// `openssl cms -verify` checks an envelope's signature as it is).
func (ca *CA) Issue(req LeafRequest, o Options) (*x509.Certificate, crypto.Signer, error) {
	key := req.Key
	if key == nil {
		var err error
		if key, err = GenerateKey(req.KeyType, o); err != nil {
			return nil, nil, fmt.Errorf("generate key: %w", err)
		}
	}
	now := o.now()
	nb, na := req.NotBefore, req.NotAfter
	if nb.IsZero() {
		nb = now.Add(-time.Hour)
	}
	if na.IsZero() {
		na = now.AddDate(2, 0, 0)
	}
	org := req.Organization
	if org == "" && IsDev(ca.Cert) {
		org = DevMarker
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := key.Public().(*rsa.PublicKey); ok {
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial(o),
		Subject:        pkix.Name{CommonName: req.CommonName, SerialNumber: req.SerialNumberAttr},
		NotBefore:      nb,
		NotAfter:       na,
		KeyUsage:       usage,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageEmailProtection},
		DNSNames:       req.DNSNames,
		IPAddresses:    req.IPs,
		SubjectKeyId:   keyID(key.Public()),
		AuthorityKeyId: ca.Cert.SubjectKeyId,
	}
	if org != "" {
		tmpl.Subject.Organization = []string{org}
	}
	der, err := x509.CreateCertificate(o.rand(), tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// IsDev reports whether cert was issued by (or is) the kurer dev CA.
func IsDev(cert *x509.Certificate) bool {
	for _, o := range cert.Subject.Organization {
		if o == DevMarker {
			return true
		}
	}
	for _, o := range cert.Issuer.Organization {
		if o == DevMarker {
			return true
		}
	}
	return false
}

// TrustPool builds a pool from roots and refuses dev roots unless dev is true.
func TrustPool(roots []*x509.Certificate, dev bool) (*x509.CertPool, error) {
	if len(roots) == 0 {
		return nil, errors.New("no trust roots configured")
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		if IsDev(r) && !dev {
			return nil, ErrDevCA
		}
		pool.AddCert(r)
	}
	return pool, nil
}

// VerifyAt checks that cert chains to roots at time t, for any extended key
// usage. intermediates may be nil.
func VerifyAt(cert *x509.Certificate, roots *x509.CertPool, intermediates []*x509.Certificate, t time.Time) error {
	var inter *x509.CertPool
	if len(intermediates) > 0 {
		inter = x509.NewCertPool()
		for _, c := range intermediates {
			inter.AddCert(c)
		}
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   t,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

// Fingerprint is the hex SHA-256 of the certificate's DER, the id kurer uses
// for a certificate in the catalog, in logs and in pinning.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return fmt.Sprintf("%x", sum[:])
}

// EncodeCertPEM returns the PEM encoding of certs.
func EncodeCertPEM(certs ...*x509.Certificate) []byte {
	var b strings.Builder
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return []byte(b.String())
}

// EncodeKeyPEM returns the PKCS#8 PEM encoding of key.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertsPEM parses every CERTIFICATE block in data.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// ParseKeyPEM parses a PKCS#8, PKCS#1 or SEC 1 private key in PEM.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key found")
		}
		var (
			k   any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("private key type not supported")
		}
		return s, nil
	}
}

// LoadCerts reads every certificate in a PEM file.
func LoadCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	certs, err := ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// LoadCert reads the first certificate in a PEM file.
func LoadCert(path string) (*x509.Certificate, error) {
	certs, err := LoadCerts(path)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// LoadKey reads a private key from a PEM file.
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	k, err := ParseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// KeyMatches reports whether key is the private half of cert.
func KeyMatches(key crypto.Signer, cert *x509.Certificate) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	return ok && pub.Equal(cert.PublicKey)
}

func serial(o Options) *big.Int {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(o.rand(), limit)
	if err != nil {
		n = big.NewInt(o.now().UnixNano())
	}
	return n.Add(n, big.NewInt(1))
}

func keyID(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(der)
	return sum[:20]
}
