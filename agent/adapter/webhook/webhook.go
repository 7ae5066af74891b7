// Package webhook is the agent's HTTP adapter: each received message is
// POSTed to the case system's URL, and the case system's answer is its
// verdict.
//
//   - The request is multipart/form-data, streamed (files are never held in
//     memory): a "metadata" part (application/json, see Metadata), one "file"
//     part per payload file in the order of Metadata.Files, then "manifest"
//     (META-INF/manifest.json) and "signature" (META-INF/signature.p7s), the
//     sender's signed statement of the content.
//   - Headers: Idempotency-Key and Kurer-Message-Id (the message id, the same
//     on every attempt), Kurer-Timestamp (unix seconds of this attempt),
//     Kurer-Metadata-Sha256 (hex SHA-256 of the metadata part's exact bytes)
//     and Kurer-Signature: v1=hex(HMAC-SHA256(secret,
//     timestamp + "." + message id + "." + metadata sha256)). The metadata
//     carries the SHA-256 of every file, of the manifest and of the signature,
//     so the HMAC covers the whole body although it is computed before the
//     body is streamed. docs/agent.md shows how a receiver verifies it.
//   - Answers: 2xx marks the message processed (signed behandlet receipt to
//     the sender). A 4xx other than those listed in Retryable is the case
//     system's refusal: the message is rejected (signed avvist receipt) with
//     the reasons of an optional JSON body {"reasons":[{"code","detail"}]}.
//     Anything else (408, 429, 5xx, redirects, transport errors, and 4xx
//     answers that point at this adapter's configuration rather than at the
//     message: 401, 403, 404, 405, 407, 421) is retried: a few times inside
//     one delivery with exponential backoff and full jitter, honouring
//     Retry-After, then again later by the agent with its own backoff.
//
// Logs name the message id, the HTTP status and the attempt only: never the
// URL, the secret, file names or any content.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/errs"
)

// Kind is the adapter kind in agent configs.
const Kind = "webhook"

// HTTP headers of a delivery request.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderMessageID      = "Kurer-Message-Id"
	HeaderTimestamp      = "Kurer-Timestamp"
	HeaderMetadataSHA256 = "Kurer-Metadata-Sha256"
	HeaderSignature      = "Kurer-Signature"
)

// Form names of the multipart parts, in the order they are sent.
const (
	PartMetadata  = "metadata"
	PartFile      = "file"
	PartManifest  = "manifest"
	PartSignature = "signature"
)

// ReasonRejected is the reason code of a refusal whose answer carried no
// usable reasons.
const ReasonRejected = "case_system"

// MinSecretLen is the shortest accepted HMAC secret, in bytes.
const MinSecretLen = 32

// Limits on what is read from the case system and from the secret file.
const (
	maxAnswer     = 64 << 10 // bytes of an answer body read
	maxSecretFile = 4 << 10  // bytes of the secret file
	maxReasons    = 64       // reasons taken from a refusal
	maxCodeLen    = 64       // bytes of a reason code (the agent's limit)
	maxTextLen    = 1024     // bytes of a reason's path or detail (the agent's limit)
)

// Config of a webhook adapter.
type Config struct {
	// URL receives the POSTs. https:// is required, except http:// to a
	// loopback host (127.0.0.0/8, ::1, localhost) or with AllowInsecureHTTP.
	// Must not carry user:password. Required.
	URL string `yaml:"url"`
	// SecretFile holds the HMAC-SHA256 key: the file's bytes without
	// trailing white space, at least 32 bytes (e.g. `openssl rand -hex 32`).
	// Never logged. Required. An absolute path is safest: it is not
	// resolved relative to the agent's config file.
	SecretFile string `yaml:"secret_file"`
	// CAFile is a PEM file of roots for the case system's TLS certificate.
	// Default: the system roots.
	CAFile string `yaml:"ca_file"`
	// AllowInsecureHTTP allows an http:// URL to a non-loopback host (tests
	// and development only: the content would cross the network in clear).
	// Default false.
	AllowInsecureHTTP bool `yaml:"allow_insecure_http"`
	// Timeout bounds one attempt: connecting, streaming the whole body and
	// reading the answer. Raise it for large cases on slow links. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// Retry shapes the retries inside one delivery.
	Retry RetryConfig `yaml:"retry"`
}

