package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurer/kurer/internal/pki"
	"github.com/kurer/kurer/internal/pki/pkitest"
)

// TestDevPKIOwnMaterialRefusedWithoutDevFlag: with production trust roots,
// development material is still refused where it is not a trust root: the
// gateway's TLS certificate and signing key, the agent's gateway.ca_file
// (run and keys check) and the operator commands' --ca. The committed
// certs-dev/ keys are public: accepting them would let anyone impersonate
// the gateway or forge its notices.
func TestDevPKIOwnMaterialRefusedWithoutDevFlag(t *testing.T) {
	certs, err := filepath.Abs(filepath.Join("..", "..", "certs-dev"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	prod := pkitest.NewNonDev(t, "gateway", "oslo")
	prod.WriteFiles(t, dir)
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	skPEM, _ := pki.EncodeKeyPEM(sk)
	signing := filepath.Join(dir, "signing.key")
	writeFile(t, signing, string(skPEM))

	gwConfig := func(name, tlsCert, tlsKey, signingKey string) string {
		p := filepath.Join(dir, name+".yaml")
		writeFile(t, p, `audience: https://127.0.0.1:8443
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
metrics_listen: off
tls_cert: `+tlsCert+`
tls_key: `+tlsKey+`
signing_key: `+signingKey+`
trust_roots: [`+prod.CAFile+`]
operator_token_sha256: e461c67085467788d44cea1ace3c4423fd5db58a7287b46addabb3f3d295b8f6
data_dir: `+filepath.Join(dir, name)+`
`)
		return p
	}
	ag := filepath.Join(dir, "agent.yaml")
	writeFile(t, ag, `account: 897028ee-1d43-591c-bb6c-b98ced0afa70
data_dir: `+filepath.Join(dir, "agent")+`
gateway:
  url: https://127.0.0.1:1
  ca_file: `+certs+`/ca.pem
keys:
  - cert: `+prod.Accounts["oslo"].CertFile+`
    key: `+prod.Accounts["oslo"].KeyFile+`
trust_roots: [`+prod.CAFile+`]
local_api:
  listen: 127.0.0.1:0
  token_file: `+filepath.Join(dir, "token")+`
`)
	writeFile(t, filepath.Join(dir, "token"), "a-local-api-token-of-some-length-0123456789\n")
	admin := []string{"--admin", "https://127.0.0.1:1", "--ca", certs + "/ca.pem",
		"--token-file", filepath.Join(certs, "..", "examples", "dev", "operator.token")}

	for _, tc := range []struct {
		name string
		args []string
		want string // in stderr, besides "--dev"
	}{
		{"gateway TLS certificate", []string{"gateway", "serve", "--config",
			gwConfig("gw-tls", certs+"/gateway.pem", certs+"/gateway.key", signing)}, "tls_cert: the development CA is refused"},
		{"gateway signing key", []string{"gateway", "serve", "--config",
			gwConfig("gw-sign", prod.Accounts["gateway"].CertFile, prod.Accounts["gateway"].KeyFile, certs+"/gateway-signing.key")},
			"signing_key: a key of the development PKI"},
		{"agent gateway.ca_file", []string{"agent", "run", "--config", ag}, "gateway.ca_file: the development CA is refused"},
		{"agent keys check gateway.ca_file", []string{"agent", "keys", "check", "--config", ag}, "gateway.ca_file: the development CA is refused"},
		{"operator --ca", append([]string{"gateway", "account", "list"}, admin...), "--ca: the development CA is refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			_, stderr, code := runCLI(ctx, tc.args...)
			if ctx.Err() != nil {
				t.Fatalf("%v ran with development material and no --dev", tc.args)
			}
			if code == 0 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "--dev") {
				t.Fatalf("exit %d, stderr %q; want a refusal %q naming --dev", code, stderr, tc.want)
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
				t.Fatalf("stderr shows internals: %q", stderr)
			}
		})
	}

	// With --dev the operator's --ca is taken: the command gets as far as
	// the (unreachable) gateway.
	_, stderr, code := runCLI(t.Context(), append([]string{"gateway", "account", "list", "--dev"}, admin...)...)
	if code != ExitUnavailable || strings.Contains(stderr, "development CA") {
		t.Fatalf("--dev --ca: exit %d, stderr %q; want %d (gateway unreachable)", code, stderr, ExitUnavailable)
	}
}
