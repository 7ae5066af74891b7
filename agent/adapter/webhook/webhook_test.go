package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
)

// recordingHost records the verdicts the adapter hands to the agent.
type recordingHost struct {
	mu        sync.Mutex
	processed []string
	rejected  map[string][]localapi.Reason
	rejects   int
}

func (h *recordingHost) Send(context.Context, adapter.Case) (localapi.SendResponse, error) {
	return localapi.SendResponse{}, errors.New("not used")
}
func (h *recordingHost) Message(context.Context, string) (localapi.MessageDetail, error) {
	return localapi.MessageDetail{}, errors.New("not used")
}
func (h *recordingHost) Events(context.Context, uint64, time.Duration) (localapi.EventsResponse, error) {
	return localapi.EventsResponse{}, errors.New("not used")
}
func (h *recordingHost) Processed(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.processed = append(h.processed, id)
	return nil
}
func (h *recordingHost) Rejected(_ context.Context, id string, reasons []localapi.Reason) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rejected == nil {
		h.rejected = map[string][]localapi.Reason{}
	}
	h.rejected[id] = reasons
	h.rejects++
	return nil
}

// testSecret is a 40-byte secret written to a file.
const testSecret = "0123456789abcdef0123456789abcdef-webhook"

func writeSecret(t testing.TB, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testDelivery is a received message on disk: melding.json, a document in a
// sub-folder with a Norwegian name, and a 1 MiB random file.
func testDelivery(t testing.TB) (adapter.Delivery, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	big := make([]byte, 1<<20)
	_, _ = rand.Read(big)
	contents := map[string][]byte{
		localapi.MetadataFile:             []byte(`{"barn":{"fornavn":"Ola"}}`),
		"dokumenter/vedtak æøå \"1\".txt": []byte("vedtak om hjelpetiltak\n"),
		"dokumenter/skann.pdf":            big,
	}
	d := adapter.Delivery{
		ID: uuid.NewString(), Type: "no.barnevern.sak-overforing.v1", From: uuid.NewString(), To: uuid.NewString(),
		Conversation: uuid.NewString(), Created: time.Now().UTC().Truncate(time.Second),
		Expires: time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second), Dir: dir,
		Manifest: []byte(`{"manifest":true}`), Signature: []byte{0x30, 0x82, 0x01, 0x00, 0xff}, ReceiptID: uuid.NewString(),
	}
	for _, name := range []string{localapi.MetadataFile, "dokumenter/skann.pdf", "dokumenter/vedtak æøå \"1\".txt"} {
		b := contents[name]
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o400); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		mt := "application/octet-stream"
		if strings.HasSuffix(name, ".json") {
			mt = "application/json"
		}
		d.Files = append(d.Files, localapi.File{Name: name, Size: int64(len(b)), SHA256: hex.EncodeToString(s[:]), MediaType: mt})
	}
	return d, contents
}

// answer is what the case system says to one attempt.
type answer struct {
	status     int
	body       string
	retryAfter string
}

// request is what the case system saw in one attempt.
type request struct {
	idempotencyKey string
	contentLength  int64
	meta           *wireMetadata
	parts          map[string][]byte // "file:<name>", "manifest", "signature"
	err            error             // verification
}

// caseSystem is an HTTPS server that verifies each request as the
// documented receiver does and answers from a script (the last answer
// repeats).
type caseSystem struct {
	srv     *httptest.Server
	secret  []byte
	now     func() time.Time
	mu      sync.Mutex
	answers []answer
	seen    []request
}

func newCaseSystem(t testing.TB, answers ...answer) *caseSystem {
	t.Helper()
	cs := &caseSystem{secret: []byte(testSecret), now: time.Now, answers: answers}
	cs.srv = httptest.NewTLSServer(http.HandlerFunc(cs.serve))
	t.Cleanup(cs.srv.Close)
	return cs
}

