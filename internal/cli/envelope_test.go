package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kurer/kurer/internal/pki/pkitest"
)

// runEnvelopeCLI runs the root command with args and returns stdout and the exit code.
func runEnvelopeCLI(t *testing.T, args ...string) (string, int, error) {
	t.Helper()
	root := NewRootCommand()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(t.Context())
	code := ExitOK
	if err != nil {
		code = ExitError
		var ee *ExitErr
		if errors.As(err, &ee) {
			code = ee.Code
		}
	}
	return out.String(), code, err
}

func TestEnvelopeCLISealOpenInspect(t *testing.T) {
	p := pkitest.New(t, "oslo", "trondheim", "bergen")
	certs := t.TempDir()
	p.WriteFiles(t, certs)
	oslo, trd, bergen := p.Accounts["oslo"], p.Accounts["trondheim"], p.Accounts["bergen"]

	src := t.TempDir()
	files := map[string]string{"sak.xml": "<sak>1</sak>", "vedlegg/brev æøå.txt": "hei fra Oslo"}
	for n, c := range files {
		fp := filepath.Join(src, filepath.FromSlash(n))
		os.MkdirAll(filepath.Dir(fp), 0o700)
		if err := os.WriteFile(fp, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	work := t.TempDir()
	for _, profile := range []string{"gcm", "fiks"} {
		env := filepath.Join(work, profile+".kenv")
		out, code, err := runEnvelopeCLI(t, "envelope", "seal", "--type", "no.kurer.test.v1", "--from", "oslo-id", "--to", "trondheim-id",
			"--sign-cert", oslo.CertFile, "--sign-key", oslo.KeyFile, "--to-cert", trd.CertFile, "--to-cert", bergen.CertFile,
			"--profile", profile, "--expires", "72h", "--header", "saksnr=2026/17", "--out", env, src)
		if code != ExitOK || !strings.Contains(out, "sealed ") {
			t.Fatalf("seal: %d %v %s", code, err, out)
		}
		open := func(extra ...string) (string, string, int, error) {
			dir := filepath.Join(t.TempDir(), "out")
			args := append([]string{"envelope", "open", "--cert", trd.CertFile, "--key", trd.KeyFile, "--trust", p.CAFile, "--out", dir}, extra...)
			out, code, err := runEnvelopeCLI(t, append(args, env)...)
			return dir, out, code, err
		}
		dir, out, code, err := open("--dev", "--sender-cert", oslo.CertFile, "--expect-from", "oslo-id", "--expect-to", "trondheim-id")
		if code != ExitOK || !strings.Contains(out, "every check passed") {
			t.Fatalf("open: %d %v %s", code, err, out)
		}
		for n, c := range files {
			got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(n)))
			if err != nil || string(got) != c {
				t.Fatalf("%s: %q %v", n, got, err)
			}
		}
		// dev CA refused without --dev
		if dir, _, code, err := open(); code != ExitUsage || !strings.Contains(err.Error(), "dev") {
			t.Fatalf("dev CA without --dev: code %d, %v", code, err)
		} else if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
			t.Fatal("output written although the trust root was refused")
		}
		// failed checks exit 3 and leave nothing
		for _, extra := range [][]string{{"--sender-cert", bergen.CertFile}, {"--expect-to", "bergen-id"}} {
			dir, _, code, err := open(append([]string{"--dev"}, extra...)...)
			if code != ExitVerify {
				t.Fatalf("%v: code %d (%v), want %d", extra, code, err, ExitVerify)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("%v: files released", extra)
			}
		}
		out, code, err = runEnvelopeCLI(t, "envelope", "inspect", "--output", "json", env)
		if code != ExitOK {
			t.Fatalf("inspect: %v", err)
		}
		var info struct {
			Profile    string `json:"profile"`
			Recipients []struct {
				Issuer string `json:"issuer"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil || info.Profile != profile || len(info.Recipients) != 2 {
			t.Fatalf("inspect json: %v %s", err, out)
		}
		if out, code, _ := runEnvelopeCLI(t, "envelope", "inspect", env); code != ExitOK || !strings.Contains(out, "rsaesOAEP (sha256, mgf1-sha256)") {
			t.Fatalf("inspect text: %s", out)
		}
	}
}

func TestEnvelopeCLIUsage(t *testing.T) {
	p := pkitest.New(t, "oslo", "trondheim")
	certs := t.TempDir()
	p.WriteFiles(t, certs)
	oslo, trd := p.Accounts["oslo"], p.Accounts["trondheim"]
	src := filepath.Join(t.TempDir(), "a.txt")
	os.WriteFile(src, []byte("x"), 0o600)
	base := []string{"envelope", "seal", "--type", "t", "--from", "a", "--to", "b", "--sign-cert", oslo.CertFile,
		"--sign-key", oslo.KeyFile, "--to-cert", trd.CertFile, "--out", filepath.Join(t.TempDir(), "e")}
	for name, args := range map[string][]string{
		"bad profile":        append(append([]string{}, base...), "--profile", "des", src),
		"bad expires":        append(append([]string{}, base...), "--expires", "soon", src),
		"key not of cert":    {"envelope", "seal", "--type", "t", "--from", "a", "--to", "b", "--sign-cert", trd.CertFile, "--sign-key", oslo.KeyFile, "--to-cert", trd.CertFile, "--out", "x", src},
		"missing path":       append(append([]string{}, base...), filepath.Join(t.TempDir(), "nope")),
		"inspect bad output": {"envelope", "inspect", "--output", "xml", src},
		"open unpaired keys": {"envelope", "open", "--cert", trd.CertFile, "--cert", oslo.CertFile, "--key", trd.KeyFile, "--trust", p.CAFile, "--out", "o", src},
	} {
		if _, code, err := runEnvelopeCLI(t, args...); code != ExitUsage {
			t.Errorf("%s: code %d (%v), want %d", name, code, err, ExitUsage)
		}
	}
	// a file that is not an envelope fails verification
	if _, code, _ := runEnvelopeCLI(t, "envelope", "inspect", src); code != ExitVerify {
		t.Errorf("inspect of a non-envelope: code %d", code)
	}
}
