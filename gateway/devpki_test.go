package gateway_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/internal/pki"
	"github.com/kurer/kurer/internal/pki/pkitest"
)

// TestDevPKIOwnMaterialRefused: with production trust roots, the gateway
// still refuses development material as its own TLS certificate or notice
// signing key unless Config.Dev: the committed certs-dev/ keys are public,
// so anyone could impersonate the gateway or forge its notices.
func TestDevPKIOwnMaterialRefused(t *testing.T) {
	certs := filepath.Join("..", "certs-dev")
	prod := pkitest.NewNonDev(t, "gateway")
	dev := pkitest.New(t, "gateway")
	prodDir, devDir := t.TempDir(), t.TempDir()
	prod.WriteFiles(t, prodDir)
	dev.WriteFiles(t, devDir)
	key, err := pki.GenerateKey(pki.ECDSAP256, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := pki.EncodeKeyPEM(key)
	signing := filepath.Join(prodDir, "signing.key")
	if err := os.WriteFile(signing, kp, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("operator"))
	base := gateway.Config{
		Audience: "https://gateway.test", Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", MetricsListen: "off",
		TLSCert: prod.Accounts["gateway"].CertFile, TLSKey: prod.Accounts["gateway"].KeyFile,
		TrustRoots: []string{prod.CAFile}, SigningKey: signing, OperatorTokenSHA256: hex.EncodeToString(sum[:]),
	}
	for _, tc := range []struct {
		name string
		mod  func(*gateway.Config)
		want error
	}{
		{"production material", func(*gateway.Config) {}, nil},
		{"committed certs-dev TLS certificate", func(c *gateway.Config) {
			c.TLSCert, c.TLSKey = filepath.Join(certs, "gateway.pem"), filepath.Join(certs, "gateway.key")
		}, pki.ErrDevCA},
		{"TLS certificate of another dev CA", func(c *gateway.Config) {
			c.TLSCert, c.TLSKey = dev.Accounts["gateway"].CertFile, dev.Accounts["gateway"].KeyFile
		}, pki.ErrDevCA},
		{"committed certs-dev signing key", func(c *gateway.Config) {
			c.SigningKey = filepath.Join(certs, "gateway-signing.key")
		}, pki.ErrDevKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, devMode := range []bool{false, true} {
				cfg := base
				cfg.DataDir, cfg.Dev = t.TempDir(), devMode
				tc.mod(&cfg)
				srv, err := gateway.New(cfg, nil)
				if srv != nil {
					_ = srv.Close()
				}
				want := tc.want
				if devMode {
					want = nil
				}
				if want == nil && err != nil {
					t.Fatalf("dev=%v: gateway.New: %v", devMode, err)
				}
				if want != nil && !errors.Is(err, want) {
					t.Fatalf("dev=%v: gateway.New = %v, want %v", devMode, err, want)
				}
			}
		})
	}
}
