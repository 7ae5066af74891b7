package envelope

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurer/kurer/internal/pki/pkitest"
)

type rawEntry struct {
	name   string
	data   []byte
	method uint16
}

// buildContainer writes an ASiC-E container with arbitrary (possibly hostile)
// entries, a manifest listing them and a valid signature over it.
func buildContainer(tb testing.TB, f *fixture, entries []rawEntry, manifest []byte) []byte {
	tb.Helper()
	if manifest == nil {
		m := testManifest()
		m.ID, m.Created = "5d0f1f4e-8a53-4d8e-b1a5-0c2d3e4f5a6b", time.Now().UTC().Truncate(time.Second)
		for _, e := range entries {
			sum := sha256.Sum256(e.data)
			m.Files = append(m.Files, FileEntry{Name: e.name, Size: int64(len(e.data)), SHA256: hex.EncodeToString(sum[:])})
		}
		var err error
		if manifest, err = marshalManifest(m); err != nil {
			tb.Fatal(err)
		}
	}
	p7s, err := signManifest(manifest, f.from.Key, f.from.Cert, nil)
	if err != nil {
		tb.Fatal(err)
	}
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.CreateRaw(&zip.FileHeader{Name: mimetypeName, Method: zip.Store, CRC32: crc32.ChecksumIEEE([]byte(MimeType)),
		CompressedSize64: uint64(len(MimeType)), UncompressedSize64: uint64(len(MimeType))})
	w.Write([]byte(MimeType))
	all := append(append([]rawEntry{}, entries...), rawEntry{name: ManifestName, data: manifest}, rawEntry{name: SignatureName, data: p7s})
	for _, e := range all {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: e.method})
		if err != nil {
			tb.Fatal(err)
		}
		w.Write(e.data)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return zbuf.Bytes()
}