func (cs *caseSystem) serve(w http.ResponseWriter, r *http.Request) {
	rq := request{idempotencyKey: r.Header.Get("Idempotency-Key"), contentLength: r.ContentLength, parts: map[string][]byte{}}
	rq.meta, rq.err = verifyWebhook(r, cs.secret, cs.now(), func(part, filename string, body io.Reader) error {
		b, err := io.ReadAll(body)
		key := part
		if part == "file" {
			key = "file:" + filename
		}
		rq.parts[key] = b
		return err
	})
	cs.mu.Lock()
	cs.seen = append(cs.seen, rq)
	a := cs.answers[min(len(cs.seen), len(cs.answers))-1]
	cs.mu.Unlock()
	if rq.err != nil {
		http.Error(w, "verification failed", http.StatusUnauthorized)
		return
	}
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.WriteHeader(a.status)
	_, _ = io.WriteString(w, a.body)
}

func (cs *caseSystem) requests() []request {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]request(nil), cs.seen...)
}

// caFile writes the server's certificate as a PEM root.
func (cs *caseSystem) caFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cs.srv.Certificate().Raw})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// newTestWebhook builds the adapter for cs with sleeps recorded, not slept.
func newTestWebhook(t testing.TB, cs *caseSystem, retry RetryConfig) (*Webhook, *[]time.Duration) {
	t.Helper()
	w, err := New("wh", Config{URL: cs.srv.URL + "/kurer", SecretFile: writeSecret(t, testSecret), CAFile: cs.caFile(t), Retry: retry}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	waits := &[]time.Duration{}
	w.sleep = func(ctx context.Context, d time.Duration) bool {
		mu.Lock()
		defer mu.Unlock()
		*waits = append(*waits, d)
		return ctx.Err() == nil
	}
	return w, waits
}

// checkRequest checks that one request carried the whole message.
func checkRequest(t *testing.T, rq request, d adapter.Delivery, contents map[string][]byte) {
	t.Helper()
	if rq.err != nil {
		t.Fatalf("receiver verification: %v", rq.err)
	}
	if rq.idempotencyKey != d.ID {
		t.Errorf("Idempotency-Key = %q, want the message id", rq.idempotencyKey)
	}
	if rq.contentLength <= 0 {
		t.Errorf("no Content-Length (%d)", rq.contentLength)
	}
	m := rq.meta
	if m.ID != d.ID || m.Type != d.Type || m.From != d.From || m.To != d.To || m.Conversation != d.Conversation ||
		m.ReceiptID != d.ReceiptID || !m.Created.Equal(d.Created) || !m.Expires.Equal(d.Expires) {
		t.Errorf("metadata %+v does not match the delivery", m)
	}
	if len(m.Files) != len(d.Files) {
		t.Fatalf("metadata lists %d files, want %d", len(m.Files), len(d.Files))
	}
	for i, f := range d.Files {
		if got := m.Files[i]; got.Name != f.Name || got.Size != f.Size || got.SHA256 != f.SHA256 || got.MediaType != f.MediaType {
			t.Errorf("metadata file %d = %+v, want %+v", i, got, f)
		}
	}
	for name, want := range contents {
		if got, ok := rq.parts["file:"+name]; !ok || !bytes.Equal(got, want) {
			t.Errorf("file %q: got %d bytes (present %v), want %d equal bytes", name, len(got), ok, len(want))
		}
	}
	if !bytes.Equal(rq.parts["manifest"], d.Manifest) || !bytes.Equal(rq.parts["signature"], d.Signature) {
		t.Error("manifest or signature part differs")
	}
}

func TestDeliverAnswers(t *testing.T) {
	tests := []struct {
		name        string
		answers     []answer
		attempts    int
		wantErr     bool
		wantProc    bool
		wantReasons []localapi.Reason
		wantWaits   []time.Duration // as asked; nil: each within the backoff ceiling
	}{
		{name: "accepted", answers: []answer{{status: 200}}, attempts: 1, wantProc: true},
		{name: "503 twice then accepted", answers: []answer{{status: 503}, {status: 503}, {status: 204}}, attempts: 3, wantProc: true},
		{name: "422 with reasons", answers: []answer{{status: 422,
			body: `{"reasons":[{"code":"ukjent_barn","detail":"no child with this id","path":"$.barn"},{"code":"mangler_vedtak"},{"detail":"no code: dropped"}]}`}},
			attempts: 1, wantReasons: []localapi.Reason{{Code: "ukjent_barn", Path: "$.barn", Message: "no child with this id"}, {Code: "mangler_vedtak"}}},
		{name: "400 with garbage", answers: []answer{{status: 400, body: "<html>oops"}}, attempts: 1,
			wantReasons: []localapi.Reason{{Code: ReasonRejected, Message: "the case system answered HTTP 400"}}},
		{name: "409 without body", answers: []answer{{status: 409}}, attempts: 1,
			wantReasons: []localapi.Reason{{Code: ReasonRejected, Message: "the case system answered HTTP 409"}}},
		{name: "429 with Retry-After honoured", answers: []answer{{status: 429, retryAfter: "7"}, {status: 200}}, attempts: 2,
			wantProc: true, wantWaits: []time.Duration{7 * time.Second}},
		{name: "503 with Retry-After date", answers: []answer{{status: 503, retryAfter: time.Now().Add(20 * time.Second).UTC().Format(http.TimeFormat)}, {status: 200}},
			attempts: 2, wantProc: true},
		{name: "401 is a configuration problem, retried", answers: []answer{{status: 401}, {status: 200}}, attempts: 2, wantProc: true},
		{name: "404 is a configuration problem, retried", answers: []answer{{status: 404}, {status: 404}, {status: 404}}, attempts: 3, wantErr: true},
		{name: "redirect is not followed", answers: []answer{{status: 302}}, attempts: 3, wantErr: true},
		{name: "500 until attempts are spent", answers: []answer{{status: 500}}, attempts: 3, wantErr: true},
		{name: "408 retried", answers: []answer{{status: 408}, {status: 201}}, attempts: 2, wantProc: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := newCaseSystem(t, tc.answers...)
			retry := RetryConfig{Attempts: 3, Initial: 100 * time.Millisecond, Max: 30 * time.Second}
			w, waits := newTestWebhook(t, cs, retry)
			d, contents := testDelivery(t)
			h := &recordingHost{}
			err := w.Deliver(t.Context(), h, d)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Deliver = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && (strings.Contains(err.Error(), cs.srv.URL) || strings.Contains(err.Error(), "vedtak")) {
				t.Errorf("error names the URL or a file: %v", err)
			}
			rqs := cs.requests()
			if len(rqs) != tc.attempts {
				t.Fatalf("%d requests, want %d", len(rqs), tc.attempts)
			}
			for _, rq := range rqs {
				checkRequest(t, rq, d, contents)
			}
			wantProcessed := []string(nil)
			if tc.wantProc {
				wantProcessed = []string{d.ID}
			}
			if !reflect.DeepEqual(h.processed, wantProcessed) {
				t.Errorf("Processed calls %v, want %v", h.processed, wantProcessed)
			}
			if tc.wantReasons == nil && h.rejects != 0 {
				t.Errorf("Rejected called: %v", h.rejected)
			}
			if tc.wantReasons != nil && (h.rejects != 1 || !reflect.DeepEqual(h.rejected[d.ID], tc.wantReasons)) {
				t.Errorf("Rejected %d times with %+v, want once with %+v", h.rejects, h.rejected[d.ID], tc.wantReasons)
			}
			if len(*waits) != tc.attempts-1 {
				t.Fatalf("waited %d times, want %d", len(*waits), tc.attempts-1)
			}
			for i, got := range *waits {
				if tc.wantWaits != nil {
					if w := tc.wantWaits[i]; got > w || got < w-time.Second {
						t.Errorf("wait %d = %s, want %s (less the time the answer took)", i, got, w)
					}
					continue
				}
				ceil := retry.Initial << i
				if tc.answers[0].retryAfter != "" {
					ceil = 21 * time.Second
				}
				if got < 0 || got > ceil {
					t.Errorf("wait %d = %s, want within [0, %s]", i, got, ceil)
				}
			}
		})
	}
}

