package envelope

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurer/kurer/internal/pki/pkitest"
)

// memFile is a File backed by bytes.
func memFile(name string, data []byte) File {
	return File{Name: name, Size: int64(len(data)), MediaType: mediaType(name),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
}

type pkitestAccount = pkitest.Account

type fixture struct {
	p        *pkitest.PKI
	from, to *pkitest.Account
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	p := pkitest.New(tb, "oslo", "trondheim", "bergen")
	return &fixture{p: p, from: p.Accounts["oslo"], to: p.Accounts["trondheim"]}
}

func (f *fixture) sealOpts(profile Profile) SealOptions {
	return SealOptions{Profile: profile, Signer: f.from.Key, SignerCert: f.from.Cert, Recipients: []*x509.Certificate{f.to.Cert}}
}

func (f *fixture) openOpts() OpenOptions {
	return OpenOptions{
		Keys:  []Key{{Cert: f.to.Cert, Decrypter: f.to.Key.(crypto.Decrypter)}},
		Roots: f.p.Pool,
	}
}

func testManifest() *Manifest {
	return &Manifest{Type: "no.kurer.test.v1", From: "oslo-id", To: "trondheim-id", Headers: map[string]string{"k": "v"}}
}

func sealT(tb testing.TB, f *fixture, profile Profile, files []File) ([]byte, *Manifest) {
	tb.Helper()
	var buf bytes.Buffer
	m := testManifest()
	if err := Seal(context.Background(), &buf, m, files, f.sealOpts(profile)); err != nil {
		tb.Fatalf("seal: %v", err)
	}
	return buf.Bytes(), m
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func assertEmpty(tb testing.TB, dir string) {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		tb.Fatal(err)
	}
	if len(ents) > 0 {
		tb.Fatalf("output directory %s is not empty: %d entries", dir, len(ents))
	}
	// nothing left beside it either (temp dirs, spool files)
	sib, _ := os.ReadDir(filepath.Dir(dir))
	for _, e := range sib {
		if strings.HasPrefix(e.Name(), ".kurer-") {
			tb.Fatalf("left behind: %s", e.Name())
		}
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	f := newFixture(t)
	payload := map[string][]byte{
		"rapport.xml":          bytes.Repeat([]byte("<melding>bekymring</melding>\n"), 1000),
		"vedlegg/bilde.bin":    randBytes(200_000),
		"vedlegg/tom.txt":      {},
		"særskilt/æøå ÆØÅ.txt": []byte("norsk tekst"),
	}
	var files []File
	for n, d := range payload {
		files = append(files, memFile(n, d))
	}
	for _, profile := range []Profile{ProfileGCM, ProfileFiks} {
		t.Run(string(profile), func(t *testing.T) {
			env, m := sealT(t, f, profile, files)
			out := filepath.Join(t.TempDir(), "out")
			res, err := Open(t.Context(), bytes.NewReader(env), out, f.openOpts())
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if res.Manifest.ID != m.ID || res.Manifest.Type != m.Type || len(res.Files) != len(payload) {
				t.Fatalf("manifest differs: %+v", res.Manifest)
			}
			if !res.SignerCert.Equal(f.from.Cert) {
				t.Fatal("signer is not oslo")
			}
			for n, d := range payload {
				got, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(n)))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, d) {
					t.Fatalf("%s differs", n)
				}
			}
			if _, err := VerifySignature(res.ManifestBytes, res.Signature, f.p.Pool, time.Now()); err != nil {
				t.Fatalf("re-verify: %v", err)
			}
			for _, fe := range res.Files {
				sum := sha256.Sum256(payload[fe.Name])
				if fe.SHA256 != hex.EncodeToString(sum[:]) {
					t.Fatalf("%s: digest in manifest wrong", fe.Name)
				}
			}
		})
	}
}

func TestOpenErrorsAreTyped(t *testing.T) {
	f := newFixture(t)
	env, _ := sealT(t, f, ProfileGCM, []File{memFile("a.txt", []byte("hei"))})
	out := filepath.Join(t.TempDir(), "out")
	o := f.openOpts()
	o.Expect = Binding{To: "someone-else"}
	_, err := Open(t.Context(), bytes.NewReader(env), out, o)
	var e *Error
	if !errors.As(err, &e) || e.Reason != ReasonBinding {
		t.Fatalf("want binding error, got %v", err)
	}
	assertEmpty(t, out)
}

