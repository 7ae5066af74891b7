// Package client is the Go client of the kurer gateway's HTTP API, used by
// agents, the CLI and tests: authentication with RFC 7523 client assertions
// and short-lived access tokens, resumable submit and download, the mailbox
// long poll, acks, catalog lookups, status, and verification of
// gateway-signed notices against the gateway's JWKS. Admin is the operators'
// client of the admin API.
//
// Errors from the gateway come back as *errs.Error with the gateway's code.
package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
)

// Config configures a Client.
type Config struct {
	// BaseURL of the gateway, e.g. https://gateway.example:8443.
	BaseURL string
	// AccountID is the caller's account (UUID).
	AccountID string
	// Signer is the account key; it signs client assertions.
	Signer crypto.Signer
	// Cert is the account certificate (optional; checked against Signer).
	Cert *x509.Certificate
	// TLS holds the roots that verify the gateway (nil: system roots).
	TLS *tls.Config
	// Audience of client assertions; default BaseURL.
	Audience string
	// HTTPClient, when set, is used as is (TLS is then ignored).
	HTTPClient *http.Client
	// MaxRetries of a Submit or Download after a transport error or 5xx.
	// Default 5.
	MaxRetries int
	// Now is the clock; default time.Now.
	Now func() time.Time
	// PollInline asks Poll to bring envelopes up to this many bytes inline
	// (MailboxItem.Content; the gateway caps it at its inline_max), which
	// saves a download request per small message. 0: never.
	PollInline int64
}

// Client talks to one gateway as one account. Safe for concurrent use.
type Client struct {
	cfg  Config
	base *url.URL
	hc   *http.Client
	alg  jwa.SignatureAlgorithm

	mu       sync.Mutex
	token    string
	tokenExp time.Time

	jwksMu sync.Mutex
	jwks   jwk.Set
}

// CloseIdleConnections closes the client's kept connections that carry
// no request now (an agent that stops calls it: a connection the gateway
// sees open, even one that never carried a request, holds up the
// gateway's graceful shutdown).
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// New checks cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("gateway client: base URL %q is not absolute", cfg.BaseURL)
	}
	if cfg.AccountID == "" || cfg.Signer == nil {
		return nil, errors.New("gateway client: account id and signer are required")
	}
	alg, err := algFor(cfg.Signer.Public())
	if err != nil {
		return nil, fmt.Errorf("gateway client: %w", err)
	}
	if cfg.Cert != nil {
		type eq interface{ Equal(crypto.PublicKey) bool }
		if p, ok := cfg.Signer.Public().(eq); !ok || !p.Equal(cfg.Cert.PublicKey) {
			return nil, errors.New("gateway client: the key does not match the certificate")
		}
	}
	if cfg.Audience == "" {
		cfg.Audience = base.String()
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 5
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = NewHTTPClient(cfg.TLS)
	}
	return &Client{cfg: cfg, base: base, hc: hc, alg: alg}, nil
}

// MaxConnsPerGateway bounds the connections one client holds to the
// gateway: more than an agent's requests in flight (a long poll, its
// receive workers' downloads and acks, its uploads), few enough that a
// burst queues in the client rather than as TLS handshakes.
const MaxConnsPerGateway = 16