// encryptContainer wraps container bytes in a CMS envelope to f.to.
func encryptContainer(tb testing.TB, f *fixture, profile Profile, container []byte) []byte {
	tb.Helper()
	var out bytes.Buffer
	cw, err := newCMSWriter(&out, profile, []*x509.Certificate{f.to.Cert}, rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	cw.Write(container)
	if err := cw.Close(); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

func openExpect(tb testing.TB, env []byte, o OpenOptions, want Reason) {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "out")
	_, err := Open(context.Background(), bytes.NewReader(env), out, o)
	if err == nil {
		tb.Fatalf("open succeeded, want %s failure", want)
	}
	if got := ReasonOf(err); got != want {
		tb.Fatalf("reason %q (%v), want %q", got, err, want)
	}
	assertEmpty(tb, out)
}

func TestTamperAnyByte(t *testing.T) {
	f := newFixture(t)
	files := []File{memFile("a.xml", bytes.Repeat([]byte("<x>data</x>"), 300)), memFile("b.bin", randBytes(5000))}
	for _, profile := range []Profile{ProfileGCM, ProfileFiks} {
		t.Run(string(profile), func(t *testing.T) {
			env, _ := sealT(t, f, profile, files)
			// positions across the header, the recipient info, the content
			// (every 97th byte) and the tail (mac, end-of-contents)
			var pos []int
			for i := 0; i < 64; i++ {
				pos = append(pos, i)
			}
			for i := 64; i < len(env); i += 97 {
				pos = append(pos, i)
			}
			for i := len(env) - 40; i < len(env); i++ {
				pos = append(pos, i)
			}
			base := t.TempDir()
			for _, p := range pos {
				bad := append([]byte(nil), env...)
				bad[p] ^= 0xff
				out := filepath.Join(base, "out")
				if _, err := Open(t.Context(), bytes.NewReader(bad), out, f.openOpts()); err == nil {
					t.Fatalf("byte %d of %d flipped: open succeeded", p, len(env))
				} else if ReasonOf(err) == "" {
					t.Fatalf("byte %d: untyped error %v", p, err)
				}
				assertEmpty(t, out)
			}
			// truncation and trailing garbage
			for _, bad := range [][]byte{env[:len(env)-1], env[:len(env)/2], append(append([]byte(nil), env...), 0)} {
				out := filepath.Join(base, "out")
				if _, err := Open(t.Context(), bytes.NewReader(bad), out, f.openOpts()); err == nil {
					t.Fatal("truncated or extended envelope opened")
				}
				assertEmpty(t, out)
			}
		})
	}
}

func TestKeyRotation(t *testing.T) {
	f := newFixture(t)
	newTo := f.p.Add(t, "trondheim-2027", pkitestRSA(t, f), time.Time{}, time.Time{})
	files := []File{memFile("a.txt", []byte("rotasjon"))}
	both := OpenOptions{Roots: f.p.Pool, Keys: []Key{
		{Cert: f.to.Cert, Decrypter: f.to.Key.(crypto.Decrypter)},
		{Cert: newTo.Cert, Decrypter: newTo.Key.(crypto.Decrypter)},
	}}
	for _, tc := range []struct {
		name       string
		recipients []*x509.Certificate
		keys       []Key
	}{
		{"sealed to new, receiver holds old+new", []*x509.Certificate{newTo.Cert}, both.Keys},
		{"sealed to old, receiver holds old+new", []*x509.Certificate{f.to.Cert}, both.Keys},
		{"sealed to old+new, receiver holds only new", []*x509.Certificate{f.to.Cert, newTo.Cert}, both.Keys[1:]},
		{"sealed to old+new, receiver holds only old", []*x509.Certificate{f.to.Cert, newTo.Cert}, both.Keys[:1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := f.sealOpts(ProfileGCM)
			o.Recipients = tc.recipients
			var buf bytes.Buffer
			if err := Seal(t.Context(), &buf, testManifest(), files, o); err != nil {
				t.Fatal(err)
			}
			oo := OpenOptions{Roots: f.p.Pool, Keys: tc.keys}
			if _, err := Open(t.Context(), bytes.NewReader(buf.Bytes()), filepath.Join(t.TempDir(), "o"), oo); err != nil {
				t.Fatalf("open: %v", err)
			}
			info, err := Inspect(bytes.NewReader(buf.Bytes()))
			if err != nil || len(info.Recipients) != len(tc.recipients) {
				t.Fatalf("inspect: %v %+v", err, info)
			}
		})
	}
}

// pkitestRSA returns a fresh RSA key distinct from the fixture's accounts.
func pkitestRSA(tb testing.TB, f *fixture) crypto.Signer {
	tb.Helper()
	other := pkitest.New(tb, "x1", "x2", "x3", "x4")
	return other.Accounts["x4"].Key
}

func TestOpenRefuses(t *testing.T) {
	f := newFixture(t)
	env, m := sealT(t, f, ProfileGCM, []File{memFile("a.txt", []byte("hei"))})
	other := pkitest.New(t, "evil")
	bergen := f.p.Accounts["bergen"]
	cases := []struct {
		name string
		mod  func(o *OpenOptions)
		want Reason
	}{
		{"wrong recipient", func(o *OpenOptions) {
			o.Keys = []Key{{Cert: bergen.Cert, Decrypter: bergen.Key.(crypto.Decrypter)}}
		}, ReasonDecrypt},
		{"right cert, wrong private key (implicit rejection)", func(o *OpenOptions) {
			o.Keys = []Key{{Cert: f.to.Cert, Decrypter: bergen.Key.(crypto.Decrypter)}}
		}, ReasonTag},
		{"untrusted CA", func(o *OpenOptions) { o.Roots = other.Pool }, ReasonChain},
		{"signer expired at the time of checking", func(o *OpenOptions) {
			o.Now = func() time.Time { return time.Now().AddDate(3, 0, 0) }
		}, ReasonChain},
		{"signer not yet valid at the time of checking", func(o *OpenOptions) {
			o.Now = func() time.Time { return time.Now().AddDate(0, 0, -2) }
		}, ReasonChain},
		{"signer not the sender", func(o *OpenOptions) { o.SenderCerts = []*x509.Certificate{bergen.Cert} }, ReasonSigner},
		{"binding id", func(o *OpenOptions) { o.Expect.ID = "other" }, ReasonBinding},
		{"binding type", func(o *OpenOptions) { o.Expect.Type = "other" }, ReasonBinding},
		{"binding from", func(o *OpenOptions) { o.Expect.From = "other" }, ReasonBinding},
		{"binding to", func(o *OpenOptions) { o.Expect.To = "other" }, ReasonBinding},
		{"envelope too large", func(o *OpenOptions) { o.Limits.MaxEnvelope = 500 }, ReasonLimits},
		{"too many files", func(o *OpenOptions) { o.Limits.MaxFiles = 1; o.Limits.MaxTotal = 1 }, ReasonLimits},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := f.openOpts()
			o.Expect = Binding{ID: m.ID, Type: m.Type, From: m.From, To: m.To}
			o.SenderCerts = []*x509.Certificate{f.from.Cert}
			tc.mod(&o)
			openExpect(t, env, o, tc.want)
		})
	}
	t.Run("all checks pass with the same options", func(t *testing.T) {
		o := f.openOpts()
		o.Expect = Binding{ID: m.ID, Type: m.Type, From: m.From, To: m.To}
		o.SenderCerts = []*x509.Certificate{f.from.Cert}
		if _, err := Open(t.Context(), bytes.NewReader(env), filepath.Join(t.TempDir(), "o"), o); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("output directory not empty", func(t *testing.T) {
		out := t.TempDir()
		os.WriteFile(filepath.Join(out, "x"), nil, 0o600)
		if _, err := Open(t.Context(), bytes.NewReader(env), out, f.openOpts()); ReasonOf(err) != ReasonUsage {
			t.Fatalf("want usage error, got %v", err)
		}
	})
}

func TestHostileContainers(t *testing.T) {
	f := newFixture(t)
	aring := "a\u030a.txt" // å decomposed
	bomb := make([]byte, 40<<20)
	cases := []struct {
		name    string
		entries []rawEntry
		want    Reason
	}{
		{"zip slip", []rawEntry{{name: "../evil.txt", data: []byte("x")}}, ReasonNames},
		{"zip slip inside", []rawEntry{{name: "a/../../evil.txt", data: []byte("x")}}, ReasonNames},
		{"absolute", []rawEntry{{name: "/etc/passwd", data: []byte("x")}}, ReasonNames},
		{"backslash", []rawEntry{{name: "a\\..\\evil.txt", data: []byte("x")}}, ReasonNames},
		{"empty segment", []rawEntry{{name: "a//b.txt", data: []byte("x")}}, ReasonNames},
		{"control char", []rawEntry{{name: "a\x07.txt", data: []byte("x")}}, ReasonNames},
		{"not NFC", []rawEntry{{name: aring, data: []byte("x")}}, ReasonNames},
		{"duplicate", []rawEntry{{name: "a.txt", data: []byte("x")}, {name: "a.txt", data: []byte("y")}}, ReasonNames},
		{"duplicate case", []rawEntry{{name: "A.txt", data: []byte("x")}, {name: "a.txt", data: []byte("y")}}, ReasonNames},
		{"file and dir", []rawEntry{{name: "a", data: []byte("x")}, {name: "a/b", data: []byte("y")}}, ReasonNames},
		{"extra META-INF entry", []rawEntry{{name: "META-INF/other.xml", data: []byte("x")}}, ReasonNames},
		{"zip bomb", []rawEntry{{name: "bomb.bin", data: bomb, method: zip.Deflate}}, ReasonLimits},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := encryptContainer(t, f, ProfileGCM, buildContainer(t, f, tc.entries, nil))
			openExpect(t, env, f.openOpts(), tc.want)
		})
	}
	t.Run("file not in manifest", func(t *testing.T) {
		m := testManifest()
		m.ID, m.Created = "x", time.Now()
		sum := sha256.Sum256([]byte("x"))
		m.Files = []FileEntry{{Name: "a.txt", Size: 1, SHA256: hex.EncodeToString(sum[:])}}
		mb, _ := marshalManifest(m)
		c := buildContainer(t, f, []rawEntry{{name: "a.txt", data: []byte("x")}, {name: "b.txt", data: []byte("y")}}, mb)
		openExpect(t, encryptContainer(t, f, ProfileGCM, c), f.openOpts(), ReasonDigest)
	})
	t.Run("digest mismatch", func(t *testing.T) {
		m := testManifest()
		m.ID, m.Created = "x", time.Now()
		sum := sha256.Sum256([]byte("other"))
		m.Files = []FileEntry{{Name: "a.txt", Size: 1, SHA256: hex.EncodeToString(sum[:])}}
		mb, _ := marshalManifest(m)
		c := buildContainer(t, f, []rawEntry{{name: "a.txt", data: []byte("x")}}, mb)
		openExpect(t, encryptContainer(t, f, ProfileFiks, c), f.openOpts(), ReasonDigest)
	})
	t.Run("deep asn.1 in signature", func(t *testing.T) {
		c := buildContainer(t, f, []rawEntry{{name: "a.txt", data: []byte("x")}}, nil)
		deep := bytes.Repeat([]byte{0x30, 0x80}, 5000)
		deep = append(deep, bytes.Repeat([]byte{0, 0}, 5000)...)
		env := encryptContainer(t, f, ProfileGCM, rebuild(t, f, c, deep))
		openExpect(t, env, f.openOpts(), ReasonLimits)
	})
	t.Run("no signature", func(t *testing.T) {
		c := buildContainer(t, f, []rawEntry{{name: "a.txt", data: []byte("x")}}, nil)
		env := encryptContainer(t, f, ProfileGCM, rebuild(t, f, c, []byte{0x30, 0x00}))
		openExpect(t, env, f.openOpts(), ReasonSignature)
	})
}

