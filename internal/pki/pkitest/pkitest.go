// Package pkitest builds throw-away PKIs in memory for tests: a dev CA and
// account certificates with RSA keys (2048 bits, so tests stay fast) or ECDSA
// P-256 keys, written to a temp dir when a test needs files.
package pkitest

import (
	"crypto"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/internal/pki"
)

// Account is one issued identity.
type Account struct {
	Name string
	Cert *x509.Certificate
	Key  crypto.Signer
	// CertFile and KeyFile are set by WriteFiles.
	CertFile, KeyFile string
}

// PKI is a dev CA with its issued accounts.
type PKI struct {
	CA       *pki.CA
	Pool     *x509.CertPool
	Accounts map[string]*Account
	// CAFile is set by WriteFiles.
	CAFile string
}

var (
	keyMu    sync.Mutex
	keyCache []crypto.Signer
)

// rsaKey hands out pre-generated 2048-bit keys, generating more on demand, so
// that a test process pays for each key once. Index i is stable per call order
// only within one PKI; keys are never shared between accounts of one PKI.
func rsaKey(tb testing.TB, i int) crypto.Signer {
	tb.Helper()
	keyMu.Lock()
	defer keyMu.Unlock()
	for len(keyCache) <= i {
		k, err := pki.GenerateKey("rsa2048", pki.Options{})
		if err != nil {
			tb.Fatalf("generate key: %v", err)
		}
		keyCache = append(keyCache, k)
	}
	return keyCache[i]
}

// New builds a dev CA and one RSA account per name. Account certificates are
// also valid as TLS server certificates for 127.0.0.1 and localhost.
func New(tb testing.TB, names ...string) *PKI {
	tb.Helper()
	ca, err := pki.NewDevCA(pki.ECDSAP256, pki.Options{})
	if err != nil {
		tb.Fatalf("dev CA: %v", err)
	}
	p := &PKI{CA: ca, Pool: x509.NewCertPool(), Accounts: map[string]*Account{}}
	p.Pool.AddCert(ca.Cert)
	for i, n := range names {
		p.Add(tb, n, rsaKey(tb, i), time.Time{}, time.Time{})
	}
	return p
}

// Add issues a certificate for name with key (nil: a fresh ECDSA P-256 key)
// and validity nb..na (zero: defaults), replacing any account of that name.
func (p *PKI) Add(tb testing.TB, name string, key crypto.Signer, nb, na time.Time) *Account {
	tb.Helper()
	req := pki.LeafRequest{
		CommonName: name,
		DNSNames:   []string{"localhost"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:  nb,
		NotAfter:   na,
		Key:        key,
	}
	if key == nil {
		req.KeyType = pki.ECDSAP256
	}
	cert, k, err := p.CA.Issue(req, pki.Options{})
	if err != nil {
		tb.Fatalf("issue %s: %v", name, err)
	}
	a := &Account{Name: name, Cert: cert, Key: k}
	p.Accounts[name] = a
	return a
}

// WriteFiles writes ca.pem and NAME.pem / NAME.key for every account to dir,
// the layout `kurer dev-certs` produces, and fills in the file fields.
func (p *PKI) WriteFiles(tb testing.TB, dir string) {
	tb.Helper()
	p.CAFile = filepath.Join(dir, "ca.pem")
	write(tb, p.CAFile, pki.EncodeCertPEM(p.CA.Cert))
	for name, a := range p.Accounts {
		kp, err := pki.EncodeKeyPEM(a.Key)
		if err != nil {
			tb.Fatal(err)
		}
		a.CertFile = filepath.Join(dir, name+".pem")
		a.KeyFile = filepath.Join(dir, name+".key")
		write(tb, a.CertFile, pki.EncodeCertPEM(a.Cert))
		write(tb, a.KeyFile, kp)
	}
}

func write(tb testing.TB, path string, data []byte) {
	tb.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}
