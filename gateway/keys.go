package gateway

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
)

// signer signs receipts and notices with the gateway key.
type signer struct {
	key  crypto.Signer
	alg  jwa.SignatureAlgorithm
	kid  string
	jwks []byte // the public JWKS document
	iss  string
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
	return &signer{key: key, alg: alg, kid: kid, jwks: doc, iss: iss}, nil
}

// sign returns the compact JWS of claims.
func (s *signer) sign(c api.NoticeClaims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	h := jws.NewHeaders()
	if err := h.Set(jws.KeyIDKey, s.kid); err != nil {
		return "", err
	}
	if err := h.Set(jws.TypeKey, "kurer-notice+jwt"); err != nil {
		return "", err
	}
	out, err := jws.Sign(payload, jws.WithKey(s.alg, s.key, jws.WithProtectedHeaders(h)))
	if err != nil {
		return "", fmt.Errorf("sign notice: %w", err)
	}
	return string(out), nil
}

// notice builds and signs a notice about message m.
func (s *signer) notice(m api.Routing, event, reason, detail string, at time.Time) (*store.Notice, error) {
	id := uuid.NewString()
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
