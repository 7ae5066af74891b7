package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// logRecords are the JSON log lines in buf with msg.
func logRecords(tb testing.TB, buf *syncBuffer, msg string) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			tb.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// panicServer is a Server with only what routing, recovery and metrics
// need: no store (a handler that touches it panics), a log in buf,
// operatorToken as the operator credential, and no admin listener (the
// operator routes are on the API handler).
func panicServer(tb testing.TB, buf *syncBuffer) (*Server, string) {
	tb.Helper()
	const operatorToken = "operator-test-token"
	sum := sha256.Sum256([]byte(operatorToken))
	s := &Server{
		log:    slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		opHash: sum[:],
		cfg:    Config{BodyIdleTimeout: time.Minute}, // instrument's deadlines
	}
	s.met = newMetrics(s)
	return s, operatorToken
}

func requestCount(tb testing.TB, s *Server, route, code string) float64 {
	tb.Helper()
	var m dto.Metric
	if err := s.met.requests.WithLabelValues(route, code).Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// wantJSONError checks status, JSON content type and catalogue code.
func wantJSONError(tb testing.TB, resp *http.Response, body []byte, code errs.Code) {
	tb.Helper()
	if resp.StatusCode != code.Status() {
		tb.Fatalf("status %d, want %d; body %s", resp.StatusCode, code.Status(), body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("Content-Type %q, want application/json; body %s", ct, body)
	}
	var b errs.Body
	if err := json.Unmarshal(body, &b); err != nil || b.Code != code || b.Message != code.Message() {
		tb.Fatalf("body %s (%v), want code %s", body, err, code)
	}
}

// TestRecoverPanicsThroughHandlers makes a real route panic (the operator's
// message listing on a server without a store) behind the API and the admin
// handler, over real connections: the client gets the catalogue's 500
// internal_error as JSON, the panic is logged at ERROR with route and method
// but nothing of the request, and the request metrics count the 500.
func TestRecoverPanicsThroughHandlers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler func(*Server) http.Handler
	}{
		{"api listener (admin routes on it)", (*Server).apiHandler},
		{"admin listener", (*Server).adminHandler},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf syncBuffer
			s, op := panicServer(t, &buf)
			ts := httptest.NewServer(tc.handler(s))
			defer ts.Close()
			const secret = "personnummer-01010112345"
			req, err := http.NewRequest(http.MethodGet, ts.URL+api.PathAdminMessages+"?account="+secret, strings.NewReader(secret))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+op)
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatalf("a panicking handler cut the connection: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantJSONError(t, resp, body, errs.Internal)
			if strings.Contains(string(body), "nil pointer") || strings.Contains(string(body), "goroutine") {
				t.Fatalf("panic leaked to the client: %s", body)
			}

			recs := logRecords(t, &buf, "handler panic")
			if len(recs) != 1 {
				t.Fatalf("%d panic log records, want 1; log:\n%s", len(recs), buf.String())
			}
			rec := recs[0]
			route := "GET " + api.PathAdminMessages
			if rec["level"] != "ERROR" || rec["route"] != route || rec["method"] != "GET" {
				t.Fatalf("panic log record %v, want level ERROR, route %q, method GET", rec, route)
			}
			if p, _ := rec["panic"].(string); !strings.Contains(p, "nil pointer") {
				t.Fatalf("panic log record lacks the panic value: %v", rec)
			}
			for _, leak := range []string{secret, op} {
				if strings.Contains(buf.String(), leak) {
					t.Fatalf("log holds request data %q:\n%s", leak, buf.String())
				}
			}
			if n := requestCount(t, s, route, "500"); n != 1 {
				t.Fatalf("kurer_gateway_http_requests_total{route=%q,code=\"500\"} = %v, want 1", route, n)
			}
		})
	}
}