// RetryConfig is the backoff between attempts of one delivery: before
// attempt n+1 the adapter waits a random time in
// [0, min(Max, Initial*2^(n-1))) (full jitter), or as long as a Retry-After
// asks. When a delivery's attempts are spent, the agent calls Deliver again
// later with its own backoff (the agent's retry config), so the case system
// sees bursts of at most Attempts requests.
type RetryConfig struct {
	// Attempts is the most requests per delivery. Default 3; 1 leaves all
	// retries to the agent.
	Attempts int `yaml:"attempts"`
	// Initial is the first backoff ceiling. Default 1s.
	Initial time.Duration `yaml:"initial"`
	// Max caps the backoff ceiling, and the longest Retry-After waited for
	// inside a delivery: a longer one ends the delivery at once (the agent
	// retries later). Default 30s.
	Max time.Duration `yaml:"max"`
	// MaxRetryAfter caps how long a Retry-After (on 429 or 503) keeps the
	// adapter from sending anything to the case system. Default 5m.
	MaxRetryAfter time.Duration `yaml:"max_retry_after"`
}

// Metadata is the "metadata" part of a delivery request: the message's
// routing, dates, mottatt receipt id and files (in the order of the "file"
// parts, with the size and hex SHA-256 of each, melding.json included), as
// the folder adapter's message.json has them, plus the digests of the other
// parts.
type Metadata struct {
	adapter.MessageInfo
	// ManifestSHA256 and SignatureSHA256 are the hex SHA-256 of the
	// "manifest" and "signature" parts.
	ManifestSHA256  string `json:"manifest_sha256"`
	SignatureSHA256 string `json:"signature_sha256"`
}

// Answer is the JSON body a case system may send with a refusal (4xx).
type Answer struct {
	Reasons []AnswerReason `json:"reasons"`
}

// AnswerReason is one reason of a refusal: a stable code (<= 64 bytes),
// optionally a human-readable detail and a JSON path in melding.json (each
// <= 1024 bytes; longer ones are cut). They go to the sender in the signed
// avvist receipt: no personal data.
type AnswerReason struct {
	Code   string `json:"code"`
	Detail string `json:"detail,omitempty"`
	Path   string `json:"path,omitempty"`
}

// Webhook is the adapter.
type Webhook struct {
	name   string
	cfg    Config
	url    string
	secret []byte
	client *http.Client
	log    *slog.Logger

	// Injectable for tests.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) bool

	mu        sync.Mutex
	notBefore time.Time // no request before (Retry-After)
}

var (
	_ adapter.Adapter  = (*Webhook)(nil)
	_ adapter.Receiver = (*Webhook)(nil)
)

func init() { adapter.RegisterNew(Kind, New) }

