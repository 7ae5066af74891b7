package pki_test

import (
	"crypto"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurer/kurer/internal/pki"
	"github.com/kurer/kurer/internal/pki/pkitest"
)

// TestCommittedDevKeysListed: every private key committed in certs-dev/ is
// known to IsDevKey, so a regenerated certs-dev/ cannot slip past the
// refusal of dev keys (add the new fingerprints this test prints).
func TestCommittedDevKeysListed(t *testing.T) {
	keys, err := filepath.Glob(filepath.Join("..", "..", "certs-dev", "*.key"))
	if err != nil || len(keys) == 0 {
		t.Fatalf("no keys in certs-dev: %v", err)
	}
	for _, p := range keys {
		k, err := pki.LoadKey(p)
		if err != nil {
			t.Fatal(err)
		}
		if !pki.IsDevKey(k.Public()) {
			t.Errorf("%s is not in devKeys: add %q", p, pki.PublicKeyFingerprint(k.Public()))
		}
	}
}

// TestCommittedDevCertsMatchKeys: every committed certs-dev/ certificate
// certifies its key, chains to the committed dev CA, and carries the
// extended key usage emailProtection that `openssl cms -verify` asks of a
// signer by default (docs/envelope.md).
func TestCommittedDevCertsMatchKeys(t *testing.T) {
	dir := filepath.Join("..", "..", "certs-dev")
	ca, err := pki.LoadCert(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	keys, err := filepath.Glob(filepath.Join(dir, "*.key"))
	if err != nil || len(keys) == 0 {
		t.Fatalf("no keys in certs-dev: %v", err)
	}
	for _, kp := range keys {
		name := strings.TrimSuffix(filepath.Base(kp), ".key")
		if name == "ca" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			k, err := pki.LoadKey(kp)
			if err != nil {
				t.Fatal(err)
			}
			c, err := pki.LoadCert(strings.TrimSuffix(kp, ".key") + ".pem")
			if err != nil {
				t.Fatal(err)
			}
			if !pki.KeyMatches(k, c) {
				t.Fatal("the certificate does not certify the key beside it")
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: c.NotBefore.Add(time.Hour),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}); err != nil {
				t.Fatalf("not a CMS signer under the dev CA: %v", err)
			}
		})
	}
}

func TestCheckDevChain(t *testing.T) {
	dev := pkitest.New(t, "gateway")
	prod := pkitest.NewNonDev(t, "gateway")
	committed, err := pki.LoadCert(filepath.Join("..", "..", "certs-dev", "gateway.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		want  error
	}{
		{"issued by a dev CA", []*x509.Certificate{dev.Accounts["gateway"].Cert}, pki.ErrDevCA},
		{"the dev CA itself", []*x509.Certificate{dev.CA.Cert}, pki.ErrDevCA},
		{"dev CA as intermediate", []*x509.Certificate{prod.Accounts["gateway"].Cert, dev.CA.Cert}, pki.ErrDevCA},
		{"committed certs-dev certificate", []*x509.Certificate{committed}, pki.ErrDevCA},
		{"production CA", []*x509.Certificate{prod.Accounts["gateway"].Cert}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := pki.CheckDevChain(tc.chain, false); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("CheckDevChain = %v, want %v", err, tc.want)
			}
			if err := pki.CheckDevChain(tc.chain, true); err != nil {
				t.Fatalf("CheckDevChain in dev mode = %v", err)
			}
		})
	}
	t.Run("committed key under a production CA", func(t *testing.T) {
		k, err := pki.LoadKey(filepath.Join("..", "..", "certs-dev", "gateway.key"))
		if err != nil {
			t.Fatal(err)
		}
		a := prod.Add(t, "reused", k, time.Time{}, time.Time{})
		if err := pki.CheckDevChain([]*x509.Certificate{a.Cert}, false); !errors.Is(err, pki.ErrDevKey) {
			t.Fatalf("CheckDevChain = %v, want ErrDevKey", err)
		}
	})
}

func TestCheckDevSigningKey(t *testing.T) {
	certs := filepath.Join("..", "..", "certs-dev")
	committed, err := pki.LoadKey(filepath.Join(certs, "gateway-signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	devDir, prodDir := t.TempDir(), t.TempDir()
	dev := pkitest.New(t)
	prod := pkitest.NewNonDev(t)
	dev.Add(t, "gateway-signing", nil, time.Time{}, time.Time{})
	prod.Add(t, "gateway-signing", nil, time.Time{}, time.Time{})
	dev.WriteFiles(t, devDir)
	prod.WriteFiles(t, prodDir)
	fresh, err := pki.GenerateKey(pki.ECDSAP256, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		path string
		want error
	}{
		{"committed certs-dev key", committed, filepath.Join(certs, "gateway-signing.key"), pki.ErrDevKey},
		{"committed key copied elsewhere", committed, filepath.Join(prodDir, "copied.key"), pki.ErrDevKey},
		{"dev-certs key with its dev certificate", dev.Accounts["gateway-signing"].Key, dev.Accounts["gateway-signing"].KeyFile, pki.ErrDevCA},
		{"key with a production certificate", prod.Accounts["gateway-signing"].Key, prod.Accounts["gateway-signing"].KeyFile, nil},
		{"key without a certificate", fresh, filepath.Join(prodDir, "fresh.key"), nil},
		{"key beside another key's dev certificate", fresh, filepath.Join(devDir, "gateway-signing.key"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pki.CheckDevSigningKey(tc.key, tc.path, false)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("CheckDevSigningKey = %v, want %v", err, tc.want)
			}
			if err := pki.CheckDevSigningKey(tc.key, tc.path, true); err != nil {
				t.Fatalf("CheckDevSigningKey in dev mode = %v", err)
			}
		})
	}
}
