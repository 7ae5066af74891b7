package gateway

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
)

// Access tokens are opaque random strings (32 bytes, base64url) held in
// memory as their SHA-256, with the account, the certificate that verified
// the client assertion and the expiry. A token is refused once its account
// or that certificate leaves the catalog (see revoke.go). They do not
// survive a restart: an agent then gets 401 and fetches a new one with a
// fresh client assertion, which is what it does on every expiry anyway.
type tokenCache struct {
	mu sync.Mutex
	m  map[[32]byte]tokenInfo
}

type tokenInfo struct {
	account string
	cert    []byte // DER of the certificate that verified the assertion
	exp     time.Time
}

func newTokenCache() *tokenCache { return &tokenCache{m: map[[32]byte]tokenInfo{}} }

func (c *tokenCache) issue(account string, cert []byte, exp time.Time) (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	c.mu.Lock()
	c.m[sha256.Sum256([]byte(tok))] = tokenInfo{account: account, cert: bytes.Clone(cert), exp: exp}
	c.mu.Unlock()
	return tok, nil
}

func (c *tokenCache) lookup(tok string) (tokenInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ti, ok := c.m[sha256.Sum256([]byte(tok))]
	return ti, ok
}

// sweep forgets tokens expired before cutoff (kept a while after expiry so
// their holders get token_expired rather than unauthenticated).
func (c *tokenCache) sweep(cutoff time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, ti := range c.m {
		if ti.exp.Before(cutoff) {
			delete(c.m, k)
		}
	}
}

func subtleEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// authAccount returns the account of the request's access token.
func (s *Server) authAccount(r *http.Request) (string, error) {
	tok := bearer(r)
	if tok == "" || len(tok) > 256 {
		return "", errs.New(errs.Unauthenticated, errors.New("no bearer token"))
	}
	ti, ok := s.tokens.lookup(tok)
	if !ok {
		return "", errs.New(errs.Unauthenticated, errors.New("unknown access token"))
	}
	if !s.now().Before(ti.exp) {
		return "", errs.New(errs.TokenExpired, nil)
	}
	if err := s.checkTokenHolder(r.Context(), ti); err != nil {
		return "", err
	}
	s.met.seen(ti.account, s.now())
	return ti.account, nil
}

// authed wraps an agent handler: it authenticates and passes the account.
func (s *Server) authed(h func(w http.ResponseWriter, r *http.Request, account string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		acct, err := s.authAccount(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kurer"`)
			s.fail(w, r, err)
			return
		}
		h(w, r, acct)
	}
}

// operator wraps an admin handler: it requires the operator credential.
// An agent access token gets operator_role_required.
func (s *Server) operator(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kurer-admin"`)
			s.fail(w, r, errs.New(errs.Unauthenticated, nil))
			return
		}
		if !s.operatorOK(tok) {
			s.fail(w, r, errs.New(errs.OperatorOnly, nil))
			return
		}
		h(w, r)
	}
}

// assertionClaims are the claims of an RFC 7523 client assertion.
type assertionClaims struct {
	Iss string          `json:"iss"`
	Sub string          `json:"sub"`
	Aud json.RawMessage `json:"aud"`
	Exp *float64        `json:"exp"`
	Iat *float64        `json:"iat"`
	Nbf *float64        `json:"nbf"`
	Jti string          `json:"jti"`
}

func (c assertionClaims) audiences() []string {
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		return []string{one}
	}
	var many []string
	if json.Unmarshal(c.Aud, &many) == nil {
		return many
	}
	return nil
}

func unix(f float64) time.Time { return time.Unix(0, int64(f*1e9)) }

const maxAssertionBytes = 16 << 10