// NewHTTPClient returns an http.Client with sane timeouts for the gateway
// (no overall timeout: uploads and long polls are long; a dial, TLS and
// response-header timeout instead).
//
// It speaks HTTP/1.1 over a pool of kept-alive TLS connections, not
// HTTP/2: an agent has only a few requests in flight (a long poll, its
// uploads, its acks), which a few connections carry as well, and Go's
// HTTP/2 cost a third more CPU per message on both ends in the gateway
// benchmark (docs/decisions/2026-12-02-http1-agents.md). Uploads are not
// held to an HTTP/2 flow-control window either, and TLS-inspecting
// proxies in municipal networks pass HTTP/1.1 alike. The gateway serves
// both.
func NewHTTPClient(tlsCfg *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tlsCfg != nil {
		tr.TLSClientConfig = tlsCfg.Clone()
	} else {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	// A new connection resumes the TLS session of an earlier one to the
	// same gateway process where it can (idle timeouts, a network blip):
	// no certificate signature to make and check. The gateway
	// authenticates agents by their token, not a client certificate, so a
	// resumed session proves nothing less.
	if tr.TLSClientConfig.ClientSessionCache == nil {
		tr.TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(MaxConnsPerGateway)
	}
	tr.TLSHandshakeTimeout = 10 * time.Second
	// A burst of requests (a disk stall at the gateway holds answers back)
	// waits for one of MaxConnsPerGateway connections instead of opening
	// new ones: each new connection is a handshake at both ends just when
	// the gateway is behind, and an idle pool it outgrows closes them again.
	// Unbounded, an open-loop run at 1,000 msgs/s opened 1,429 connections
	// in 10 s and its p99 accept spiralled to 2 s; bounded, ~30 and 20 ms.
	tr.MaxConnsPerHost = MaxConnsPerGateway
	tr.MaxIdleConnsPerHost = MaxConnsPerGateway
	tr.ForceAttemptHTTP2 = false
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	tr.Protocols = &protocols
	return &http.Client{Transport: tr}
}

func algFor(pub crypto.PublicKey) (jwa.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return jwa.ES256(), nil
		}
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return jwa.RS256(), nil
		}
	}
	return jwa.SignatureAlgorithm{}, fmt.Errorf("key type %T not supported (want RSA >= 2048 or ECDSA P-256)", pub)
}

// Assertion returns a fresh RFC 7523 client assertion (lifetime 60s, random
// jti).
func (c *Client) Assertion() (string, error) {
	now := c.cfg.Now()
	claims := map[string]any{
		"iss": c.cfg.AccountID, "sub": c.cfg.AccountID, "aud": c.cfg.Audience,
		"iat": now.Unix(), "exp": now.Add(60 * time.Second).Unix(), "jti": uuid.NewString(),
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	h := jws.NewHeaders()
	if err := h.Set(jws.TypeKey, "JWT"); err != nil {
		return "", err
	}
	out, err := jws.Sign(payload, jws.WithKey(c.alg, c.cfg.Signer, jws.WithProtectedHeaders(h)))
	if err != nil {
		return "", fmt.Errorf("sign client assertion: %w", err)
	}
	return string(out), nil
}

// Token returns a valid access token, fetching a new one with a fresh
// assertion when the cached one is missing or about to expire.
func (c *Client) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && c.cfg.Now().Before(c.tokenExp) {
		return c.token, nil
	}
	a, err := c.Assertion()
	if err != nil {
		return "", err
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {api.AssertionType},
		"client_assertion":      {a},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url(api.PathToken), strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var tr api.TokenResponse
	if err := c.send(req, &tr); err != nil {
		return "", err
	}
	if tr.AccessToken == "" {
		return "", errs.Newf(errs.Unauthenticated, "empty access token")
	}
	life := time.Duration(tr.ExpiresIn) * time.Second
	c.token, c.tokenExp = tr.AccessToken, c.cfg.Now().Add(life-min(30*time.Second, life/4))
	return c.token, nil
}

func (c *Client) dropToken(tok string) {
	c.mu.Lock()
	if c.token == tok {
		c.token = ""
	}
	c.mu.Unlock()
}

func (c *Client) url(path string) string { return c.base.String() + path }

// send runs req and decodes a 2xx JSON answer into out (nil: discard).
func (c *Client) send(req *http.Request, out any) error {
	resp, err := c.hc.Do(req)
	if err != nil {
		return &errs.Error{Code: errs.Unavailable, Detail: "gateway unreachable", Cause: err}
	}
	defer resp.Body.Close()
	return decode(resp, out)
}

func decode(resp *http.Response, out any) error {
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return errs.FromResponse(resp.StatusCode, b)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		if !errors.As(err, &syn) && !errors.As(err, &typ) {
			// The answer was cut off (connection reset, EOF mid-body): a
			// transport failure, so retryable. The request may well have
			// taken effect (a submit is then answered again, idempotently).
			return &errs.Error{Code: errs.Unavailable, Detail: "gateway answer cut off", Cause: err}
		}
		return &errs.Error{Code: errs.MalformedJSON, Detail: "gateway answer", Cause: err}
	}
	return nil
}

