package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDevPKIRefusedWithoutDevFlag: a gateway or an agent configured with
// the development PKI (certs-dev/) refuses to start unless --dev is given,
// and says so; nothing is served.
func TestDevPKIRefusedWithoutDevFlag(t *testing.T) {
	certs, err := filepath.Abs(filepath.Join("..", "..", "certs-dev"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gw := filepath.Join(dir, "gateway.yaml")
	writeFile(t, gw, `audience: https://127.0.0.1:8443
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
metrics_listen: 127.0.0.1:0
tls_cert: `+certs+`/gateway.pem
tls_key: `+certs+`/gateway.key
signing_key: `+certs+`/gateway-signing.key
trust_roots: [`+certs+`/ca.pem]
operator_token_sha256: e461c67085467788d44cea1ace3c4423fd5db58a7287b46addabb3f3d295b8f6
data_dir: `+filepath.Join(dir, "gw")+`
`)
	ag := filepath.Join(dir, "agent.yaml")
	writeFile(t, ag, `account: 897028ee-1d43-591c-bb6c-b98ced0afa70
data_dir: `+filepath.Join(dir, "agent")+`
gateway:
  url: https://127.0.0.1:1
  ca_file: `+certs+`/ca.pem
keys:
  - cert: `+certs+`/oslo.pem
    key: `+certs+`/oslo.key
trust_roots: [`+certs+`/ca.pem]
local_api:
  listen: 127.0.0.1:0
  token_file: `+filepath.Join(dir, "token")+`
`)
	writeFile(t, filepath.Join(dir, "token"), "a-local-api-token-of-some-length-0123456789\n")
	for _, args := range [][]string{
		{"gateway", "serve", "--config", gw},
		{"agent", "run", "--config", ag},
	} {
		t.Run(args[0], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			_, stderr, code := runCLI(ctx, args...)
			if ctx.Err() != nil {
				t.Fatalf("%v started with the dev PKI and no --dev", args)
			}
			if code == 0 || !strings.Contains(stderr, "development CA is refused") || !strings.Contains(stderr, "--dev") {
				t.Fatalf("exit %d, stderr %q; want a refusal naming --dev", code, stderr)
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
				t.Fatalf("stderr shows internals: %q", stderr)
			}
		})
	}
}
