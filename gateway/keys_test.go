package gateway

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/client"
)

// testKeys generates one ECDSA P-256 and one RSA-2048 key for all tests.
var testKeys = sync.OnceValues(func() (*ecdsa.PrivateKey, *rsa.PrivateKey) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return ec, rk
})

// opaqueSigner exposes a key only as a crypto.Signer, like an HSM does. It
// records the random source it was given.
type opaqueSigner struct {
	key  crypto.Signer
	rand io.Reader
}

func (o *opaqueSigner) Public() crypto.PublicKey { return o.key.Public() }

func (o *opaqueSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	o.rand = r
	return o.key.Sign(r, digest, opts)
}

// funcSigner returns what sign returns, for error paths.
type funcSigner struct {
	pub  crypto.PublicKey
	sign func() ([]byte, error)
}

func (f funcSigner) Public() crypto.PublicKey { return f.pub }

func (f funcSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return f.sign() }

func testClaims() api.NoticeClaims {
	at := time.Date(2025, 3, 4, 5, 6, 7, 890000000, time.UTC)
	return api.NoticeClaims{
		Issuer: "gw-test", ID: "7d0f4a3e-9a51-4c43-8f1e-2f6f2d7c1b11", IssuedAt: at.Unix(),
		Event: api.EventRejected, MessageID: "0b8e1c6a-5b7e-4c1f-9d3a-6a2f1e4d5c6b",
		From: "3f1e2d3c-4b5a-4697-8877-665544332211", To: "0b6f2c1e-8d4a-4f3b-9c2d-1a2b3c4d5e6f",
		Type: "no.kurer.barnevern.sak.overforing.v1", Digest: "sha-256=:Ypr7cRCKJ0RzZG6xUjbH0DY5O2sTVx6qvYkC8hTt1h0=:",
		Reason: "bad_content", Detail: "ikke gyldig <xml> & \"æøå\"", At: at,
	}
}

// jwxSign is how sign worked before: jws.Sign with kid and typ headers.
func jwxSign(tb testing.TB, s *signer, c api.NoticeClaims) string {
	tb.Helper()
	payload, err := json.Marshal(c)
	if err != nil {
		tb.Fatal(err)
	}
	h := jws.NewHeaders()
	if err := h.Set(jws.KeyIDKey, s.kid); err != nil {
		tb.Fatal(err)
	}
	if err := h.Set(jws.TypeKey, noticeType); err != nil {
		tb.Fatal(err)
	}
	out, err := jws.Sign(payload, jws.WithKey(s.alg, s.key, jws.WithProtectedHeaders(h)))
	if err != nil {
		tb.Fatal(err)
	}
	return string(out)
}

// flip decodes part i of the compact JWS tok, flips a bit in its middle byte
// and encodes it again.
func flip(tb testing.TB, tok string, i int) string {
	tb.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		tb.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	parts[i] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestSign(t *testing.T) {
	ec, rk := testKeys()
	for _, tc := range []struct {
		name   string
		key    crypto.Signer
		alg    string
		sigLen int
		opaque bool
	}{
		{"ES256", ec, "ES256", 64, false},
		{"RS256", rk, "RS256", 256, false},
		{"ES256 crypto.Signer only", &opaqueSigner{key: ec}, "ES256", 64, true},
		{"RS256 crypto.Signer only", &opaqueSigner{key: rk}, "RS256", 256, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newSigner(tc.key, "gw-test")
			if err != nil {
				t.Fatal(err)
			}
			s.rand = io.MultiReader(rand.Reader) // a reader of our own, to see it passed on
			c := testClaims()
			tok, err := s.sign(c)
			if err != nil {
				t.Fatal(err)
			}
			if o, ok := tc.key.(*opaqueSigner); ok && o.rand != s.rand {
				t.Errorf("key.Sign got random source %v, want the signer's", o.rand)
			}

			// Agents verify with the published JWKS and require the kid.
			set, err := jwk.Parse(s.jwks)
			if err != nil {
				t.Fatal(err)
			}
			got, err := client.VerifyNotice(set, tok)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Errorf("claims\n got %+v\nwant %+v", got, c)
			}

			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				t.Fatalf("%d parts, want 3", len(parts))
			}
			hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
			if err != nil {
				t.Fatal(err)
			}
			var h map[string]any
			if err := json.Unmarshal(hdr, &h); err != nil {
				t.Fatalf("header %s: %v", hdr, err)
			}
			if want := map[string]any{"alg": tc.alg, "kid": s.kid, "typ": noticeType}; !reflect.DeepEqual(h, want) {
				t.Errorf("header %v, want %v", h, want)
			}
			payload, err := base64.RawURLEncoding.DecodeString(parts[1])
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := json.Marshal(c); !bytes.Equal(payload, want) {
				t.Errorf("payload\n got %s\nwant %s", payload, want)
			}
			if sig, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil || len(sig) != tc.sigLen {
				t.Errorf("signature of %d bytes (%v), want %d", len(sig), err, tc.sigLen)
			}

			// The same header and payload as jwx produced; RS256 is
			// deterministic, so there the whole JWS is the same.
			if !tc.opaque {
				old := jwxSign(t, s, c)
				if tc.alg == "RS256" && tok != old {
					t.Errorf("JWS differs from jwx:\n got %s\nwant %s", tok, old)
				}
				if o := strings.Split(old, "."); parts[0] != o[0] || parts[1] != o[1] {
					t.Errorf("header.payload differs from jwx:\n got %s.%s\nwant %s.%s", parts[0], parts[1], o[0], o[1])
				}
			}

			for i, part := range []string{"header", "payload", "signature"} {
				if _, err := client.VerifyNotice(set, flip(t, tok, i)); err == nil {
					t.Errorf("verified with a flipped byte in the %s", part)
				}
			}
		})
	}
}