func TestSealOpenECDSASigner(t *testing.T) {
	f := newFixture(t)
	portal := f.p.Add(t, "portal", nil, time.Time{}, time.Time{}) // ECDSA P-256
	o := f.sealOpts(ProfileGCM)
	o.Signer, o.SignerCert = portal.Key, portal.Cert
	var buf bytes.Buffer
	if err := Seal(t.Context(), &buf, testManifest(), []File{memFile("a.txt", []byte("bekymring"))}, o); err != nil {
		t.Fatal(err)
	}
	oo := f.openOpts()
	oo.SenderCerts = []*x509.Certificate{portal.Cert}
	res, err := Open(t.Context(), bytes.NewReader(buf.Bytes()), filepath.Join(t.TempDir(), "o"), oo)
	if err != nil {
		t.Fatal(err)
	}
	if !res.SignerCert.Equal(portal.Cert) {
		t.Fatal("signer is not the portal")
	}
}

func TestSealRefuses(t *testing.T) {
	f := newFixture(t)
	portal := f.p.Add(t, "portal", nil, time.Time{}, time.Time{}) // ECDSA: cannot receive
	good := []File{memFile("a.txt", []byte("x"))}
	cases := []struct {
		name string
		mod  func(o *SealOptions, m *Manifest) []File
		want Reason
	}{
		{"ECDSA recipient", func(o *SealOptions, m *Manifest) []File { o.Recipients = []*x509.Certificate{portal.Cert}; return good }, ReasonUsage},
		{"no recipient", func(o *SealOptions, m *Manifest) []File { o.Recipients = nil; return good }, ReasonUsage},
		{"key not of cert", func(o *SealOptions, m *Manifest) []File { o.SignerCert = f.to.Cert; return good }, ReasonUsage},
		{"unknown profile", func(o *SealOptions, m *Manifest) []File { o.Profile = "des"; return good }, ReasonUsage},
		{"no type", func(o *SealOptions, m *Manifest) []File { m.Type = ""; return good }, ReasonUsage},
		{"no files", func(o *SealOptions, m *Manifest) []File { return nil }, ReasonUsage},
		{"reserved name", func(o *SealOptions, m *Manifest) []File { return []File{memFile("META-INF/manifest.json", nil)} }, ReasonNames},
		{"zip slip", func(o *SealOptions, m *Manifest) []File { return []File{memFile("../x", nil)} }, ReasonNames},
		{"too many files", func(o *SealOptions, m *Manifest) []File {
			o.Limits.MaxFiles = 1
			return []File{memFile("a", nil), memFile("b", nil)}
		}, ReasonLimits},
		{"size lies", func(o *SealOptions, m *Manifest) []File {
			fl := memFile("a", []byte("abc"))
			fl.Size = 2
			return []File{fl}
		}, ReasonIO},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := f.sealOpts(ProfileGCM)
			m := testManifest()
			files := tc.mod(&o, m)
			err := Seal(t.Context(), io.Discard, m, files, o)
			if ReasonOf(err) != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
		})
	}
}

func TestOpenCancelled(t *testing.T) {
	f := newFixture(t)
	env, _ := sealT(t, f, ProfileGCM, []File{memFile("a.bin", randBytes(300_000))})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	out := filepath.Join(t.TempDir(), "o")
	if _, err := Open(ctx, bytes.NewReader(env), out, f.openOpts()); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	assertEmpty(t, out)
}

func TestFilesFromPaths(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sak", "vedlegg"), 0o700)
	os.WriteFile(filepath.Join(dir, "sak", "melding.xml"), []byte("<m/>"), 0o600)
	os.WriteFile(filepath.Join(dir, "sak", "vedlegg", "brev.pdf"), []byte("%PDF"), 0o600)
	os.WriteFile(filepath.Join(dir, "enkel.txt"), []byte("x"), 0o600)
	files, err := FilesFromPaths(filepath.Join(dir, "sak"), filepath.Join(dir, "enkel.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name+"|"+f.MediaType)
	}
	want := "melding.xml|application/xml vedlegg/brev.pdf|application/pdf enkel.txt|text/plain; charset=utf-8"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "sak", "lenke")); err == nil {
		if _, err := FilesFromPaths(filepath.Join(dir, "sak")); err == nil {
			t.Fatal("symlink followed")
		}
	}
	if !shouldDeflate(File{Name: "m.xml", Size: 5000}) || shouldDeflate(files[0]) || shouldDeflate(File{Name: "big.xml", Size: 100 << 20}) || shouldDeflate(File{Name: "scan.pdf", Size: 5000}) {
		t.Fatal("store/deflate choice wrong")
	}
}