// New builds a webhook adapter: it checks the URL, reads the secret and the
// CA file. log may be nil.
func New(name string, c Config, log *slog.Logger) (*Webhook, error) {
	if err := checkURL(c.URL, c.AllowInsecureHTTP); err != nil {
		return nil, fmt.Errorf("webhook adapter: url: %w", err)
	}
	secret, err := readSecret(c.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("webhook adapter: secret_file: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("webhook adapter: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("webhook adapter: ca_file: no PEM certificate")
		}
		tc.RootCAs = pool
	}
	if c.Timeout < 0 || c.Retry.Attempts < 0 || c.Retry.Initial < 0 || c.Retry.Max < 0 || c.Retry.MaxRetryAfter < 0 {
		return nil, errors.New("webhook adapter: durations and attempts must not be negative")
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Retry.Attempts == 0 {
		c.Retry.Attempts = 3
	}
	if c.Retry.Initial == 0 {
		c.Retry.Initial = time.Second
	}
	if c.Retry.Max == 0 {
		c.Retry.Max = 30 * time.Second
	}
	if c.Retry.Max < c.Retry.Initial {
		return nil, errors.New("webhook adapter: retry.max must not be below retry.initial")
	}
	if c.Retry.MaxRetryAfter == 0 {
		c.Retry.MaxRetryAfter = 5 * time.Minute
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Webhook{
		name: name, cfg: c, url: c.URL, secret: secret, log: log.With("adapter", name),
		client: &http.Client{
			Transport: tr,
			// A redirect of a POST would drop or replay the body: the answer
			// is taken as it is (and retried, see classify).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now:   time.Now,
		sleep: sleepCtx,
	}, nil
}

func checkURL(raw string, allowHTTP bool) error {
	if raw == "" {
		return errors.New("required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.User != nil {
		return errors.New("must not carry credentials")
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if allowHTTP || isLoopback(u.Hostname()) {
			return nil
		}
		return errors.New("https required (http only to a loopback host, or with allow_insecure_http)")
	}
	return errors.New("scheme must be https")
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func readSecret(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("required")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("longer than %d bytes", maxSecretFile)
	}
	b = bytes.TrimRight(b, " \t\r\n")
	if len(b) < MinSecretLen {
		return nil, fmt.Errorf("the secret must be at least %d bytes (got %d)", MinSecretLen, len(b))
	}
	return b, nil
}

// Name implements adapter.Adapter.
func (w *Webhook) Name() string { return w.name }

// Run implements adapter.Adapter: the webhook adapter sends nothing, so it
// waits for ctx to end.
func (w *Webhook) Run(ctx context.Context, _ adapter.Host) error {
	<-ctx.Done()
	return nil
}

// Sign returns the Kurer-Signature value of a request: "v1=" and the hex
// HMAC-SHA256 under secret of timestamp + "." + id + "." + metadataSHA256
// (timestamp in unix seconds, metadataSHA256 the lower-case hex SHA-256 of
// the metadata part).
func Sign(secret []byte, timestamp int64, id, metadataSHA256 string) string {
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "%d.%s.%s", timestamp, id, metadataSHA256)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// outcome of one attempt.
type outcome int

const (
	retry outcome = iota
	accepted
	refused
)

// result of one attempt.
type result struct {
	outcome    outcome
	status     int
	reasons    []localapi.Reason
	retryAfter time.Duration // > 0 when the answer asked for it
	err        error         // why to retry
}

// Deliver implements adapter.Receiver: it POSTs the message until the case
// system answers with a verdict or the attempts are spent. The verdict is
// handed to h (Processed or Rejected) and Deliver returns nil; otherwise it
// returns an error and the agent calls it again later. Idempotent by d.ID:
// every attempt carries the same Idempotency-Key.
func (w *Webhook) Deliver(ctx context.Context, h adapter.Host, d adapter.Delivery) error {
	if uuid.Validate(d.ID) != nil {
		return errors.New("webhook: delivery with an invalid id")
	}
	meta, err := metadataOf(d)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(meta)
	metaSum := hex.EncodeToString(sum[:])
	var last error
	for attempt := 1; attempt <= w.cfg.Retry.Attempts; attempt++ {
		wait := time.Duration(0)
		if attempt > 1 {
			wait = w.backoff(attempt - 1)
		}
		if rem := w.waitAsked(); rem > w.cfg.Retry.Max {
			if last == nil {
				last = errors.New("case system asked to wait (Retry-After)")
			}
			return fmt.Errorf("webhook: message not taken after %d attempts; case system asked to wait %s: %w",
				attempt-1, rem.Round(time.Second), last)
		} else if rem > wait {
			wait = rem
		}
		if wait > 0 && !w.sleep(ctx, wait) {
			return ctx.Err()
		}
		r := w.attempt(ctx, d, meta, metaSum)
		switch r.outcome {
		case accepted:
			w.log.Info("case system took message", "id", d.ID, "status", r.status, "attempt", attempt)
			return w.verdict(h.Processed(ctx, d.ID), d.ID, "processed")
		case refused:
			w.log.Warn("case system refused message", "id", d.ID, "status", r.status, "attempt", attempt, "reasons", len(r.reasons))
			return w.verdict(h.Rejected(ctx, d.ID, r.reasons), d.ID, "rejected")
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		last = r.err
		if r.retryAfter > 0 {
			w.askWait(r.retryAfter)
		}
		lvl := slog.LevelWarn
		if r.status == http.StatusUnauthorized || r.status == http.StatusForbidden || r.status == http.StatusNotFound ||
			r.status == http.StatusMethodNotAllowed || r.status == http.StatusProxyAuthRequired || r.status == http.StatusMisdirectedRequest {
			lvl = slog.LevelError // the adapter's url, secret or proxy is likely wrong
		}
		w.log.Log(ctx, lvl, "case system did not take message", "id", d.ID, "status", r.status, "attempt", attempt, "err", r.err)
	}
	return fmt.Errorf("webhook: message not taken after %d attempts: %w", w.cfg.Retry.Attempts, last)
}

// verdict maps the agent's answer to a verdict: a message that already has
// the other verdict (e.g. given through the local API) is left as it is.
func (w *Webhook) verdict(err error, id, what string) error {
	if err == nil {
		return nil
	}
	if errs.CodeOf(err) == errs.NotDeliverable {
		w.log.Warn("message already has a verdict; case system's answer not recorded", "id", id, "answer", what)
		return nil
	}
	return fmt.Errorf("webhook: mark %s: %w", what, err)
}

// backoff is the full-jitter wait after n failed attempts.
func (w *Webhook) backoff(n int) time.Duration {
	ceil := w.cfg.Retry.Initial
	for i := 1; i < n && ceil < w.cfg.Retry.Max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, w.cfg.Retry.Max)
	if ceil <= 0 {
		return 0
	}
	return mrand.N(ceil)
}

// waitAsked is how long the case system's last Retry-After still holds.
func (w *Webhook) waitAsked() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.notBefore.Sub(w.now())
}

func (w *Webhook) askWait(d time.Duration) {
	d = min(d, w.cfg.Retry.MaxRetryAfter)
	t := w.now().Add(d)
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.After(w.notBefore) {
		w.notBefore = t
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// attempt makes one request.
func (w *Webhook) attempt(ctx context.Context, d adapter.Delivery, meta []byte, metaSum string) result {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	boundary, err := newBoundary()
	if err != nil {
		return result{err: err}
	}
	length, err := bodyLength(d, meta, boundary)
	if err != nil {
		return result{err: err}
	}
	pr, pw := io.Pipe()
	var werr error
	done := make(chan struct{})
	go func() {
		werr = writeBody(pw, d, meta, boundary)
		pw.CloseWithError(werr)
		close(done)
	}()
	// The writer ends on its own or when the pipe is closed; finish waits
	// for it so that no file stays open after the attempt.
	finish := func() error {
		pr.CloseWithError(errAttemptOver)
		<-done
		return werr
	}
	defer finish()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, pr)
	if err != nil {
		return result{err: errors.New("build request")}
	}
	req.ContentLength = length
	ts := w.now().Unix()
	req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
	req.Header.Set("User-Agent", "kurer-agent webhook")
	req.Header.Set(HeaderIdempotencyKey, d.ID)
	req.Header.Set(HeaderMessageID, d.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderMetadataSHA256, metaSum)
	req.Header.Set(HeaderSignature, Sign(w.secret, ts, d.ID, metaSum))

	resp, err := w.client.Do(req)
	if err != nil {
		// The writer's failure (a payload file that is missing or differs
		// from its digest) says more than the transport's.
		var pe payloadError
		if errors.As(finish(), &pe) {
			return result{err: pe}
		}
		return result{err: transportError(ctx, err, w.cfg.Timeout)}
	}
	defer resp.Body.Close()
	return classify(resp, w.now())
}

var errAttemptOver = errors.New("attempt over")

// payloadError is a problem with the agent's copy of the payload: the body
// could not be written.
type payloadError struct{ msg string }

func (e payloadError) Error() string { return e.msg }

// transportError drops the URL from a client error (it may carry a query
// the operator considers secret).
func transportError(ctx context.Context, err error, timeout time.Duration) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %s", timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("post: %w", ue.Err)
	}
	return fmt.Errorf("post: %w", err)
}

// Retryable reports whether a 4xx answer is retried rather than taken as the
// case system's refusal of the message: 408 and 429 (try later), 425 (too
// early), and 401, 403, 404, 405, 407, 421, which point at the adapter's
// url, secret or proxy rather than at the message.
func Retryable(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests,
		http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed,
		http.StatusProxyAuthRequired, http.StatusMisdirectedRequest:
		return true
	}
	return false
}

// classify turns an answer into an outcome.
func classify(resp *http.Response, now time.Time) result {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	// Drain a little more so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	s := resp.StatusCode
	switch {
	case s >= 200 && s < 300:
		return result{outcome: accepted, status: s}
	case s >= 400 && s < 500 && !Retryable(s):
		return result{outcome: refused, status: s, reasons: reasonsOf(body, s)}
	}
	r := result{status: s, err: fmt.Errorf("case system answered %d", s)}
	if s >= 300 && s < 400 {
		r.err = fmt.Errorf("case system answered %d (redirects are not followed; check url)", s)
	}
	if s == http.StatusTooManyRequests || s == http.StatusServiceUnavailable {
		r.retryAfter = retryAfter(resp.Header.Get("Retry-After"), now)
	}
	return r
}

// retryAfter parses a Retry-After value (seconds or an HTTP date); 0 when
// absent or invalid.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(24*time.Hour/time.Second) {
			n = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// reasonsOf reads the reasons of a refusal; without usable ones, one reason
// ReasonRejected naming the status.
func reasonsOf(body []byte, status int) []localapi.Reason {
	var a Answer
	var out []localapi.Reason
	if json.Unmarshal(body, &a) == nil {
		for _, r := range a.Reasons {
			code := cut(strings.TrimSpace(r.Code), maxCodeLen)
			if code == "" {
				continue
			}
			out = append(out, localapi.Reason{Code: code, Path: cut(r.Path, maxTextLen), Message: cut(r.Detail, maxTextLen)})
			if len(out) == maxReasons {
				break
			}
		}
	}
	if len(out) == 0 {
		out = []localapi.Reason{{Code: ReasonRejected, Message: fmt.Sprintf("the case system answered HTTP %d", status)}}
	}
	return out
}

// cut shortens s to at most n bytes on a rune boundary, dropping invalid
// UTF-8.
func cut(s string, n int) string {
	s = strings.ToValidUTF8(s, "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// metadataOf builds the metadata part.
func metadataOf(d adapter.Delivery) ([]byte, error) {
	info := d.Info()
	info.Created, info.Expires = info.Created.UTC(), info.Expires.UTC()
	if info.Files == nil {
		info.Files = []localapi.File{}
	}
	m := Metadata{MessageInfo: info, ManifestSHA256: hexSum(d.Manifest), SignatureSHA256: hexSum(d.Signature)}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("webhook: metadata: %w", err)
	}
	return b, nil
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newBoundary() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "kurer-" + hex.EncodeToString(b[:]), nil
}

// payload writes the content of file i to dst.
type payload func(i int, f localapi.File, dst io.Writer) error

// bodyLength is the exact length of the multipart body: its skeleton
// written with the same boundary, plus the file sizes.
func bodyLength(d adapter.Delivery, meta []byte, boundary string) (int64, error) {
	var n countWriter
	err := writeParts(&n, d, meta, boundary, func(_ int, f localapi.File, _ io.Writer) error {
		if f.Size < 0 {
			return errors.New("negative file size")
		}
		n.n += f.Size
		return nil
	})
	return n.n, err
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// writeBody streams the multipart body, reading the payload files from d.Dir
// and checking each against its size and digest as it goes.
func writeBody(dst io.Writer, d adapter.Delivery, meta []byte, boundary string) error {
	root, err := os.OpenRoot(d.Dir)
	if err != nil {
		return payloadError{"payload folder unreadable"}
	}
	defer root.Close()
	return writeParts(dst, d, meta, boundary, func(i int, f localapi.File, dst io.Writer) error {
		src, err := root.Open(filepath.FromSlash(f.Name))
		if err != nil {
			return payloadError{fmt.Sprintf("payload file %d unreadable", i+1)}
		}
		defer src.Close()
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(dst, h), io.LimitReader(src, f.Size+1))
		if err != nil {
			return err
		}
		if n != f.Size || !sumIs(h, f.SHA256) {
			return payloadError{fmt.Sprintf("payload file %d differs from its manifest entry", i+1)}
		}
		return nil
	})
}

func sumIs(h hash.Hash, want string) bool {
	return strings.EqualFold(hex.EncodeToString(h.Sum(nil)), want)
}

func writeParts(dst io.Writer, d adapter.Delivery, meta []byte, boundary string, content payload) error {
	mw := multipart.NewWriter(dst)
	if err := mw.SetBoundary(boundary); err != nil {
		return err
	}
	put := func(name, filename, mediaType string, write func(io.Writer) error) error {
		hdr := textproto.MIMEHeader{}
		cd := `form-data; name="` + name + `"`
		if filename != "" {
			cd += `; filename="` + escapeName(filename) + `"`
		}
		hdr.Set("Content-Disposition", cd)
		hdr.Set("Content-Type", mediaType)
		pw, err := mw.CreatePart(hdr)
		if err != nil {
			return err
		}
		return write(pw)
	}
	bytesOf := func(b []byte) func(io.Writer) error {
		return func(w io.Writer) error { _, err := w.Write(b); return err }
	}
	if err := put(PartMetadata, "", "application/json", bytesOf(meta)); err != nil {
		return err
	}
	for i, f := range d.Files {
		if err := put(PartFile, f.Name, safeMediaType(f.MediaType), func(w io.Writer) error { return content(i, f, w) }); err != nil {
			return err
		}
	}
	if err := put(PartManifest, "manifest.json", "application/json", bytesOf(d.Manifest)); err != nil {
		return err
	}
	if err := put(PartSignature, "signature.p7s", "application/pkcs7-signature", bytesOf(d.Signature)); err != nil {
		return err
	}
	return mw.Close()
}

// escapeName quotes a file name for a Content-Disposition parameter the
// way mime/multipart does (backslash before \ and "), and percent-encodes
// control characters, so that a name can never end the header.
func escapeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\' || r == '"':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "%%%02X", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// safeMediaType returns mt when it is a well-formed media type (it comes
// from the sender's manifest), else application/octet-stream.
func safeMediaType(mt string) string {
	t, params, err := mime.ParseMediaType(mt)
	if err != nil {
		return "application/octet-stream"
	}
	if s := mime.FormatMediaType(t, params); s != "" {
		return s
	}
	return "application/octet-stream"
}