// signatureOf returns the signature entry of container c.
func signatureOf(tb testing.TB, c []byte) []byte {
	zr, err := zip.NewReader(bytes.NewReader(c), int64(len(c)))
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range zr.File {
		if f.Name == SignatureName {
			d, _ := readEntry(f, 1<<20)
			return d
		}
	}
	tb.Fatal("no signature")
	return nil
}

// rebuild copies container c with its signature replaced by sig.
func rebuild(tb testing.TB, f *fixture, c, sig []byte) []byte {
	zr, err := zip.NewReader(bytes.NewReader(c), int64(len(c)))
	if err != nil {
		tb.Fatal(err)
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, e := range zr.File {
		if e.Name == SignatureName {
			w, _ := zw.CreateHeader(&zip.FileHeader{Name: e.Name, Method: zip.Store})
			w.Write(sig)
			continue
		}
		if err := zw.Copy(e); err != nil {
			tb.Fatal(err)
		}
	}
	zw.Close()
	return out.Bytes()
}

func TestNorwegianNamesRoundTrip(t *testing.T) {
	f := newFixture(t)
	decomposed := "rapporter/bl\u00e5b\u00e6r/Sa\u030akalt \u00f8ye.txt" // å written decomposed in "Såkalt"
	composed := "rapporter/blåbær/Såkalt øye.txt"
	env, _ := sealT(t, f, ProfileGCM, []File{memFile(decomposed, []byte("innhold")), memFile("ÆØÅ.txt", []byte("store"))})
	out := filepath.Join(t.TempDir(), "out")
	res, err := Open(t.Context(), bytes.NewReader(env), out, f.openOpts())
	if err != nil {
		t.Fatal(err)
	}
	if res.Files[0].Name != composed {
		t.Fatalf("name %q, want NFC %q", res.Files[0].Name, composed)
	}
	for _, n := range []string{composed, "ÆØÅ.txt"} {
		if _, err := os.Stat(filepath.Join(out, filepath.FromSlash(n))); err != nil {
			t.Fatal(err)
		}
	}
	// composed and decomposed forms of one name are duplicates
	var buf bytes.Buffer
	err = Seal(t.Context(), &buf, testManifest(), []File{memFile(decomposed, nil), memFile(composed, nil)}, f.sealOpts(ProfileGCM))
	if ReasonOf(err) != ReasonNames {
		t.Fatalf("want names error for NFC duplicates, got %v", err)
	}
}

func TestCleanName(t *testing.T) {
	good := map[string]string{"a.txt": "a.txt", "dir/sub/f.pdf": "dir/sub/f.pdf", "a\u030a": "å", "..a": "..a",
		"console.txt": "console.txt", "com10": "com10", "Brev til mor (2).pdf": "Brev til mor (2).pdf"}
	for in, want := range good {
		if got, err := CleanName(in, 255); err != nil || got != want {
			t.Errorf("CleanName(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "..", "../a", "a/..", "a/./b", "/a", "a\\b", "a//b", "a/", "C:x", "a\x00b", "a\nb", strings.Repeat("x", 256), "\xff",
		"a:b", "stream.txt:ads", "a?.txt", "dir./f", "f ", "CON", "nul.txt", "dir/LPT1.log", "com9"} {
		if _, err := CleanName(bad, 255); ReasonOf(err) != ReasonNames {
			t.Errorf("CleanName(%q) accepted (%v)", bad, err)
		}
	}
}

func TestBERDepth(t *testing.T) {
	ok := append(bytes.Repeat([]byte{0x30, 0x80}, 10), bytes.Repeat([]byte{0, 0}, 10)...)
	if err := berDepth(ok, 24); err != nil {
		t.Fatal(err)
	}
	deep := append(bytes.Repeat([]byte{0x30, 0x80}, 100), bytes.Repeat([]byte{0, 0}, 100)...)
	if ReasonOf(berDepth(deep, 24)) != ReasonLimits {
		t.Fatal("deep nesting accepted")
	}
	var def []byte
	for i := 0; i < 50; i++ {
		def = append([]byte{0x30, byte(len(def))}, def...)
		if len(def) > 120 {
			break
		}
	}
	if ReasonOf(berDepth(def, 24)) != ReasonLimits {
		t.Fatal("deep definite nesting accepted")
	}
	for _, bad := range [][]byte{{0x30}, {0x30, 0x05, 0x00}, {0x30, 0x80, 0x02, 0x01, 0x00}, {0x04, 0x80}} {
		if berDepth(bad, 24) == nil {
			t.Errorf("malformed % x accepted", bad)
		}
	}
}

func TestCBCCraftedContent(t *testing.T) {
	f := newFixture(t)
	for _, n := range []int{0, 1, 15, 17, 33} {
		env := encryptContainer(t, f, ProfileFiks, nil)
		// replace the (single) content chunk with n bytes
		i := bytes.Index(env, []byte{0xa0, 0x80, 0x04})
		if i < 0 {
			t.Fatal("content not found")
		}
		crafted := append(append([]byte(nil), env[:i+2]...), 0x04, byte(n))
		crafted = append(crafted, randBytes(n)...)
		crafted = append(crafted, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
		openExpect(t, crafted, f.openOpts(), ReasonDecrypt)
	}
}