// handleToken is POST /v1/token: client_credentials with a JWT client
// assertion (RFC 7523) -> access token.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxAssertionBytes+1024)
	if err := r.ParseForm(); err != nil {
		code := errs.BadRequest
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			code = errs.TooLarge
		}
		s.fail(w, r, errs.New(code, err))
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" || r.PostForm.Get("client_assertion_type") != api.AssertionType {
		s.fail(w, r, errs.Newf(errs.BadRequest, "grant_type must be client_credentials with a jwt-bearer client_assertion"))
		return
	}
	account, cert, err := s.verifyAssertion(r, r.PostForm.Get("client_assertion"))
	if err != nil {
		s.met.authFailures.WithLabelValues(string(errs.CodeOf(err))).Inc()
		s.fail(w, r, err)
		return
	}
	now := s.now()
	tokExp := now.Add(s.cfg.TokenLifetime)
	tok, err := s.tokens.issue(account, cert, tokExp)
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	s.met.seen(account, now)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, api.TokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: int(s.cfg.TokenLifetime / time.Second)})
}

// verifyAssertion checks a client assertion and returns its account and the
// DER of the account certificate that verified it.
func (s *Server) verifyAssertion(r *http.Request, assertion string) (string, []byte, error) {
	bad := func(format string, args ...any) error {
		return errs.New(errs.InvalidAssertion, fmt.Errorf(format, args...))
	}
	if assertion == "" || len(assertion) > maxAssertionBytes || strings.Count(assertion, ".") != 2 {
		return "", nil, bad("missing or malformed assertion")
	}
	msg, err := jws.Parse([]byte(assertion))
	if err != nil || len(msg.Signatures()) != 1 {
		return "", nil, bad("parse: %v", err)
	}
	alg, ok := msg.Signatures()[0].ProtectedHeaders().Algorithm()
	if !ok || (alg != jwa.RS256() && alg != jwa.ES256()) {
		return "", nil, bad("algorithm %v not allowed", alg)
	}
	var c assertionClaims
	dec := json.NewDecoder(bytes.NewReader(msg.Payload()))
	if err := dec.Decode(&c); err != nil {
		return "", nil, bad("claims: %v", err)
	}
	if c.Iss == "" || c.Iss != c.Sub {
		return "", nil, bad("iss and sub must both be the account id")
	}
	acct, err := s.st.Account(r.Context(), c.Iss)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil, bad("unknown account")
	}
	if err != nil {
		return "", nil, errs.New(errs.Internal, err)
	}
	now := s.now()
	var verified []byte
	for _, der := range acct.Certificates {
		cert, err := x509.ParseCertificate(der)
		if err != nil || now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
			continue
		}
		if kalg, err := SigningAlgorithm(cert.PublicKey); err != nil || kalg != alg {
			continue
		}
		if pki.VerifyAt(cert, s.trust, nil, now) != nil {
			continue
		}
		if _, err := jws.Verify([]byte(assertion), jws.WithKey(alg, cert.PublicKey)); err == nil {
			verified = der
			break
		}
	}
	if verified == nil {
		return "", nil, bad("no current, trusted certificate of account %s verifies the signature", acct.ID)
	}
	audOK := false
	for _, a := range c.audiences() {
		if a == s.cfg.Audience {
			audOK = true
		}
	}
	if !audOK {
		return "", nil, bad("wrong audience")
	}
	if c.Exp == nil || c.Iat == nil || c.Jti == "" || len(c.Jti) > 256 {
		return "", nil, bad("exp, iat and jti are required")
	}
	exp, iat := unix(*c.Exp), unix(*c.Iat)
	skew := s.cfg.ClockSkew
	switch {
	case !now.Before(exp.Add(skew)):
		return "", nil, bad("assertion expired")
	case iat.After(now.Add(skew)):
		return "", nil, bad("iat in the future")
	case exp.Sub(iat) > s.cfg.MaxAssertionLifetime, exp.Sub(now) > s.cfg.MaxAssertionLifetime+skew:
		return "", nil, bad("assertion lifetime above %s", s.cfg.MaxAssertionLifetime)
	case c.Nbf != nil && unix(*c.Nbf).After(now.Add(skew)):
		return "", nil, bad("not yet valid")
	}
	if err := s.st.UseJTI(r.Context(), acct.ID+":"+c.Jti, exp.Add(skew), now); err != nil {
		if errors.Is(err, store.ErrReplayed) {
			return "", nil, errs.New(errs.ReplayedJTI, err)
		}
		return "", nil, errs.New(errs.Internal, err)
	}
	return acct.ID, verified, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