// TestRecoverPanicsMiddleware covers what the route above cannot: headers
// set before the panic, a panic after the response began, and
// http.ErrAbortHandler.
func TestRecoverPanicsMiddleware(t *testing.T) {
	t.Run("headers set before the panic are dropped", func(t *testing.T) {
		var buf syncBuffer
		s, _ := panicServer(t, &buf)
		mux := http.NewServeMux()
		mux.HandleFunc("GET /boom", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "4096")
			w.Header().Set(api.HeaderDigest, "sha-256=:AAAA:")
			w.Header().Set("Content-Type", "application/octet-stream")
			panic("boom before write")
		})
		ts := httptest.NewServer(s.instrument(s.recoverPanics(mux)))
		defer ts.Close()
		resp, err := ts.Client().Get(ts.URL + "/boom")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantJSONError(t, resp, body, errs.Internal)
		if resp.Header.Get(api.HeaderDigest) != "" {
			t.Fatalf("the handler's Content-Digest went out with the error")
		}
		recs := logRecords(t, &buf, "handler panic")
		if len(recs) != 1 || recs[0]["panic"] != "boom before write" || recs[0]["response_started"] != false {
			t.Fatalf("panic log records %v", recs)
		}
		if n := requestCount(t, s, "GET /boom", "500"); n != 1 {
			t.Fatalf("500s counted for GET /boom: %v, want 1", n)
		}
	})

	t.Run("a panic after the response began cuts the connection", func(t *testing.T) {
		var buf syncBuffer
		s, _ := panicServer(t, &buf)
		mux := http.NewServeMux()
		mux.HandleFunc("GET /half", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write([]byte("first part "))
			_ = http.NewResponseController(w).Flush()
			panic("boom after write")
		})
		ts := httptest.NewServer(s.instrument(s.recoverPanics(mux)))
		defer ts.Close()
		resp, err := ts.Client().Get(ts.URL + "/half")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("a truncated answer looked complete: %d %q", resp.StatusCode, body)
		}
		if strings.Contains(string(body), string(errs.Internal)) {
			t.Fatalf("an error body was appended to a begun response: %q", body)
		}
		recs := logRecords(t, &buf, "handler panic")
		if len(recs) != 1 || recs[0]["panic"] != "boom after write" || recs[0]["response_started"] != true || recs[0]["level"] != "ERROR" {
			t.Fatalf("panic log records %v", recs)
		}
	})

	t.Run("flushed headers count as begun", func(t *testing.T) {
		var buf syncBuffer
		s, _ := panicServer(t, &buf)
		h := s.recoverPanics(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_ = http.NewResponseController(w).Flush()
			panic("boom after flush")
		}))
		got := servePanicking(h)
		if got != http.ErrAbortHandler {
			t.Fatalf("recovered %v, want http.ErrAbortHandler", got)
		}
	})

	t.Run("http.ErrAbortHandler passes through", func(t *testing.T) {
		var buf syncBuffer
		s, _ := panicServer(t, &buf)
		h := s.recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic(http.ErrAbortHandler)
		}))
		got := servePanicking(h)
		if got != http.ErrAbortHandler {
			t.Fatalf("recovered %v, want http.ErrAbortHandler", got)
		}
		if recs := logRecords(t, &buf, "handler panic"); len(recs) != 0 {
			t.Fatalf("an abort was logged as a panic: %v", recs)
		}
	})

	t.Run("a handler that does not panic is untouched", func(t *testing.T) {
		var buf syncBuffer
		s, _ := panicServer(t, &buf)
		h := s.recoverPanics(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusTeapot)
			_, _ = w.Write([]byte("tea"))
		}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Code != http.StatusTeapot || rec.Body.String() != "tea" || buf.String() != "" {
			t.Fatalf("got %d %q, log %q", rec.Code, rec.Body.String(), buf.String())
		}
	})
}

// servePanicking serves one request on a recorder and returns what
// ServeHTTP panicked with (nil if it returned).
func servePanicking(h http.Handler) (v any) {
	defer func() { v = recover() }()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	return nil
}

// TestMethodNotAllowedAdminOnAPI checks 405 with Allow for the operator
// routes when they share the API listener (admin_listen off), and that
// unknown paths stay 404.
func TestMethodNotAllowedAdminOnAPI(t *testing.T) {
	var buf syncBuffer
	s, op := panicServer(t, &buf)
	ts := httptest.NewServer(s.apiHandler())
	defer ts.Close()
	for _, tc := range []struct {
		method, path string
		code         errs.Code
		allow        string
	}{
		{http.MethodDelete, api.PathAdminMessages, errs.MethodNotAllowed, "GET, HEAD"},
		{http.MethodPatch, api.PathAdminAccounts, errs.MethodNotAllowed, "GET, HEAD, POST"},
		{http.MethodPost, api.PathAdminAccounts + "/" + hex.EncodeToString(make([]byte, 16)), errs.MethodNotAllowed, "DELETE, GET, HEAD, PUT"},
		{http.MethodGet, api.PathAdminAccounts + "/x/certs/y", errs.MethodNotAllowed, "DELETE"},
		{http.MethodGet, api.PathAdmin + "nope", errs.NotFound, ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, ts.URL+tc.path, nil)
			req.Header.Set("Authorization", "Bearer "+op)
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantJSONError(t, resp, body, tc.code)
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Fatalf("Allow %q, want %q", got, tc.allow)
			}
		})
	}
}

// TestAckBatchPanicContained: the batch ack acks its ids on goroutines of
// their own, out of recoverPanics' reach. A panic in one (here: a server
// without a store) must not take the gateway down: each id fails with
// internal_error, the answer is the batch's usual 200, and every panic is
// logged as a handler panic without the ids.
func TestAckBatchPanicContained(t *testing.T) {
	var buf syncBuffer
	s, _ := panicServer(t, &buf)
	ids := []string{"01a23746-d0bb-7bca-bddc-8dd7b418c073", "01a23746-d0bb-7bca-bddc-8dd7b418c074"}
	body, err := json.Marshal(api.AckRequest{IDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, api.PathMailbox+"/ack", bytes.NewReader(body))
	w := httptest.NewRecorder()
	s.recoverPanics(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.handleAckBatch(w, r, "account-a")
	})).ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", w.Code, w.Body)
	}
	var got api.AckResponse
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Failed) != len(ids) {
		t.Fatalf("failed %+v, want both ids", got.Failed)
	}
	for i, f := range got.Failed {
		if f.ID != ids[i] || f.Code != errs.Internal {
			t.Fatalf("failed[%d] = %+v, want %s internal_error", i, f, ids[i])
		}
	}
	recs := logRecords(t, &buf, "handler panic")
	if len(recs) != len(ids) {
		t.Fatalf("%d panic log records, want %d; log:\n%s", len(recs), len(ids), buf.String())
	}
	for _, id := range ids {
		if strings.Contains(buf.String(), id) {
			t.Fatalf("log holds the id %s:\n%s", id, buf.String())
		}
	}
}