// authedDo runs an authenticated request built by mk, refreshing the token
// once on 401.
func (c *Client) authedDo(ctx context.Context, mk func() (*http.Request, error)) (*http.Response, error) {
	for try := 0; ; try++ {
		tok, err := c.Token(ctx)
		if err != nil {
			return nil, err
		}
		req, err := mk()
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.hc.Do(req)
		if err != nil {
			return nil, &errs.Error{Code: errs.Unavailable, Detail: "gateway unreachable", Cause: err}
		}
		if resp.StatusCode == http.StatusUnauthorized && try == 0 {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			c.dropToken(tok)
			continue
		}
		return resp, nil
	}
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	resp, err := c.authedDo(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, method, c.url(path), bytes.NewReader(body))
		if err == nil && in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, err
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decode(resp, out)
}

// retryable reports whether err is worth another attempt.
func retryable(err error) bool {
	var e *errs.Error
	if !errors.As(err, &e) {
		return true
	}
	return e.Code == errs.Unavailable || e.Code == errs.Internal
}

func backoff(ctx context.Context, attempt int) error {
	d := min(100*time.Millisecond<<attempt, 5*time.Second)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Submit uploads one envelope with routing r (r.Size and r.Digest are
// computed from body when zero/empty). After a transport error it asks the
// gateway how much it holds (HEAD) and continues from there. Repeating a
// submit is safe: the same id and digest get the same receipt.
func (c *Client) Submit(ctx context.Context, r api.Routing, body io.ReaderAt) (api.SubmitResponse, error) {
	if r.Digest == "" || r.Size == 0 {
		size, digest, err := digestOf(body, r.Size)
		if err != nil {
			return api.SubmitResponse{}, err
		}
		r.Size, r.Digest = size, digest
	}
	if r.From == "" {
		r.From = c.cfg.AccountID
	}
	var lastErr error
	for attempt := 0; attempt <= c.cfg.MaxRetries; attempt++ {
		offset := int64(0)
		if attempt > 0 {
			if err := backoff(ctx, attempt-1); err != nil {
				return api.SubmitResponse{}, err
			}
			off, err := c.uploadOffset(ctx, r.ID)
			switch {
			case err == nil && off < r.Size:
				offset = off
			case err == nil, errs.CodeOf(err) == errs.NotFound:
			case retryable(err):
				lastErr = err
				continue
			default:
				return api.SubmitResponse{}, err
			}
		}
		res, err := c.put(ctx, r, body, offset)
		if err == nil {
			return res, nil
		}
		lastErr = err
		if errs.CodeOf(err) == errs.UploadOffset {
			continue
		}
		if !retryable(err) {
			return api.SubmitResponse{}, err
		}
	}
	return api.SubmitResponse{}, lastErr
}

func (c *Client) put(ctx context.Context, r api.Routing, body io.ReaderAt, offset int64) (api.SubmitResponse, error) {
	resp, err := c.authedDo(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url(api.PathMessages+r.ID),
			io.NewSectionReader(body, offset, r.Size-offset))
		if err != nil {
			return nil, err
		}
		req.ContentLength = r.Size - offset
		h := req.Header
		h.Set("Content-Type", "application/octet-stream")
		h.Set(api.HeaderFrom, r.From)
		h.Set(api.HeaderTo, r.To)
		h.Set(api.HeaderType, r.Type)
		h.Set(api.HeaderExpires, r.Expires.UTC().Format(time.RFC3339))
		h.Set(api.HeaderDigest, r.Digest)
		h.Set(api.HeaderSize, strconv.FormatInt(r.Size, 10))
		if r.Conversation != "" {
			h.Set(api.HeaderConversation, r.Conversation)
		}
		if r.InReplyTo != "" {
			h.Set(api.HeaderInReplyTo, r.InReplyTo)
		}
		if offset > 0 {
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", offset, r.Size-1, r.Size))
		}
		return req, nil
	})
	if err != nil {
		return api.SubmitResponse{}, err
	}
	defer resp.Body.Close()
	var out api.SubmitResponse
	return out, decode(resp, &out)
}

