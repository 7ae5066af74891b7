package pkitest

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/kurer/kurer/internal/pki"
)

// NewNonDev is New with a CA that does not carry pki.DevMarker, standing in
// for a production CA: processes accept it without the dev flag, and the
// certificates it issues are not dev certificates.
func NewNonDev(tb testing.TB, names ...string) *PKI {
	tb.Helper()
	key, err := pki.GenerateKey(pki.ECDSAP256, pki.Options{})
	if err != nil {
		tb.Fatalf("CA key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "kurer test production CA", Organization: []string{"kurer test"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatalf("CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	p := &PKI{CA: &pki.CA{Cert: cert, Key: key}, Pool: x509.NewCertPool(), Accounts: map[string]*Account{}}
	p.Pool.AddCert(cert)
	for i, n := range names {
		p.Add(tb, n, rsaKey(tb, i), time.Time{}, time.Time{})
	}
	return p
}
