package pkitest

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/kurer/kurer/internal/pki"
)

// NewNonDev is New with a CA that does not carry pki.DevMarker, standing in
// for a production CA: processes accept it without the dev flag, and the
// certificates it issues are not dev certificates.
func NewNonDev(tb testing.TB, names ...string) *PKI {
	tb.Helper()
	ca, err := pki.NewCA("kurer test production CA", "kurer test", 1, pki.ECDSAP256, pki.Options{})
	if err != nil {
		tb.Fatalf("CA: %v", err)
	}
	p := &PKI{CA: ca, Pool: x509.NewCertPool(), Accounts: map[string]*Account{}}
	p.Pool.AddCert(ca.Cert)
	for i, n := range names {
		p.Add(tb, n, rsaKey(tb, i), time.Time{}, time.Time{})
	}
	return p
}
