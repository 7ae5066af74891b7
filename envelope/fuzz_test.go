package envelope

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kurer/kurer/internal/pki"
)

// The committed test PKI (testdata/pki, TEST ONLY keys, valid 2026-2126) lets
// committed envelopes in testdata/ open in every run, so the fuzz seeds reach
// deep into Open and TestCommittedEnvelopes guards the format against
// accidental change. Regenerate with: go test ./envelope -run TestCommittedEnvelopes -update
var update = flag.Bool("update", false, "regenerate envelope/testdata (test PKI, seed envelopes, fuzz corpus)")

// corpusTime is inside the test PKI's validity.
var corpusTime = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

type testPKI struct {
	roots          *x509.CertPool
	sender, recip  *x509.Certificate
	senderKey, key crypto.Signer
}

func loadTestPKI(tb testing.TB) *testPKI {
	tb.Helper()
	dir := filepath.Join("testdata", "pki")
	load := func(n string) (*x509.Certificate, crypto.Signer) {
		c, err := pki.LoadCert(filepath.Join(dir, n+".pem"))
		if err != nil {
			tb.Fatal(err)
		}
		if n == "ca" {
			return c, nil
		}
		k, err := pki.LoadKey(filepath.Join(dir, n+".key"))
		if err != nil {
			tb.Fatal(err)
		}
		return c, k
	}
	ca, _ := load("ca")
	s, sk := load("sender")
	r, rk := load("recipient")
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{roots: pool, sender: s, senderKey: sk, recip: r, key: rk}
}

func (p *testPKI) openOpts() OpenOptions {
	return OpenOptions{
		Keys:  []Key{{Cert: p.recip, Decrypter: p.key.(crypto.Decrypter)}},
		Roots: p.roots, SenderCerts: []*x509.Certificate{p.sender},
		Now: func() time.Time { return corpusTime },
	}
}

func writeTestPKI(tb testing.TB) {
	dir := filepath.Join("testdata", "pki")
	os.MkdirAll(dir, 0o755)
	nb, na := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2126, 1, 1, 0, 0, 0, 0, time.UTC)
	ca, err := pki.NewDevCA(pki.ECDSAP256, pki.Options{Now: func() time.Time { return nb.Add(time.Hour) }})
	if err != nil {
		tb.Fatal(err)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	write("ca.pem", pki.EncodeCertPEM(ca.Cert))
	for _, n := range []string{"sender", "recipient"} {
		cert, key, err := ca.Issue(pki.LeafRequest{CommonName: "kurer test " + n, KeyType: "rsa2048", NotBefore: nb, NotAfter: na}, pki.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		kp, _ := pki.EncodeKeyPEM(key)
		write(n+".pem", pki.EncodeCertPEM(cert))
		write(n+".key", kp)
	}
	write("README.md", []byte("TEST ONLY keys for envelope/ tests and fuzz seeds. Never trust them.\n"+
		"Regenerate: go test ./envelope -run TestCommittedEnvelopes -update\n"))
}

// corpusFile writes one seed in the native fuzzing corpus format.
func corpusFile(tb testing.TB, target, name string, data []byte) {
	dir := filepath.Join("testdata", "fuzz", target)
	os.MkdirAll(dir, 0o755)
	content := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

func seedFiles() []File {
	return []File{
		memFile("melding.xml", bytes.Repeat([]byte("<bekymring>tekst</bekymring>\n"), 40)),
		memFile("vedlegg/bilde æøå.bin", bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 300)),
	}
}

// TestCommittedEnvelopes opens the envelopes committed in testdata with the
// committed test PKI: the format must stay readable. With -update it
// regenerates the PKI, the envelopes and the seed corpus first.
func TestCommittedEnvelopes(t *testing.T) {
	if *update {
		writeTestPKI(t)
		p := loadTestPKI(t)
		for _, profile := range []Profile{ProfileGCM, ProfileFiks} {
			var buf bytes.Buffer
			m := &Manifest{ID: "6f1c2b9e-3d4a-4b5c-8d7e-9f0a1b2c3d4e", Type: "no.kurer.test.v1", From: "sender", To: "recipient",
				Created: corpusTime.Add(-time.Hour), Headers: map[string]string{"saksnr": "2026/1"}}
			err := Seal(t.Context(), &buf, m, seedFiles(), SealOptions{Profile: profile, Signer: p.senderKey, SignerCert: p.sender,
				Recipients: []*x509.Certificate{p.recip}, Now: func() time.Time { return corpusTime }})
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join("testdata", "envelope-"+string(profile)+".kenv"), buf.Bytes(), 0o644)
			corpusFile(t, "FuzzOpen", "envelope-"+string(profile), buf.Bytes())
			corpusFile(t, "FuzzInspect", "envelope-"+string(profile), buf.Bytes())
			// the container inside, for the zip reader
			out := filepath.Join(t.TempDir(), "o")
			if _, err := Open(t.Context(), bytes.NewReader(buf.Bytes()), out, p.openOpts()); err != nil {
				t.Fatal(err)
			}
		}
		zc := buildContainerPKI(t, p)
		corpusFile(t, "FuzzZipReader", "container", zc)
		corpusFile(t, "FuzzZipReader", "truncated", zc[:len(zc)/2])
		mb, _ := marshalManifest(&Manifest{ID: "x", Type: "t", From: "a", To: "b", Created: corpusTime,
			Files: []FileEntry{{Name: "a/b æ.txt", Size: 3, SHA256: fmt.Sprintf("%064x", 1), MediaType: "text/plain"}}})
		corpusFile(t, "FuzzManifest", "valid", mb)
		corpusFile(t, "FuzzManifest", "duplicate-key", []byte(`{"id":"x","id":"y"}`))
		corpusFile(t, "FuzzManifest", "deep", bytes.Repeat([]byte("["), 100))
	}
	p := loadTestPKI(t)
	for _, profile := range []Profile{ProfileGCM, ProfileFiks} {
		data, err := os.ReadFile(filepath.Join("testdata", "envelope-"+string(profile)+".kenv"))
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "o")
		res, err := Open(t.Context(), bytes.NewReader(data), out, p.openOpts())
		if err != nil {
			t.Fatalf("%s: committed envelope no longer opens: %v", profile, err)
		}
		if len(res.Files) != 2 || res.Files[1].Name != "vedlegg/bilde æøå.bin" {
			t.Fatalf("%s: files %+v", profile, res.Files)
		}
		info, err := Inspect(bytes.NewReader(data))
		if err != nil || info.Profile != profile {
			t.Fatalf("%s: inspect %v %+v", profile, err, info)
		}
	}
}

