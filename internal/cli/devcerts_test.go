package cli

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/internal/config"
	"github.com/kurer/kurer/internal/pki"
)

// runDevCertsCmd runs `kurer dev-certs args...` through the root command.
func runDevCertsCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := NewRootCommand()
	var out, errOut bytes.Buffer
	root.SetArgs(append([]string{"dev-certs"}, args...))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.Execute()
	return out.String(), err
}

func exitCode(err error) int {
	var ee *ExitErr
	if errors.As(err, &ee) {
		return ee.Code
	}
	if err != nil {
		return ExitError
	}
	return ExitOK
}

func loadPair(t *testing.T, dir, stem string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	cert, err := pki.LoadCert(filepath.Join(dir, stem+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.LoadKey(filepath.Join(dir, stem+".key"))
	if err != nil {
		t.Fatal(err)
	}
	if !pki.KeyMatches(key, cert) {
		t.Fatalf("%s.key does not match %s.pem", stem, stem)
	}
	for name, want := range map[string]os.FileMode{stem + ".pem": 0o644, stem + ".key": 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		// The umask may remove group/other bits from certificates; keys
		// must be exactly 0600.
		if got := st.Mode().Perm(); got&^want != 0 || (want == 0o600 && got != want) {
			t.Fatalf("%s has mode %v, want %v", name, got, want)
		}
	}
	return cert, key
}

func TestDevCerts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	out, err := runDevCertsCmd(t, "--out", dir, "--accounts", "oslo,bergen", "--gateway-host", "gw.test,10.1.2.3")
	if err != nil {
		t.Fatalf("dev-certs: %v", err)
	}
	if !strings.Contains(out, "DEV ONLY") || !strings.Contains(out, filepath.Join(dir, "oslo.pem")) {
		t.Fatalf("output:\n%s", out)
	}

	ca, _ := loadPair(t, dir, "ca")
	if !ca.IsCA || !pki.IsDev(ca) {
		t.Fatal("ca.pem is not a dev CA")
	}
	if _, err := pki.TrustPool([]*x509.Certificate{ca}, false); !errors.Is(err, pki.ErrDevCA) {
		t.Fatalf("TrustPool without dev = %v, want ErrDevCA", err)
	}
	pool, err := pki.TrustPool([]*x509.Certificate{ca}, true)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()

	for _, name := range []string{"oslo", "bergen"} {
		cert, key := loadPair(t, dir, name)
		if cert.Subject.CommonName != name || !pki.IsDev(cert) {
			t.Fatalf("%s: subject %v", name, cert.Subject)
		}
		rk, ok := key.(*rsa.PrivateKey)
		if !ok || rk.N.BitLen() != 3072 {
			t.Fatalf("%s: key is %T, want RSA-3072", name, key)
		}
		if cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
			t.Fatalf("%s: certificate does not allow key encipherment", name)
		}
		if err := pki.VerifyAt(cert, pool, nil, now); err != nil {
			t.Fatalf("%s does not chain to ca.pem: %v", name, err)
		}
		// Encryption to the account works with the pair as written.
		ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, cert.PublicKey.(*rsa.PublicKey), []byte("k"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := rk.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA256}); err != nil || string(pt) != "k" {
			t.Fatalf("%s: OAEP round trip: %v", name, err)
		}
	}

	gw, _ := loadPair(t, dir, "gateway")
	if err := pki.VerifyAt(gw, pool, nil, now); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "gw.test", "10.1.2.3"} {
		if err := gw.VerifyHostname(h); err != nil {
			t.Fatalf("gateway certificate: %v", err)
		}
	}
	if err := gw.VerifyHostname("other.test"); err == nil {
		t.Fatal("gateway certificate valid for a host it was not issued for")
	}

	sign, signKey := loadPair(t, dir, "gateway-signing")
	if k, ok := signKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("gateway-signing.key is %T, want ECDSA P-256", signKey)
	}
	if err := pki.VerifyAt(sign, pool, nil, now); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("receipt"))
	sig, err := signKey.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(sign.PublicKey.(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("signature by gateway-signing.key does not verify with gateway-signing.pem")
	}

	// The gateway pair serves real TLS that a client trusting ca.pem accepts.
	tlsCert, err := tls.LoadX509KeyPair(filepath.Join(dir, "gateway.pem"), filepath.Join(dir, "gateway.key"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{tlsCert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS handshake with gateway.pem: %v", err)
	}
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo over TLS: %q, %v", buf, err)
	}
	conn.Close()

	// OpenSSL agrees that the account certificates chain to the CA.
	if _, err := exec.LookPath("openssl"); err == nil {
		cmd := exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir, "ca.pem"),
			filepath.Join(dir, "oslo.pem"), filepath.Join(dir, "gateway.pem"), filepath.Join(dir, "gateway-signing.pem"))
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl verify: %v\n%s", err, b)
		}
	}
}

func TestDevCertsRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	if _, err := runDevCertsCmd(t, "--out", dir, "--accounts", "oslo"); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(dir, "oslo.key"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = runDevCertsCmd(t, "--out", dir, "--accounts", "oslo")
	if exitCode(err) != ExitUsage || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second run = %v, want a usage error naming --force", err)
	}
	// A partially existing set is refused too: nothing is written.
	_, err = runDevCertsCmd(t, "--out", dir, "--accounts", "bergen")
	if exitCode(err) != ExitUsage {
		t.Fatalf("run with an existing CA = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bergen.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused run wrote files")
	}
	after, _ := os.ReadFile(filepath.Join(dir, "oslo.key"))
	if !bytes.Equal(before, after) {
		t.Fatal("refused run changed oslo.key")
	}

	// --force replaces, and a loosened mode does not survive.
	if err := os.Chmod(filepath.Join(dir, "oslo.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runDevCertsCmd(t, "--out", dir, "--accounts", "oslo", "--force"); err != nil {
		t.Fatalf("--force: %v", err)
	}
	after, _ = os.ReadFile(filepath.Join(dir, "oslo.key"))
	if bytes.Equal(before, after) {
		t.Fatal("--force did not replace oslo.key")
	}
	loadPair(t, dir, "oslo") // also checks mode 0600
	ca, _ := loadPair(t, dir, "ca")
	cert, _ := loadPair(t, dir, "oslo")
	pool, _ := pki.TrustPool([]*x509.Certificate{ca}, true)
	if err := pki.VerifyAt(cert, pool, nil, time.Now()); err != nil {
		t.Fatalf("after --force the account does not chain to the new CA: %v", err)
	}
}

func TestDevCertsECDSA(t *testing.T) {
	dir := t.TempDir()
	if _, err := runDevCertsCmd(t, "--out", dir, "--key-type", "ecdsa-p256"); err != nil {
		t.Fatal(err)
	}
	ca, caKey := loadPair(t, dir, "ca")
	if _, ok := caKey.(*ecdsa.PrivateKey); !ok {
		t.Fatalf("CA key is %T", caKey)
	}
	gw, gwKey := loadPair(t, dir, "gateway")
	if _, ok := gwKey.(*ecdsa.PrivateKey); !ok {
		t.Fatalf("gateway key is %T", gwKey)
	}
	pool, _ := pki.TrustPool([]*x509.Certificate{ca}, true)
	if err := pki.VerifyAt(gw, pool, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestDevCertsRefusals(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"ecdsa accounts", []string{"--key-type", "ecdsa-p256", "--accounts", "oslo"}, "RSA-OAEP"},
		{"unknown key type", []string{"--key-type", "rsa2048"}, "--key-type"},
		{"upper case name", []string{"--accounts", "Oslo"}, "account name"},
		{"path in name", []string{"--accounts", "../oslo"}, "account name"},
		{"reserved name", []string{"--accounts", "gateway"}, "reserved"},
		{"duplicate", []string{"--accounts", "oslo,oslo"}, "twice"},
		{"empty host", []string{"--gateway-host", " "}, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			_, err := runDevCertsCmd(t, append([]string{"--out", dir}, tt.args...)...)
			if exitCode(err) != ExitUsage || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v (exit %d), want usage error with %q", err, exitCode(err), tt.want)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("a refused run created the output directory")
			}
		})
	}
	if _, err := runDevCertsCmd(t, "--accounts", "oslo"); exitCode(err) != ExitUsage || !strings.Contains(err.Error(), "--out") {
		t.Fatalf("missing --out = %v", err)
	}
}

// devAccounts is certs-dev/accounts.yaml.
type devAccounts struct {
	CA      string `yaml:"ca"`
	Gateway struct {
		TLSCert     string `yaml:"tls_cert"`
		TLSKey      string `yaml:"tls_key"`
		SigningCert string `yaml:"signing_cert"`
		SigningKey  string `yaml:"signing_key"`
	} `yaml:"gateway"`
	Accounts []struct {
		ID           string   `yaml:"id"`
		Name         string   `yaml:"name"`
		DisplayName  string   `yaml:"display_name"`
		OrgNumber    string   `yaml:"org_number"`
		Municipality string   `yaml:"municipality"`
		Service      string   `yaml:"service"`
		Cert         string   `yaml:"cert"`
		Key          string   `yaml:"key"`
		Receives     []string `yaml:"receives"`
	} `yaml:"accounts"`
}

// validOrgNumber checks a Norwegian organisation number's mod-11 digit.
func validOrgNumber(s string) bool {
	if len(s) != 9 {
		return false
	}
	weights := []int{3, 2, 7, 6, 5, 4, 3, 2}
	sum := 0
	for i, c := range s {
		if c < '0' || c > '9' {
			return false
		}
		if i < 8 {
			sum += int(c-'0') * weights[i]
		}
	}
	ctl := 11 - sum%11
	if ctl == 11 {
		ctl = 0
	}
	return ctl != 10 && ctl == int(s[8]-'0')
}

func TestValidOrgNumber(t *testing.T) {
	for s, want := range map[string]bool{
		"310000019": true, "310000027": true, "974760673": true, // last: a published public-sector number
		"310000018": false, "31000001": false, "3100000x9": false,
		"310000060": false, // check digit would be 10: no valid number with this stem
	} {
		if got := validOrgNumber(s); got != want {
			t.Errorf("validOrgNumber(%s) = %v", s, got)
		}
	}
}

