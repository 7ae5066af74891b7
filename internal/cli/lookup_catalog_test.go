package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/schemas"
)

// TestAccountAmbiguousReceiverRefused: `kurer gateway account add` and
// `update` that would give municipality 0301 or Oslo's org number a second
// account for a type exit 1 with catalog_conflict naming the account that
// has it; a second service of the same org with other types is added.
func TestAccountAmbiguousReceiverRefused(t *testing.T) {
	e := gatewaytest.New(t, nil, "annen")
	tokenFile := filepath.Join(t.TempDir(), "operator.token")
	if err := os.WriteFile(tokenFile, []byte(e.OperatorToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := []string{"--admin", e.AdminURL(), "--ca", e.PKI.CAFile, "--dev", "--token-file", tokenFile}
	cert := e.PKI.Accounts["annen"].CertFile
	osloOrg := gatewaytest.OrgNumber("oslo")
	for _, tc := range []struct {
		name string
		args []string
		want string // "" = exit 0
	}{
		{"add-same-municipality-and-type", []string{"account", "add", "--name", "x", "--org", "310000027", "--municipality", "0301",
			"--type", gatewaytest.MessageType, "--cert", cert}, "catalog_conflict"},
		{"add-same-org-and-type", []string{"account", "add", "--name", "x", "--org", osloOrg,
			"--type", gatewaytest.MessageType, "--cert", cert}, "catalog_conflict"},
		{"update-into-0301", []string{"account", "update", e.IDs["bergen"], "--municipality", "0301"}, "catalog_conflict"},
		{"add-same-org-other-type", []string{"account", "add", "--name", "Oslo kommune, annen tjeneste", "--org", osloOrg,
			"--municipality", "0301", "--type", schemas.TypeDokumentasjonForesporsel, "--cert", cert}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCLI(t.Context(), append(append([]string{"gateway"}, tc.args...), admin...)...)
			if tc.want == "" {
				if code != ExitOK {
					t.Fatalf("exit %d\n%s%s", code, out, errOut)
				}
				return
			}
			if code != ExitError || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, e.IDs["oslo"]) {
				t.Fatalf("exit %d, stderr %q; want exit %d naming %s and oslo's account", code, errOut, ExitError, tc.want)
			}
		})
	}
}