// buildContainerPKI builds a valid container signed by the test PKI.
func buildContainerPKI(tb testing.TB, p *testPKI) []byte {
	f := &fixture{from: &pkitestAccount{Cert: p.sender, Key: p.senderKey}}
	return buildContainer(tb, f, []rawEntry{{name: "a.txt", data: []byte("innhold")}}, nil)
}

func FuzzOpen(f *testing.F) {
	p := loadTestPKI(f)
	base := f.TempDir()
	i := 0
	f.Fuzz(func(t *testing.T, data []byte) {
		i++
		out := filepath.Join(base, fmt.Sprintf("o%d", i))
		o := p.openOpts()
		o.Limits = Limits{MaxEnvelope: 1 << 20, MaxTotal: 1 << 20}
		res, err := Open(t.Context(), bytes.NewReader(data), out, o)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("untyped error: %v", err)
			}
			if ents, _ := os.ReadDir(out); len(ents) > 0 {
				t.Fatal("failed open left files behind")
			}
			return
		}
		os.RemoveAll(res.Dir)
	})
}

func FuzzInspect(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := inspect(bytes.NewReader(data), Limits{MaxEnvelope: 1 << 20}.withDefaults()); err != nil && ReasonOf(err) == "" {
			t.Fatalf("untyped error: %v", err)
		}
	})
}

func FuzzZipReader(f *testing.F) {
	l := Limits{MaxFiles: 50, MaxTotal: 1 << 20, MaxManifest: 64 << 10, MaxSignature: 64 << 10}.withDefaults()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := readContainer(bytes.NewReader(data), int64(len(data)), l)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		buf := make([]byte, 4096)
		for _, n := range c.order {
			fe := FileEntry{Name: n, Size: int64(c.payload[n].UncompressedSize64)}
			_ = extract(t.Context(), c.payload[n], fe, filepath.Join(t.TempDir(), "x"), buf, false)
		}
	})
}

func FuzzManifest(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data, Limits{})
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		// what parses must re-encode and parse to the same names
		mb, err := marshalManifest(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseManifest(mb, Limits{})
		if err != nil {
			t.Fatalf("re-encoded manifest refused: %v", err)
		}
		for i := range m.Files {
			if m.Files[i] != m2.Files[i] {
				t.Fatal("file entries changed in a round trip")
			}
			if n, err := CleanName(m.Files[i].Name, 0); err != nil || n != m.Files[i].Name {
				t.Fatalf("accepted unsafe or non-NFC name %q", m.Files[i].Name)
			}
		}
	})
}