// uploadOffset asks how many bytes of upload id the gateway holds.
func (c *Client) uploadOffset(ctx context.Context, id string) (int64, error) {
	resp, err := c.authedDo(ctx, func() (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodHead, c.url(api.PathMessages+id), nil)
	})
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, errs.FromResponse(resp.StatusCode, nil)
	}
	return strconv.ParseInt(resp.Header.Get(api.HeaderUploadOffset), 10, 64)
}

// UploadOffset is the number of bytes of message id the gateway holds
// (the whole size once accepted); errs.NotFound when it holds none.
func (c *Client) UploadOffset(ctx context.Context, id string) (int64, error) {
	return c.uploadOffset(ctx, id)
}

// digestOf reads body (size bytes, or to EOF when size is 0).
func digestOf(body io.ReaderAt, size int64) (int64, string, error) {
	h := sha256.New()
	n := size
	if n == 0 {
		n = 1<<63 - 1
	}
	got, err := io.Copy(h, io.NewSectionReader(body, 0, n))
	if err != nil {
		return 0, "", err
	}
	return got, "sha-256=:" + base64.StdEncoding.EncodeToString(h.Sum(nil)) + ":", nil
}

// pollAccept is the Accept of a poll that asks for inline envelopes: they
// then come raw in a multipart answer, not base64 in JSON. A gateway that
// does not know multipart answers JSON, which Poll reads as well.
const pollAccept = api.MediaMultipart + ", " + api.MediaJSON + ";q=0.5"

// maxPollAnswer bounds a whole poll answer, as decode bounds any JSON answer.
const maxPollAnswer = 64 << 20

// Poll long-polls the mailbox: it returns as soon as items are leased to the
// caller, or empty after wait.
func (c *Client) Poll(ctx context.Context, wait time.Duration, max int) ([]api.MailboxItem, error) {
	q := url.Values{"wait": {wait.String()}, "max": {strconv.Itoa(max)}}
	if c.cfg.PollInline > 0 {
		q.Set("inline", strconv.FormatInt(c.cfg.PollInline, 10))
	}
	resp, err := c.authedDo(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(api.PathMailbox+"?"+q.Encode()), nil)
		if err == nil && c.cfg.PollInline > 0 {
			req.Header.Set("Accept", pollAccept)
		}
		return req, err
	})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return decodePoll(resp, c.cfg.PollInline, max)
}

// decodePoll reads a poll answer, JSON or multipart by its Content-Type,
// for a poll of at most max items and envelopes up to inline bytes.
func decodePoll(resp *http.Response, inline int64, max int) ([]api.MailboxItem, error) {
	var out api.MailboxResponse
	var err error
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode == http.StatusOK && mt == api.MediaMultipart {
		err = decodePollMultipart(resp.Body, params["boundary"], inline, max, &out)
	} else {
		err = decode(resp, &out)
	}
	if err != nil {
		return nil, err
	}
	for i := range out.Items {
		// Inline content is checked like a download; content that does not
		// match its routing is dropped, and the receiver downloads instead.
		it := &out.Items[i]
		if it.Content != nil && (int64(len(it.Content)) != it.Routing.Size || contentDigest(it.Content) != it.Routing.Digest) {
			it.Content = nil
		}
	}
	return out.Items, nil
}

// pollJSONLimit bounds the JSON part of a multipart answer to a poll of at
// most max items (it holds no envelopes: routing and notices only).
func pollJSONLimit(items int) int64 { return 64<<10 + int64(max(items, 1))*16<<10 }

