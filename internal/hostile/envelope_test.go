package hostile_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/pki/pkitest"
)

// envFixture is a sender, a receiver and an envelope sealed between them
// with envelope.Seal, from real pkitest certificates.
type envFixture struct {
	p        *pkitest.PKI
	from, to *pkitest.Account
	m        envelope.Manifest
	sealed   []byte
}

func seal(t *testing.T, p *pkitest.PKI, from, to *pkitest.Account, files map[string]string, mod func(*envelope.Manifest)) ([]byte, envelope.Manifest) {
	t.Helper()
	m := envelope.Manifest{ID: uuid.NewString(), Type: gatewaytest.MessageType, From: uuid.NewString(), To: uuid.NewString()}
	if mod != nil {
		mod(&m)
	}
	var fs []envelope.File
	for name, content := range files {
		c := content
		fs = append(fs, envelope.File{Name: name, Size: int64(len(c)), Open: func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader(c)), nil
		}})
	}
	var out bytes.Buffer
	err := envelope.Seal(context.Background(), &out, &m, fs, envelope.SealOptions{
		Signer: from.Key, SignerCert: from.Cert, Recipients: []*x509.Certificate{to.Cert},
	})
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	return out.Bytes(), m
}

func newEnvFixture(t *testing.T) *envFixture {
	t.Helper()
	p := pkitest.New(t, "oslo", "bergen", "trondheim")
	f := &envFixture{p: p, from: p.Accounts["oslo"], to: p.Accounts["bergen"]}
	f.sealed, f.m = seal(t, p, f.from, f.to, map[string]string{"sak.pdf": strings.Repeat("personopplysninger ", 2000), "melding.json": `{"a":1}`}, nil)
	return f
}

func (f *envFixture) opts() envelope.OpenOptions {
	return envelope.OpenOptions{
		Keys:        []envelope.Key{{Cert: f.to.Cert, Decrypter: f.to.Key.(crypto.Decrypter)}},
		Roots:       f.p.Pool,
		SenderCerts: []*x509.Certificate{f.from.Cert},
		Expect:      envelope.Binding{ID: f.m.ID, Type: f.m.Type, From: f.m.From, To: f.m.To},
	}
}

// openRefused opens data and asserts the exact reason and that the output
// directory holds nothing (no partial plaintext).
func openRefused(t *testing.T, data []byte, o envelope.OpenOptions, want envelope.Reason) {
	t.Helper()
	parent := t.TempDir()
	out := filepath.Join(parent, "out")
	_, err := envelope.Open(context.Background(), bytes.NewReader(data), out, o)
	if err == nil {
		t.Fatalf("open succeeded, want %s", want)
	}
	if got := envelope.ReasonOf(err); got != want {
		t.Fatalf("reason %q (%v), want %q", got, err, want)
	}
	// Nothing is left: not the output, not a spool file.
	if ents, err := os.ReadDir(out); err == nil && len(ents) > 0 {
		t.Fatalf("output dir holds %d entries after a refusal", len(ents))
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "out" {
			t.Fatalf("left behind %q after a refusal", e.Name())
		}
		sub, _ := os.ReadDir(filepath.Join(parent, e.Name()))
		if len(sub) > 0 {
			t.Fatalf("output dir not empty after a refusal")
		}
	}
}