// TestRetryAfterBeyondMax: a Retry-After longer than retry.max ends the
// delivery at once, and keeps the adapter from calling the case system
// until it has passed (capped at max_retry_after).
func TestRetryAfterBeyondMax(t *testing.T) {
	cs := newCaseSystem(t, answer{status: 429, retryAfter: "3600"}, answer{status: 200})
	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	cs.now = now
	w, waits := newTestWebhook(t, cs, RetryConfig{Attempts: 3, Initial: time.Second, Max: 10 * time.Second, MaxRetryAfter: time.Minute})
	w.now = now
	d, _ := testDelivery(t)
	h := &recordingHost{}
	if err := w.Deliver(t.Context(), h, d); err == nil {
		t.Fatal("Deliver after 429 Retry-After 3600 succeeded")
	}
	if n := len(cs.requests()); n != 1 || len(*waits) != 0 {
		t.Fatalf("%d requests and %d waits, want 1 and 0", n, len(*waits))
	}
	// Called again before the (capped) minute is over: no request.
	mu.Lock()
	clock = clock.Add(30 * time.Second)
	mu.Unlock()
	if err := w.Deliver(t.Context(), h, d); err == nil {
		t.Fatal("Deliver during Retry-After succeeded")
	}
	if n := len(cs.requests()); n != 1 {
		t.Fatalf("%d requests during Retry-After, want 1", n)
	}
	// Past the cap (not the hour asked): the case system is called again.
	mu.Lock()
	clock = clock.Add(31 * time.Second)
	mu.Unlock()
	if err := w.Deliver(t.Context(), h, d); err != nil {
		t.Fatalf("Deliver after the cap: %v", err)
	}
	if n := len(cs.requests()); n != 2 || len(h.processed) != 1 {
		t.Fatalf("%d requests, %d processed; want 2 and 1", n, len(h.processed))
	}
}

