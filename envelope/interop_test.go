package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool returns the path of a CLI tool the interop tests drive. Without it
// the test fails under CI (CI=true, .ci/run installs it) and skips elsewhere.
func needTool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("%s is required for the interop tests (install it; .ci/run does)", name)
		}
		tb.Skipf("%s not installed: interop test not run (CI=true makes this a failure)", name)
	}
	return p
}

func run(tb testing.TB, dir, name string, args ...string) []byte {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return out
}

// TestOpenSSLOpensOurEnvelopes: openssl cms -decrypt opens what Seal wrote
// (both profiles, default OAEP parameters read from the envelope), and
// openssl cms -verify accepts our detached signature over the manifest.
func TestOpenSSLOpensOurEnvelopes(t *testing.T) {
	needTool(t, "openssl")
	needTool(t, "unzip")
	f := newFixture(t)
	f.p.Add(t, "portal", nil, time.Time{}, time.Time{}) // ECDSA P-256 signer
	dir := t.TempDir()
	f.p.WriteFiles(t, dir)
	payload := map[string][]byte{"sak.xml": bytes.Repeat([]byte("<sak/>"), 5000), "bilag/scan.bin": randBytes(150_000)}
	var files []File
	for n, d := range payload {
		files = append(files, memFile(n, d))
	}
	for _, tc := range []struct {
		name    string
		profile Profile
		signer  string
	}{{"gcm-rsa", ProfileGCM, "oslo"}, {"fiks-rsa", ProfileFiks, "oslo"}, {"gcm-ecdsa", ProfileGCM, "portal"}} {
		t.Run(tc.name, func(t *testing.T) {
			acc := f.p.Accounts[tc.signer]
			o := f.sealOpts(tc.profile)
			o.Signer, o.SignerCert = acc.Key, acc.Cert
			var buf bytes.Buffer
			if err := Seal(t.Context(), &buf, testManifest(), files, o); err != nil {
				t.Fatal(err)
			}
			work := t.TempDir()
			env := filepath.Join(work, "env.der")
			if err := os.WriteFile(env, buf.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, work, "openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", env,
				"-recip", f.to.CertFile, "-inkey", f.to.KeyFile, "-out", "c.zip")
			run(t, work, "unzip", "-q", "c.zip", "-d", "x")
			for n, d := range payload {
				got, err := os.ReadFile(filepath.Join(work, "x", n))
				if err != nil || !bytes.Equal(got, d) {
					t.Fatalf("%s: openssl+unzip gave different content (%v)", n, err)
				}
			}
			run(t, work, "openssl", "cms", "-verify", "-binary", "-inform", "DER",
				"-in", "x/META-INF/signature.p7s", "-content", "x/META-INF/manifest.json",
				"-CAfile", f.p.CAFile, "-out", os.DevNull)
			// and the verification really depends on the bytes
			mf := filepath.Join(work, "x", "META-INF", "manifest.json")
			mb, _ := os.ReadFile(mf)
			os.WriteFile(mf, append(mb, ' '), 0o600)
			cmd := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER",
				"-in", "x/META-INF/signature.p7s", "-content", "x/META-INF/manifest.json",
				"-CAfile", f.p.CAFile, "-out", os.DevNull)
			cmd.Dir = work
			if err := cmd.Run(); err == nil {
				t.Fatal("openssl verified a modified manifest")
			}
		})
	}
}

// TestWeOpenOpenSSLEnvelopes builds the ASiC-E container with openssl cms
// -sign and zip, encrypts it with openssl cms -encrypt (GCM and CBC, with and
// without -stream, i.e. indefinite and definite lengths) and opens it.
func TestWeOpenOpenSSLEnvelopes(t *testing.T) {
	needTool(t, "openssl")
	needTool(t, "zip")
	f := newFixture(t)
	dir := t.TempDir()
	f.p.WriteFiles(t, dir)
	work := t.TempDir()
	content := randBytes(100_000)
	if err := os.WriteFile(filepath.Join(work, "mimetype"), []byte(MimeType), 0o600); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(work, "bilag"), 0o700)
	os.MkdirAll(filepath.Join(work, "META-INF"), 0o700)
	os.WriteFile(filepath.Join(work, "bilag", "dok.bin"), content, 0o600)
	sum := sha256.Sum256(content)
	m := &Manifest{ID: "0b9e6a4e-7d0c-4e8e-9c54-1a2b3c4d5e6f", Type: "no.kurer.test.v1", From: "oslo-id", To: "trondheim-id",
		Created: time.Now().UTC().Truncate(time.Second),
		Files:   []FileEntry{{Name: "bilag/dok.bin", Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:])}}}
	mb, err := marshalManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(work, "META-INF", "manifest.json"), mb, 0o600)
	run(t, work, "openssl", "cms", "-sign", "-binary", "-outform", "DER", "-md", "sha256", "-nosmimecap",
		"-signer", f.from.CertFile, "-inkey", f.from.KeyFile,
		"-in", "META-INF/manifest.json", "-out", "META-INF/signature.p7s")
	run(t, work, "zip", "-q", "-X", "-D", "-0", "c.zip", "mimetype")
	run(t, work, "zip", "-q", "-X", "-D", "c.zip", "bilag/dok.bin", "META-INF/manifest.json", "META-INF/signature.p7s")

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"gcm-stream", []string{"-aes-256-gcm", "-stream"}},
		{"gcm-definite", []string{"-aes-256-gcm"}},
		{"cbc-stream", []string{"-aes-256-cbc", "-stream"}},
		{"cbc-definite", []string{"-aes-256-cbc"}},
		{"gcm-keyid", []string{"-aes-256-gcm", "-stream", "-keyid"}}, // recipient by subject key identifier
		{"cbc-keyid", []string{"-aes-256-cbc", "-keyid"}},            // EnvelopedData version 2
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"cms", "-encrypt", "-binary", "-outform", "DER", "-in", "c.zip", "-out", tc.name + ".der"}, tc.args...)
			args = append(args, "-recip", f.to.CertFile, "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256")
			run(t, work, "openssl", args...)
			env, err := os.Open(filepath.Join(work, tc.name+".der"))
			if err != nil {
				t.Fatal(err)
			}
			defer env.Close()
			out := filepath.Join(t.TempDir(), "out")
			o := f.openOpts()
			o.Expect = Binding{ID: m.ID, Type: m.Type, From: m.From, To: m.To}
			o.SenderCerts = append(o.SenderCerts, f.from.Cert)
			res, err := Open(t.Context(), env, out, o)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			got, err := os.ReadFile(filepath.Join(out, "bilag", "dok.bin"))
			if err != nil || !bytes.Equal(got, content) || !bytes.Equal(res.ManifestBytes, mb) {
				t.Fatalf("opened content differs (%v)", err)
			}
			raw, _ := os.ReadFile(filepath.Join(work, tc.name+".der"))
			info, err := Inspect(bytes.NewReader(raw))
			wantProfile := ProfileGCM
			if strings.HasPrefix(tc.name, "cbc") {
				wantProfile = ProfileFiks
			}
			if err != nil || info.Profile != wantProfile || len(info.Recipients) != 1 || info.Recipients[0].OAEPHash != "sha256" ||
				info.EnvelopeSize != int64(len(raw)) {
				t.Fatalf("inspect: %v %+v", err, info)
			}
		})
	}
}