// decodePollMultipart reads a multipart poll answer into out: the JSON part,
// then the envelope parts, each matched to its item by api.HeaderMessageID
// and read into a buffer of the item's size. A part the poll did not ask
// for (unknown id, a second one, a notice's, larger than the item or than
// inline) is refused.
func decodePollMultipart(body io.Reader, boundary string, inline int64, max int, out *api.MailboxResponse) error {
	if boundary == "" {
		return badAnswer("multipart answer without boundary")
	}
	trap := &readTrap{r: io.LimitReader(body, maxPollAnswer)}
	mr := multipart.NewReader(trap, boundary)
	partErr := func(err error) error {
		if trap.err != nil {
			// The answer ended or failed before its closing boundary.
			return &errs.Error{Code: errs.Unavailable, Detail: "gateway answer cut off", Cause: err}
		}
		return &errs.Error{Code: errs.MalformedJSON, Detail: "gateway answer", Cause: err}
	}
	p, err := mr.NextRawPart()
	if err != nil {
		return partErr(err)
	}
	if mt := mediaType(p.Header.Get("Content-Type")); mt != api.MediaJSON {
		return badAnswer("first part is %q, want %s", mt, api.MediaJSON)
	}
	limit := pollJSONLimit(max)
	b, err := io.ReadAll(io.LimitReader(p, limit+1))
	if err != nil {
		return partErr(err)
	}
	if int64(len(b)) > limit {
		return &errs.Error{Code: errs.TooLarge, Detail: "gateway answer", Cause: fmt.Errorf("JSON part over %d bytes", limit)}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return &errs.Error{Code: errs.MalformedJSON, Detail: "gateway answer", Cause: err}
	}
	byID := make(map[string]int, len(out.Items))
	for i, it := range out.Items {
		byID[it.Routing.ID] = i
	}
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return partErr(err)
		}
		if mt := mediaType(p.Header.Get("Content-Type")); mt != api.MediaOctetStream {
			return badAnswer("envelope part is %q, want %s", mt, api.MediaOctetStream)
		}
		id := p.Header.Get(api.HeaderMessageID)
		i, ok := byID[id]
		if !ok {
			return badAnswer("part for unknown item %q", id)
		}
		it := &out.Items[i]
		switch {
		case it.Kind != api.KindMessage:
			return badAnswer("part for %s %q", it.Kind, id)
		case it.Content != nil:
			return badAnswer("second part for %q", id)
		case it.Routing.Size < 1 || it.Routing.Size > inline:
			return badAnswer("part for %q of %d bytes, asked up to %d", id, it.Routing.Size, inline)
		}
		buf := make([]byte, it.Routing.Size)
		n, err := io.ReadFull(p, buf)
		switch err {
		case nil:
			if extra, err := io.Copy(io.Discard, io.LimitReader(p, 1)); err != nil {
				return partErr(err)
			} else if extra > 0 {
				return badAnswer("part for %q larger than its %d bytes", id, it.Routing.Size)
			}
		case io.EOF, io.ErrUnexpectedEOF:
			// Shorter than its routing: dropped by the check in decodePoll,
			// unless the answer was cut off, which the next part tells.
			buf = buf[:n]
		default:
			return partErr(err)
		}
		it.Content = buf
	}
	// Let the connection be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 4<<10))
	return nil
}

// mediaType is the media type of a Content-Type value, without parameters.
func mediaType(v string) string {
	mt, _, _ := strings.Cut(v, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

func badAnswer(format string, a ...any) error {
	return &errs.Error{Code: errs.MalformedJSON, Detail: "gateway answer", Cause: fmt.Errorf(format, a...)}
}

// readTrap remembers the first error (io.EOF included) reading r.
type readTrap struct {
	r   io.Reader
	err error
}

func (t *readTrap) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && t.err == nil {
		t.err = err
	}
	return n, err
}

// contentDigest is the Content-Digest form of b's SHA-256.
func contentDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
}