// TestVerificationFails checks that the documented receiver check is not
// vacuous: a wrong secret, a stale timestamp and a changed file fail it.
func TestVerificationFails(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(cs *caseSystem, d *adapter.Delivery)
	}{
		{name: "wrong secret", mutate: func(cs *caseSystem, _ *adapter.Delivery) {
			cs.secret = []byte("another-secret-of-at-least-32-bytes!!")
		}},
		{name: "stale timestamp", mutate: func(cs *caseSystem, _ *adapter.Delivery) {
			cs.now = func() time.Time { return time.Now().Add(6 * time.Minute) }
		}},
		{name: "manifest digest", mutate: func(cs *caseSystem, d *adapter.Delivery) {
			cs.srv.Config.Handler = tamper(cs.srv.Config.Handler, "manifest", d.Manifest)
		}},
		{name: "file digest", mutate: func(cs *caseSystem, d *adapter.Delivery) {
			cs.srv.Config.Handler = tamper(cs.srv.Config.Handler, "vedtak om", []byte("vedtak om"))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := newCaseSystem(t, answer{status: 200})
			w, _ := newTestWebhook(t, cs, RetryConfig{Attempts: 1})
			d, _ := testDelivery(t)
			tc.mutate(cs, &d)
			h := &recordingHost{}
			if err := w.Deliver(t.Context(), h, d); err == nil {
				t.Fatal("Deliver succeeded although the receiver must refuse")
			}
			rqs := cs.requests()
			if len(rqs) != 1 || rqs[0].err == nil {
				t.Fatalf("receiver accepted the request: %+v", rqs)
			}
			if len(h.processed) != 0 || h.rejects != 0 {
				t.Error("a verdict without an accepted request")
			}
		})
	}
}

// tamper flips one byte after the first occurrence of marker in the body.
func tamper(next http.Handler, _ string, marker []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if i := bytes.Index(b, marker); i >= 0 {
			b[i+len(marker)-1] ^= 1
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		next.ServeHTTP(w, r)
	})
}

// TestPayloadChangedOnDisk: a payload file that no longer matches its
// digest is not sent as if it did.
func TestPayloadChangedOnDisk(t *testing.T) {
	cs := newCaseSystem(t, answer{status: 200})
	w, _ := newTestWebhook(t, cs, RetryConfig{Attempts: 1})
	d, _ := testDelivery(t)
	p := filepath.Join(d.Dir, "dokumenter", "skann.pdf")
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 1
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	h := &recordingHost{}
	err := w.Deliver(t.Context(), h, d)
	if err == nil || !strings.Contains(err.Error(), "differs from its manifest entry") {
		t.Fatalf("Deliver = %v, want a payload error", err)
	}
	for _, rq := range cs.requests() {
		if rq.err == nil {
			t.Error("the case system took a request with a changed file")
		}
	}
	if len(h.processed) != 0 {
		t.Error("processed")
	}
}