func TestSignKeyErrors(t *testing.T) {
	ec, rk := testKeys()
	for _, tc := range []struct {
		name string
		pub  crypto.PublicKey
		sig  []byte
		err  error
	}{
		{"ES256 key fails", &ec.PublicKey, nil, errors.New("hsm offline")},
		{"RS256 key fails", &rk.PublicKey, nil, errors.New("hsm offline")},
		{"ES256 raw instead of DER", &ec.PublicKey, bytes.Repeat([]byte{0x30}, 64), nil},
		{"ES256 empty", &ec.PublicKey, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newSigner(funcSigner{tc.pub, func() ([]byte, error) { return tc.sig, tc.err }}, "gw-test")
			if err != nil {
				t.Fatal(err)
			}
			tok, err := s.sign(testClaims())
			if err == nil {
				t.Fatalf("signed %q", tok)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("error %v does not wrap %v", err, tc.err)
			}
		})
	}
}

// derSig builds an ECDSA-Sig-Value with r and s as the raw INTEGER contents.
func derSig(r, s []byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(r) })
		b.AddASN1(asn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(s) })
	})
	return b.BytesOrPanic()
}

func rep(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

var ecdsaRawCases = []struct {
	name string
	der  []byte
	want []byte // nil: refused
}{
	{"32 bytes each", derSig(rep(0x11, 32), rep(0x22, 32)), cat(rep(0x11, 32), rep(0x22, 32))},
	{"sign byte", derSig(cat([]byte{0}, rep(0x80, 32)), cat([]byte{0}, rep(0xff, 32))), cat(rep(0x80, 32), rep(0xff, 32))},
	{"short r", derSig([]byte{0x01}, rep(0x7f, 32)), cat(rep(0, 31), []byte{0x01}, rep(0x7f, 32))},
	{"short s", derSig(rep(0x7f, 32), rep(0x7f, 30)), cat(rep(0x7f, 32), []byte{0, 0}, rep(0x7f, 30))},
	{"short with sign byte", derSig([]byte{0, 0x80}, cat([]byte{0}, rep(0x90, 31))), cat(rep(0, 31), []byte{0x80}, []byte{0}, rep(0x90, 31))},

	{"empty", []byte{}, nil},
	{"truncated", derSig(rep(0x11, 32), rep(0x22, 32))[:69], nil},
	{"not a sequence", []byte{0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}, nil},
	{"trailing bytes", cat(derSig([]byte{1}, []byte{1}), []byte{0}), nil},
	{"third integer", []byte{0x30, 0x09, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}, nil},
	{"only r", []byte{0x30, 0x03, 0x02, 0x01, 0x01}, nil},
	{"octet string", []byte{0x30, 0x06, 0x04, 0x01, 0x01, 0x02, 0x01, 0x01}, nil},
	{"empty integer", derSig([]byte{}, []byte{1}), nil},
	{"zero r", derSig([]byte{0}, []byte{1}), nil},
	{"zero s", derSig([]byte{1}, []byte{0}), nil},
	{"negative r", derSig(rep(0x80, 32), []byte{1}), nil},
	{"negative s", derSig([]byte{1}, []byte{0xff}), nil},
	{"needless zero", derSig([]byte{0, 1}, []byte{1}), nil},
	{"r of 33 bytes", derSig(rep(0x01, 33), []byte{1}), nil},
	{"s of 33 bytes after sign byte", derSig([]byte{1}, cat([]byte{0}, rep(0x80, 33))), nil},
	{"raw r||s", cat(rep(0x11, 32), rep(0x22, 32)), nil},
}

func TestAppendECDSARaw(t *testing.T) {
	for _, tc := range ecdsaRawCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := appendECDSARaw(nil, tc.der, 32)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted: %x", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("got  %x\nwant %x", got, tc.want)
			}
		})
	}
}

// TestAppendECDSARawReal converts real signatures: about half have a sign
// byte, some are shorter than 32 bytes.
func TestAppendECDSARawReal(t *testing.T) {
	ec, _ := testKeys()
	for i := range 300 {
		digest := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		der, err := ecdsa.SignASN1(rand.Reader, ec, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		raw, err := appendECDSARaw(nil, der, 32)
		if err != nil {
			t.Fatalf("%x: %v", der, err)
		}
		r, s := new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])
		if len(raw) != 64 || !ecdsa.Verify(&ec.PublicKey, digest[:], r, s) {
			t.Fatalf("%x -> %x does not verify", der, raw)
		}
	}
}

// FuzzAppendECDSARaw checks that whatever appendECDSARaw accepts is the
// canonical DER of the r and s it returns.
func FuzzAppendECDSARaw(f *testing.F) {
	for _, tc := range ecdsaRawCases {
		f.Add(tc.der)
	}
	minimal := func(v []byte) []byte {
		v = bytes.TrimLeft(v, "\x00")
		if v[0]&0x80 != 0 {
			v = append([]byte{0}, v...)
		}
		return v
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		raw, err := appendECDSARaw(nil, der, 32)
		if err != nil {
			return
		}
		if len(raw) != 64 {
			t.Fatalf("%d bytes", len(raw))
		}
		if again := derSig(minimal(raw[:32]), minimal(raw[32:])); !bytes.Equal(again, der) {
			t.Fatalf("accepted %x, canonical is %x", der, again)
		}
	})
}

func BenchmarkNoticeSign(b *testing.B) {
	ec, _ := testKeys()
	s, err := newSigner(ec, "gw-test")
	if err != nil {
		b.Fatal(err)
	}
	c := testClaims()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.sign(c); err != nil {
			b.Fatal(err)
		}
	}
}