// Download writes message id's envelope to dst, continuing from dst's
// current size with a Range request (so an interrupted download resumes),
// and checks the whole file against the gateway's Content-Digest.
func (c *Client) Download(ctx context.Context, id string, dst *os.File) error {
	var lastErr error
	for attempt := 0; attempt <= c.cfg.MaxRetries; attempt++ {
		if attempt > 0 {
			if err := backoff(ctx, attempt-1); err != nil {
				return err
			}
		}
		err := c.downloadOnce(ctx, id, dst)
		if err == nil {
			return nil
		}
		lastErr = err
		if !retryable(err) {
			return err
		}
	}
	return lastErr
}

func (c *Client) downloadOnce(ctx context.Context, id string, dst *os.File) error {
	st, err := dst.Stat()
	if err != nil {
		return err
	}
	have := st.Size()
	resp, err := c.authedDo(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(api.PathMailbox+"/"+id+"/content"), nil)
		if err == nil && have > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
		}
		return req, err
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if err := dst.Truncate(0); err != nil {
			return err
		}
		have = 0
	case http.StatusPartialContent:
	case http.StatusRequestedRangeNotSatisfiable:
		// dst already holds at least everything: check it below.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return c.checkDownload(dst, resp.Header.Get(api.HeaderDigest), true)
	default:
		return decode(resp, nil)
	}
	if _, err := dst.Seek(have, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(dst, resp.Body); err != nil {
		return &errs.Error{Code: errs.Unavailable, Detail: "download interrupted", Cause: err}
	}
	return c.checkDownload(dst, resp.Header.Get(api.HeaderDigest), false)
}

func (c *Client) checkDownload(dst *os.File, digest string, truncateOnBad bool) error {
	if digest == "" {
		return nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(dst, 0, 1<<62)); err != nil {
		return err
	}
	if "sha-256=:"+base64.StdEncoding.EncodeToString(h.Sum(nil))+":" != digest {
		_ = dst.Truncate(0)
		return errs.New(errs.DigestMismatch, errors.New("downloaded envelope does not match its digest"))
	}
	return nil
}

// Ack tells the gateway the item is taken durably.
func (c *Client) Ack(ctx context.Context, id string) error {
	return c.doJSON(ctx, http.MethodPost, api.PathMailbox+"/"+id+"/ack", nil, nil)
}

// AckMany acks several items in one request (at most api.MaxAckBatch; they commit
// together at the gateway). It returns the ids that were not acked, with
// the error of each; every other id is acked.
func (c *Client) AckMany(ctx context.Context, ids []string) (map[string]error, error) {
	var out api.AckResponse
	if err := c.doJSON(ctx, http.MethodPost, api.PathMailbox+"/ack", api.AckRequest{IDs: ids}, &out); err != nil {
		return nil, err
	}
	failed := make(map[string]error, len(out.Failed))
	for _, f := range out.Failed {
		failed[f.ID] = &errs.Error{Code: f.Code}
	}
	return failed, nil
}

// Reject refuses a message with a reason code and a short detail.
func (c *Client) Reject(ctx context.Context, id, reason, detail string) error {
	return c.doJSON(ctx, http.MethodPost, api.PathMailbox+"/"+id+"/reject", api.RejectRequest{Reason: reason, Detail: detail}, nil)
}

// Lookup returns an account of the catalog with its current certificates.
func (c *Client) Lookup(ctx context.Context, id string) (api.Account, error) {
	var a api.Account
	return a, c.doJSON(ctx, http.MethodGet, api.PathAccount+url.PathEscape(id), nil, &a)
}

