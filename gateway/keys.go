package gateway

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
)

// noticeType is the "typ" header of every notice JWS.
const noticeType = "kurer-notice+jwt"

// signer signs receipts and notices with the gateway key.
type signer struct {
	key  crypto.Signer
	alg  jwa.SignatureAlgorithm
	kid  string
	jwks []byte // the public JWKS document
	iss  string
	rand io.Reader // passed to key.Sign; crypto/rand.Reader by default

	header64 string // base64url of the protected header, the same for every notice
	ecSize   int    // byte length of r and of s for ECDSA keys; 0 for RSA
	sigLen   int    // signature length in bytes, to size the output
}

// protectedHeader is the JWS protected header of a notice.
type protectedHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// SigningAlgorithm returns the JWS algorithm kurer uses for key: ES256 for
// ECDSA P-256, RS256 for RSA (at least 2048 bits).
func SigningAlgorithm(pub crypto.PublicKey) (jwa.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return jwa.SignatureAlgorithm{}, errors.New("ECDSA keys must be P-256")
		}
		return jwa.ES256(), nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return jwa.SignatureAlgorithm{}, errors.New("RSA keys must have at least 2048 bits")
		}
		return jwa.RS256(), nil
	}
	return jwa.SignatureAlgorithm{}, fmt.Errorf("key type %T not supported (want ECDSA P-256 or RSA)", pub)
}

func newSigner(key crypto.Signer, iss string) (*signer, error) {
	alg, err := SigningAlgorithm(key.Public())
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	pub, err := jwk.Import(key.Public())
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	for k, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: alg, jwk.KeyUsageKey: "sig"} {
		if err := pub.Set(k, v); err != nil {
			return nil, err
		}
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	doc, err := json.Marshal(set)
	if err != nil {
		return nil, err
	}
	hdr, err := json.Marshal(protectedHeader{Alg: alg.String(), Kid: kid, Typ: noticeType})
	if err != nil {
		return nil, err
	}
	s := &signer{
		key: key, alg: alg, kid: kid, jwks: doc, iss: iss, rand: rand.Reader,
		header64: base64.RawURLEncoding.EncodeToString(hdr),
	}
	// SigningAlgorithm accepted only P-256 and RSA keys.
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		s.ecSize = (k.Curve.Params().BitSize + 7) / 8
		s.sigLen = 2 * s.ecSize
	case *rsa.PublicKey:
		s.sigLen = k.Size()
	}
	return s, nil
}

// sign returns the compact JWS (RFC 7515 §7.1) of claims:
// header64 "." base64url(payload) "." base64url(signature).
func (s *signer) sign(c api.NoticeClaims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	n := len(s.header64) + 1 + enc.EncodedLen(len(payload)) + 1 + enc.EncodedLen(s.sigLen)
	out := make([]byte, 0, n)
	out = append(out, s.header64...)
	out = append(out, '.')
	out = enc.AppendEncode(out, payload)

	// ES256 and RS256 both sign the SHA-256 of the signing input; with
	// crypto.SHA256 as opts an RSA key signs PKCS #1 v1.5.
	digest := sha256.Sum256(out)
	sig, err := s.key.Sign(s.rand, digest[:], crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("sign notice: %w", err)
	}
	out = append(out, '.')
	if s.ecSize > 0 {
		var raw [64]byte // r||s for P-256
		rs, err := appendECDSARaw(raw[:0], sig, s.ecSize)
		if err != nil {
			return "", fmt.Errorf("sign notice: %w", err)
		}
		out = enc.AppendEncode(out, rs)
	} else {
		out = enc.AppendEncode(out, sig)
	}
	return string(out), nil
}

// appendECDSARaw appends to dst the JWS form of the ASN.1 DER ECDSA signature
// der: r and s as big-endian unsigned integers, each left-padded with zeros
// to size bytes (RFC 7518 §3.4). It refuses malformed DER, zero or negative
// values and values longer than size.
func appendECDSARaw(dst, der []byte, size int) ([]byte, error) {
	var seq cryptobyte.String
	in := cryptobyte.String(der)
	if !in.ReadASN1(&seq, asn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("malformed ECDSA signature")
	}
	for range 2 { // r, then s
		v, ok := readPositiveInt(&seq)
		if !ok {
			return nil, errors.New("malformed ECDSA signature")
		}
		if len(v) > size {
			return nil, errors.New("ECDSA signature value too long")
		}
		for range size - len(v) {
			dst = append(dst, 0)
		}
		dst = append(dst, v...)
	}
	if !seq.Empty() {
		return nil, errors.New("malformed ECDSA signature")
	}
	return dst, nil
}

// readPositiveInt reads a DER INTEGER greater than zero from in and returns
// its big-endian bytes without the sign byte. It refuses zero, negative
// values and encodings that are not minimal.
func readPositiveInt(in *cryptobyte.String) ([]byte, bool) {
	var v cryptobyte.String
	if !in.ReadASN1(&v, asn1.INTEGER) || len(v) == 0 || v[0]&0x80 != 0 {
		return nil, false // missing, empty or negative
	}
	if v[0] == 0 {
		if len(v) == 1 || v[1]&0x80 == 0 {
			return nil, false // zero, or a needless leading zero
		}
		v = v[1:]
	}
	return v, true
}

// notice builds and signs a notice about message m.
func (s *signer) notice(m api.Routing, event, reason, detail string, at time.Time) (*store.Notice, error) {
	// Version 7 (time-ordered) ids: a commit's new notices land together at
	// the end of the store's index instead of on random pages.
	u, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	id := u.String()
	jwsStr, err := s.sign(api.NoticeClaims{
		Issuer: s.iss, ID: id, IssuedAt: at.Unix(), Event: event,
		MessageID: m.ID, From: m.From, To: m.To, Type: m.Type, Digest: m.Digest,
		Reason: reason, Detail: detail, At: at.UTC(),
	})
	if err != nil {
		return nil, err
	}
	return &store.Notice{ID: id, JWS: jwsStr}, nil
}