// TestCommittedDevCerts checks that certs-dev/ is consistent: the demo and
// other tests rely on it.
func TestCommittedDevCerts(t *testing.T) {
	const dir = "../../certs-dev"
	var acc devAccounts
	if err := config.Load(filepath.Join(dir, "accounts.yaml"), &acc); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCert(filepath.Join(dir, acc.CA))
	if err != nil {
		t.Fatal(err)
	}
	if !pki.IsDev(ca) {
		t.Fatal("certs-dev CA lacks the dev marker")
	}
	if _, err := pki.TrustPool([]*x509.Certificate{ca}, false); !errors.Is(err, pki.ErrDevCA) {
		t.Fatalf("certs-dev CA accepted outside dev mode: %v", err)
	}
	pool, err := pki.TrustPool([]*x509.Certificate{ca}, true)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()

	var types struct {
		Types []struct {
			Name string `json:"name"`
		} `json:"types"`
	}
	raw, err := os.ReadFile("../../schemas/types.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &types); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, ty := range types.Types {
		known[ty.Name] = true
	}

	if len(acc.Accounts) != 5 {
		t.Fatalf("%d accounts, want 5", len(acc.Accounts))
	}
	seen := map[string]bool{}
	for _, a := range acc.Accounts {
		t.Run(a.Name, func(t *testing.T) {
			for _, k := range []string{a.ID, a.Name, a.OrgNumber} {
				if seen[k] {
					t.Fatalf("%q used twice", k)
				}
				seen[k] = true
			}
			id, err := uuid.Parse(a.ID)
			if err != nil || id.String() != a.ID {
				t.Fatalf("id %q is not a canonical UUID", a.ID)
			}
			if want := uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://kurer.dev/accounts/"+a.Name)); id != want {
				t.Fatalf("id %s, the documented derivation gives %s", id, want)
			}
			if !validOrgNumber(a.OrgNumber) {
				t.Fatalf("org number %q fails the mod-11 check", a.OrgNumber)
			}
			national := a.Name == "portal" || a.Name == "register"
			if national != (a.Municipality == "") {
				t.Fatalf("municipality %q", a.Municipality)
			}
			if !national && (len(a.Municipality) != 4 || strings.Trim(a.Municipality, "0123456789") != "") {
				t.Fatalf("municipality %q is not four digits", a.Municipality)
			}
			if a.DisplayName == "" || a.Service == "" || len(a.Receives) == 0 {
				t.Fatal("display_name, service and receives are required")
			}
			for _, ty := range a.Receives {
				if !known[ty] {
					t.Fatalf("receives %q, not in schemas/types.json", ty)
				}
			}
			if a.Cert != a.Name+".pem" || a.Key != a.Name+".key" {
				t.Fatalf("files %s %s", a.Cert, a.Key)
			}
			cert, err := pki.LoadCert(filepath.Join(dir, a.Cert))
			if err != nil {
				t.Fatal(err)
			}
			key, err := pki.LoadKey(filepath.Join(dir, a.Key))
			if err != nil {
				t.Fatal(err)
			}
			if !pki.KeyMatches(key, cert) {
				t.Fatal("key does not match certificate")
			}
			if rk, ok := key.(*rsa.PrivateKey); !ok || rk.N.BitLen() != 3072 {
				t.Fatalf("key is %T, want RSA-3072", key)
			}
			if cert.Subject.CommonName != a.Name || !pki.IsDev(cert) {
				t.Fatalf("subject %v", cert.Subject)
			}
			if err := pki.VerifyAt(cert, pool, nil, now); err != nil {
				t.Fatalf("does not verify today (expired? regenerate, see certs-dev/README.md): %v", err)
			}
		})
	}

	gw, err := pki.LoadCert(filepath.Join(dir, acc.Gateway.TLSCert))
	if err != nil {
		t.Fatal(err)
	}
	gwKey, err := pki.LoadKey(filepath.Join(dir, acc.Gateway.TLSKey))
	if err != nil || !pki.KeyMatches(gwKey, gw) {
		t.Fatalf("gateway TLS key: %v", err)
	}
	for _, h := range []string{"localhost", "gateway", "127.0.0.1"} {
		if err := gw.VerifyHostname(h); err != nil {
			t.Fatal(err)
		}
	}
	sign, err := pki.LoadCert(filepath.Join(dir, acc.Gateway.SigningCert))
	if err != nil {
		t.Fatal(err)
	}
	signKey, err := pki.LoadKey(filepath.Join(dir, acc.Gateway.SigningKey))
	if err != nil || !pki.KeyMatches(signKey, sign) {
		t.Fatalf("gateway signing key: %v", err)
	}
	if _, ok := signKey.(*ecdsa.PrivateKey); !ok {
		t.Fatalf("gateway signing key is %T", signKey)
	}
	for _, c := range []*x509.Certificate{gw, sign} {
		if err := pki.VerifyAt(c, pool, nil, now); err != nil {
			t.Fatalf("%s: %v", c.Subject.CommonName, err)
		}
	}
}