// Find returns the account with municipality number (4 digits) or org
// number (9 digits) municipalityOrOrg that receives msgType; errs.NotFound
// if none does, and errs.AmbiguousReceiver if more than one does: Find
// never picks one of several, since a case file sealed to the wrong one
// goes to the wrong party. The caller must then address the receiver by
// account id (the error's detail lists the candidates).
func (c *Client) Find(ctx context.Context, municipalityOrOrg, msgType string) (api.Account, error) {
	q := url.Values{"type": {msgType}}
	switch len(municipalityOrOrg) {
	case 4:
		q.Set("municipality", municipalityOrOrg)
	case 9:
		q.Set("org", municipalityOrOrg)
	default:
		return api.Account{}, errs.Newf(errs.BadRequest, "give a 4-digit municipality or a 9-digit org number")
	}
	var out []api.Account
	if err := c.doJSON(ctx, http.MethodGet, api.PathAccounts+"?"+q.Encode(), nil, &out); err != nil {
		return api.Account{}, err
	}
	if len(out) == 0 {
		return api.Account{}, errs.Newf(errs.NotFound, "no account for %s receives %s", municipalityOrOrg, msgType)
	}
	if len(out) > 1 {
		return api.Account{}, ambiguous(municipalityOrOrg, msgType, out)
	}
	return out[0], nil
}

// ambiguous is the AmbiguousReceiver error for a lookup that matched
// several accounts; its detail names up to maxCandidates of their ids
// (only well-formed UUIDs: the detail reaches terminals and logs).
func ambiguous(municipalityOrOrg, msgType string, matches []api.Account) error {
	const maxCandidates = 5
	ids := make([]string, 0, maxCandidates+1)
	for _, a := range matches {
		if len(ids) == maxCandidates {
			ids = append(ids, "...")
			break
		}
		if u, err := uuid.Parse(a.ID); err == nil {
			ids = append(ids, u.String())
		}
	}
	return errs.Newf(errs.AmbiguousReceiver, "%d accounts for %s receive %s (%s); address the receiver by account id",
		len(matches), municipalityOrOrg, msgType, strings.Join(ids, ", "))
}

// Status returns a message's state history (sender or receiver only).
func (c *Client) Status(ctx context.Context, id string) (api.MessageStatus, error) {
	var s api.MessageStatus
	return s, c.doJSON(ctx, http.MethodGet, api.PathMessages+id+"/status", nil, &s)
}

// JWKS fetches (and caches) the gateway's public signing keys.
func (c *Client) JWKS(ctx context.Context) (jwk.Set, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(api.PathJWKS), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &errs.Error{Code: errs.Unavailable, Detail: "gateway unreachable", Cause: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, decode(resp, nil)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	set, err := jwk.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("parse gateway JWKS: %w", err)
	}
	c.jwksMu.Lock()
	c.jwks = set
	c.jwksMu.Unlock()
	return set, nil
}

// VerifyNotice verifies a gateway receipt or notice against the gateway's
// JWKS (fetched, within 30s, when not cached or when the kid is unknown)
// and returns its claims.
func (c *Client) VerifyNotice(notice string) (api.NoticeClaims, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.jwksMu.Lock()
	set := c.jwks
	c.jwksMu.Unlock()
	var claims api.NoticeClaims
	msg, err := jws.Parse([]byte(notice))
	if err != nil || len(msg.Signatures()) != 1 {
		return claims, errs.New(errs.InvalidEnvelope, fmt.Errorf("parse notice: %v", err))
	}
	kid, _ := msg.Signatures()[0].ProtectedHeaders().KeyID()
	if set == nil {
		if set, err = c.JWKS(ctx); err != nil {
			return claims, err
		}
	}
	if _, ok := set.LookupKeyID(kid); !ok {
		if set, err = c.JWKS(ctx); err != nil {
			return claims, err
		}
	}
	return VerifyNotice(set, notice)
}

// VerifyNotice verifies a gateway notice against set (a gateway JWKS).
func VerifyNotice(set jwk.Set, notice string) (api.NoticeClaims, error) {
	var claims api.NoticeClaims
	payload, err := jws.Verify([]byte(notice), jws.WithKeySet(set, jws.WithRequireKid(true)))
	if err != nil {
		return claims, errs.New(errs.InvalidEnvelope, fmt.Errorf("verify notice: %w", err))
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return claims, errs.New(errs.InvalidEnvelope, fmt.Errorf("notice claims: %w", err))
	}
	return claims, nil
}