func TestNew(t *testing.T) {
	good := writeSecret(t, testSecret)
	short := writeSecret(t, strings.Repeat("x", MinSecretLen-1))
	empty := writeSecret(t, "")
	badCA := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(badCA, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"https", Config{URL: "https://fagsystem.kommune.no/kurer", SecretFile: good}, ""},
		{"http loopback", Config{URL: "http://127.0.0.1:8080/kurer", SecretFile: good}, ""},
		{"http localhost", Config{URL: "http://localhost:8080/kurer", SecretFile: good}, ""},
		{"http ipv6 loopback", Config{URL: "http://[::1]:8080/kurer", SecretFile: good}, ""},
		{"http allowed", Config{URL: "http://fagsystem.test/kurer", SecretFile: good, AllowInsecureHTTP: true}, ""},
		{"http refused", Config{URL: "http://fagsystem.kommune.no/kurer", SecretFile: good}, "https required"},
		{"ftp", Config{URL: "ftp://fagsystem.kommune.no/", SecretFile: good}, "scheme"},
		{"credentials in url", Config{URL: "https://u:p@fagsystem.kommune.no/", SecretFile: good}, "credentials"},
		{"no url", Config{SecretFile: good}, "url: required"},
		{"no secret", Config{URL: "https://x.no/"}, "secret_file: required"},
		{"short secret", Config{URL: "https://x.no/", SecretFile: short}, "at least 32 bytes"},
		{"empty secret", Config{URL: "https://x.no/", SecretFile: empty}, "at least 32 bytes"},
		{"missing secret", Config{URL: "https://x.no/", SecretFile: filepath.Join(t.TempDir(), "nope")}, "secret_file"},
		{"bad ca", Config{URL: "https://x.no/", SecretFile: good, CAFile: badCA}, "ca_file"},
		{"negative timeout", Config{URL: "https://x.no/", SecretFile: good, Timeout: -time.Second}, "negative"},
		{"max below initial", Config{URL: "https://x.no/", SecretFile: good, Retry: RetryConfig{Initial: time.Minute, Max: time.Second}}, "retry.max"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := New("wh", tc.cfg, nil)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if w.cfg.Timeout != 30*time.Second || w.cfg.Retry.Attempts != 3 || w.cfg.Retry.Initial != time.Second ||
					w.cfg.Retry.Max != 30*time.Second || w.cfg.Retry.MaxRetryAfter != 5*time.Minute {
					t.Errorf("defaults not applied: %+v", w.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New = %v, want error containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Error("the error shows the secret")
			}
		})
	}
}

// TestRegistered builds the adapter through the registry, as an agent
// config does, with strict decoding.
func TestRegistered(t *testing.T) {
	secret := writeSecret(t, testSecret)
	a, err := adapter.New(Kind, "fagsystem", func(v any) error {
		c := v.(*Config)
		c.URL, c.SecretFile = "https://fagsystem.kommune.no/kurer", secret
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := adapter.IsReceiver(a)
	if !ok || r.Name() != "fagsystem" {
		t.Fatalf("registered webhook is not a receiver named fagsystem: %v %v", ok, a.Name())
	}
	strict := errors.New("field nope not found")
	if _, err := adapter.New(Kind, "x", func(any) error { return strict }, nil); !errors.Is(err, strict) {
		t.Fatalf("decode error not returned: %v", err)
	}
}

func TestRunWaitsForContext(t *testing.T) {
	w, err := New("wh", Config{URL: "https://x.no/", SecretFile: writeSecret(t, testSecret)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, &recordingHost{}) }()
	select {
	case err := <-done:
		t.Fatalf("Run returned before ctx ended: %v", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestSign(t *testing.T) {
	// A fixed vector, computed independently with
	//   printf '1700000000.6f1c2d4e-0000-4000-8000-000000000001.aaa…a' |
	//   openssl dgst -sha256 -hmac '0123456789abcdef0123456789abcdef-webhook'
	// (64 a's), so that receivers in other languages can test theirs.
	got := Sign([]byte(testSecret), 1700000000, "6f1c2d4e-0000-4000-8000-000000000001", strings.Repeat("a", 64))
	const want = "v1=67ccf6ffa500404104e38f4fd7f10bd027c7a1767b43e8d8ff68db15ae9001ad"
	if got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}