// TestEnvelopeRefusals: real envelopes from envelope.Seal, altered or opened
// under the wrong conditions, are refused with the exact reason and leave
// nothing behind.
func TestEnvelopeRefusals(t *testing.T) {
	f := newEnvFixture(t)
	// Control: the untouched envelope opens.
	if _, err := envelope.Open(context.Background(), bytes.NewReader(f.sealed), filepath.Join(t.TempDir(), "ok"), f.opts()); err != nil {
		t.Fatalf("control open: %v", err)
	}
	n := len(f.sealed)
	flip := func(pos int) []byte {
		b := append([]byte(nil), f.sealed...)
		b[pos] ^= 0x40
		return b
	}
	// Ciphertext positions: the content lies between the CMS head (about
	// 1 KiB with one RSA-2048 recipient) and the 16-byte tag at the end.
	for _, pos := range []int{n / 2, n / 3, 2 * n / 3, n - 40} {
		t.Run("tampered-ciphertext-"+itoa(pos), func(t *testing.T) {
			openRefused(t, flip(pos), f.opts(), envelope.ReasonTag)
		})
	}
	t.Run("tampered-trailer", func(t *testing.T) {
		openRefused(t, flip(n-5), f.opts(), envelope.ReasonFormat)
	})
	for _, cut := range []int{n - 1, n - 17, n / 2, 200, 10} {
		t.Run("truncated-"+itoa(cut), func(t *testing.T) {
			got := ReasonOfOpen(t, f.sealed[:cut], f.opts())
			if got != envelope.ReasonFormat && got != envelope.ReasonTag {
				t.Fatalf("truncated to %d: reason %q, want format or tag", cut, got)
			}
			openRefused(t, f.sealed[:cut], f.opts(), got)
		})
	}
	t.Run("wrong-recipient", func(t *testing.T) {
		o := f.opts()
		tr := f.p.Accounts["trondheim"]
		o.Keys = []envelope.Key{{Cert: tr.Cert, Decrypter: tr.Key.(crypto.Decrypter)}}
		openRefused(t, f.sealed, o, envelope.ReasonDecrypt)
	})
	t.Run("signer-not-sender-account", func(t *testing.T) {
		o := f.opts()
		o.SenderCerts = []*x509.Certificate{f.p.Accounts["trondheim"].Cert}
		openRefused(t, f.sealed, o, envelope.ReasonSigner)
	})
	t.Run("untrusted-ca", func(t *testing.T) {
		o := f.opts()
		o.Roots = pkitest.New(t).Pool
		openRefused(t, f.sealed, o, envelope.ReasonChain)
	})
	t.Run("forged-signer-other-ca", func(t *testing.T) {
		// A forger with a certificate of the same name from another CA.
		evil := pkitest.New(t, "oslo")
		data, _ := seal(t, evil, evil.Accounts["oslo"], f.to, map[string]string{"a.txt": "x"}, func(m *envelope.Manifest) { *m = f.m; m.Files = nil; m.Created = time.Time{} })
		openRefused(t, data, f.opts(), envelope.ReasonChain)
	})
	t.Run("expired-signer-cert-at-open", func(t *testing.T) {
		o := f.opts()
		o.Now = func() time.Time { return f.from.Cert.NotAfter.Add(time.Hour) }
		openRefused(t, f.sealed, o, envelope.ReasonChain)
	})
	t.Run("not-yet-valid-signer-cert-at-open", func(t *testing.T) {
		o := f.opts()
		o.Now = func() time.Time { return f.from.Cert.NotBefore.Add(-time.Hour) }
		openRefused(t, f.sealed, o, envelope.ReasonChain)
	})
	t.Run("signed-with-expired-cert", func(t *testing.T) {
		old := f.p.Add(t, "oslo-old", nil, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
		data, _ := sealAt(t, f, old, time.Now().Add(-2*time.Hour))
		o := f.opts()
		o.SenderCerts = []*x509.Certificate{old.Cert}
		openRefused(t, data, o, envelope.ReasonSignature)
	})
	t.Run("signed-with-not-yet-valid-cert", func(t *testing.T) {
		fut := f.p.Add(t, "oslo-future", nil, time.Now().Add(time.Hour), time.Now().Add(48*time.Hour))
		data, _ := sealAt(t, f, fut, time.Now().Add(2*time.Hour))
		o := f.opts()
		o.SenderCerts = []*x509.Certificate{fut.Cert}
		openRefused(t, data, o, envelope.ReasonSignature)
	})
	bind := []struct {
		name string
		mod  func(*envelope.Binding)
	}{
		{"binding-to-mismatch", func(b *envelope.Binding) { b.To = uuid.NewString() }},
		{"binding-from-mismatch", func(b *envelope.Binding) { b.From = uuid.NewString() }},
		{"binding-id-mismatch", func(b *envelope.Binding) { b.ID = uuid.NewString() }},
		{"binding-type-mismatch", func(b *envelope.Binding) { b.Type = "no.kurer.annet.v1" }},
	}
	for _, tc := range bind {
		t.Run(tc.name, func(t *testing.T) {
			o := f.opts()
			tc.mod(&o.Expect)
			openRefused(t, f.sealed, o, envelope.ReasonBinding)
		})
	}
	t.Run("too-many-files", func(t *testing.T) {
		files := map[string]string{}
		for i := 0; i < 5; i++ {
			files["f"+itoa(i)+".txt"] = "x"
		}
		data, m := seal(t, f.p, f.from, f.to, files, nil)
		o := f.opts()
		o.Expect = envelope.Binding{ID: m.ID}
		o.Limits.MaxFiles = 4
		openRefused(t, data, o, envelope.ReasonLimits)
	})
	t.Run("envelope-over-max", func(t *testing.T) {
		o := f.opts()
		o.Limits.MaxEnvelope = int64(n / 2)
		openRefused(t, f.sealed, o, envelope.ReasonLimits)
	})
	t.Run("total-over-max", func(t *testing.T) {
		o := f.opts()
		o.Limits.MaxTotal = 1000
		openRefused(t, f.sealed, o, envelope.ReasonLimits)
	})
	t.Run("manifest-over-max", func(t *testing.T) {
		data, m := seal(t, f.p, f.from, f.to, map[string]string{"a.txt": "x"}, func(m *envelope.Manifest) {
			m.Headers = map[string]string{"pad": strings.Repeat("p", 8<<10)}
		})
		o := f.opts()
		o.Expect = envelope.Binding{ID: m.ID}
		o.Limits.MaxManifest = 4 << 10
		openRefused(t, data, o, envelope.ReasonLimits)
	})
	t.Run("not-cms-at-all", func(t *testing.T) {
		openRefused(t, []byte("PK\x03\x04 this is a zip, not CMS"), f.opts(), envelope.ReasonFormat)
	})
	t.Run("deep-asn1-nesting", func(t *testing.T) {
		// ContentInfo{authEnvelopedData, [0] AuthEnvelopedData{version 0,
		// recipientInfos SET {200 nested indefinite SEQUENCEs}}}.
		var deep []byte
		for i := 0; i < 200; i++ {
			deep = append(deep, 0x30, 0x80)
		}
		for i := 0; i < 200; i++ {
			deep = append(deep, 0, 0)
		}
		b := []byte{0x30, 0x80, 0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
			0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x00, 0x31, 0x82, byte(len(deep) >> 8), byte(len(deep))}
		b = append(b, deep...)
		openRefused(t, b, f.opts(), envelope.ReasonLimits)
	})
}

// sealAt seals a small envelope from signer at the clock time at (so that
// Seal, which may check its own certificate, signs while it is valid).
func sealAt(t *testing.T, f *envFixture, signer *pkitest.Account, at time.Time) ([]byte, envelope.Manifest) {
	t.Helper()
	m := f.m
	m.Files, m.Created = nil, time.Time{}
	var out bytes.Buffer
	err := envelope.Seal(context.Background(), &out, &m, []envelope.File{{Name: "a.txt", Size: 1, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader("x")), nil
	}}}, envelope.SealOptions{
		Signer: signer.Key, SignerCert: signer.Cert, Recipients: []*x509.Certificate{f.to.Cert},
		Now: func() time.Time { return at },
	})
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	return out.Bytes(), m
}

// ReasonOfOpen opens data and returns the refusal reason ("" if it opened).
func ReasonOfOpen(t *testing.T, data []byte, o envelope.OpenOptions) envelope.Reason {
	t.Helper()
	_, err := envelope.Open(context.Background(), bytes.NewReader(data), filepath.Join(t.TempDir(), "probe"), o)
	if err == nil {
		return ""
	}
	return envelope.ReasonOf(err)
}

func itoa(i int) string { return strconv.Itoa(i) }
