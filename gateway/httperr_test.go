package gateway_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/errs"
)

// wantError checks that an answer is the catalogue's JSON error with code.
func wantError(tb testing.TB, resp *http.Response, body []byte, code errs.Code) {
	tb.Helper()
	if resp.StatusCode != code.Status() {
		tb.Fatalf("status %d, want %d (%s); body %q", resp.StatusCode, code.Status(), code, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("Content-Type %q, want application/json; body %q", ct, body)
	}
	var b errs.Body
	if err := json.Unmarshal(body, &b); err != nil || b.Code != code || b.Message != code.Message() {
		tb.Fatalf("body %q (%v), want code %s", body, err, code)
	}
}

// TestMethodNotAllowed: a known path with a method it does not serve is
// 405 method_not_allowed with Allow, on both listeners; unknown paths stay
// 404 not_found, and the operator paths on the agents' listener stay
// operator_role_required whatever the method.
func TestMethodNotAllowed(t *testing.T) {
	e := gatewaytest.New(t, nil)
	tok, err := e.Client("oslo").Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	for _, tc := range []struct {
		name, method, url, token string
		code                     errs.Code
		allow                    string
	}{
		{"token by GET", http.MethodGet, e.URL() + api.PathToken, "", errs.MethodNotAllowed, "POST"},
		{"mailbox by DELETE", http.MethodDelete, e.URL() + api.PathMailbox, tok, errs.MethodNotAllowed, "GET, HEAD"},
		{"message by GET", http.MethodGet, e.URL() + api.PathMessages + id, tok, errs.MethodNotAllowed, "HEAD, PUT"},
		{"message by POST without token", http.MethodPost, e.URL() + api.PathMessages + id, "", errs.MethodNotAllowed, "HEAD, PUT"},
		{"content by PUT", http.MethodPut, e.URL() + api.PathMailbox + "/" + id + "/content", tok, errs.MethodNotAllowed, "GET, HEAD"},
		{"ack by GET", http.MethodGet, e.URL() + api.PathMailbox + "/" + id + "/ack", tok, errs.MethodNotAllowed, "POST"},
		{"batch ack by GET", http.MethodGet, e.URL() + api.PathMailbox + "/ack", tok, errs.MethodNotAllowed, "POST"},
		{"healthz by POST", http.MethodPost, e.URL() + api.PathHealth, "", errs.MethodNotAllowed, "GET, HEAD"},
		{"openapi by OPTIONS", http.MethodOptions, e.URL() + api.PathOpenAPI, "", errs.MethodNotAllowed, "GET, HEAD"},
		{"unknown path", http.MethodGet, e.URL() + "/v1/nope", tok, errs.NotFound, ""},
		{"unknown path by POST", http.MethodPost, e.URL() + "/v1/nope", tok, errs.NotFound, ""},
		{"content under messages", http.MethodGet, e.URL() + api.PathMessages + id + "/content", tok, errs.NotFound, ""},
		{"operator path on agents' listener", http.MethodPatch, e.URL() + api.PathAdminAccounts, tok, errs.OperatorOnly, ""},
		{"admin: messages by DELETE", http.MethodDelete, e.AdminURL() + api.PathAdminMessages, e.OperatorToken, errs.MethodNotAllowed, "GET, HEAD"},
		{"admin: account by POST", http.MethodPost, e.AdminURL() + api.PathAdminAccounts + "/" + e.IDs["oslo"], e.OperatorToken, errs.MethodNotAllowed, "DELETE, GET, HEAD, PUT"},
		{"admin: certs by GET", http.MethodGet, e.AdminURL() + api.PathAdminAccounts + "/" + e.IDs["oslo"] + "/certs", e.OperatorToken, errs.MethodNotAllowed, "POST"},
		{"admin: readyz by DELETE", http.MethodDelete, e.AdminURL() + api.PathReady, "", errs.MethodNotAllowed, "GET, HEAD"},
		{"admin: agents' path", http.MethodGet, e.AdminURL() + api.PathMailbox, e.OperatorToken, errs.NotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.Raw(tc.method, tc.url, tc.token, nil, nil)
			wantError(t, resp, body, tc.code)
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Fatalf("Allow %q, want %q", got, tc.allow)
			}
		})
	}
	// The right method still reaches the route.
	resp, body := e.Raw(http.MethodGet, e.URL()+api.PathHealth, "", nil, nil)
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("GET healthz: %d %q", resp.StatusCode, body)
	}
	resp, _ = e.Raw(http.MethodHead, e.URL()+api.PathMessages+id, tok, nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("HEAD of an unknown upload: %d, want 404", resp.StatusCode)
	}
}

// TestContentRange: valid ranges on a download work as before (single,
// suffix, several as multipart/byteranges); an unsatisfiable or malformed
// one is 416 range_not_satisfiable as JSON with Content-Range: bytes */SIZE
// and the envelope's Content-Digest, which the Go client's resume relies on.
func TestContentRange(t *testing.T) {
	e := gatewaytest.New(t, nil)
	for _, size := range []int{1000, 200 << 10} { // inline and spooled
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			body := gatewaytest.RandBytes(size)
			rt := e.Routing("bergen", "oslo", body)
			if _, err := e.Client("bergen").Submit(t.Context(), rt, bytes.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			oslo := e.Client("oslo")
			tok, err := oslo.Token(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			url := e.URL() + api.PathMailbox + "/" + rt.ID + "/content"
			n := len(body)
			get := func(rng string) (*http.Response, []byte) {
				var hdr map[string]string
				if rng != "" {
					hdr = map[string]string{"Range": rng}
				}
				return e.Raw(http.MethodGet, url, tok, nil, hdr)
			}

			t.Run("whole", func(t *testing.T) {
				resp, got := get("")
				if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) || resp.Header.Get(api.HeaderDigest) != rt.Digest {
					t.Fatalf("status %d, %d bytes, digest %q", resp.StatusCode, len(got), resp.Header.Get(api.HeaderDigest))
				}
			})
			for _, tc := range []struct {
				rng        string
				start, end int // inclusive
			}{
				{"bytes=0-99", 0, 99},
				{"bytes=100-", 100, n - 1},
				{"bytes=-100", n - 100, n - 1},
				{"bytes=" + strconv.Itoa(n-1) + "-" + strconv.Itoa(n+500), n - 1, n - 1},
			} {
				t.Run(tc.rng, func(t *testing.T) {
					resp, got := get(tc.rng)
					if resp.StatusCode != http.StatusPartialContent {
						t.Fatalf("status %d: %q", resp.StatusCode, got)
					}
					wantCR := "bytes " + strconv.Itoa(tc.start) + "-" + strconv.Itoa(tc.end) + "/" + strconv.Itoa(n)
					if cr := resp.Header.Get("Content-Range"); cr != wantCR {
						t.Fatalf("Content-Range %q, want %q", cr, wantCR)
					}
					if !bytes.Equal(got, body[tc.start:tc.end+1]) {
						t.Fatalf("got %d bytes, not the range", len(got))
					}
				})
			}
			t.Run("several ranges", func(t *testing.T) {
				resp, got := get("bytes=0-9,-10")
				mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
				if resp.StatusCode != http.StatusPartialContent || err != nil || mt != "multipart/byteranges" {
					t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
				}
				mr := multipart.NewReader(bytes.NewReader(got), params["boundary"])
				for i, want := range [][]byte{body[:10], body[n-10:]} {
					p, err := mr.NextPart()
					if err != nil {
						t.Fatalf("part %d: %v", i, err)
					}
					b, _ := io.ReadAll(p)
					if !bytes.Equal(b, want) {
						t.Fatalf("part %d (%s) is not the range", i, p.Header.Get("Content-Range"))
					}
				}
				if _, err := mr.NextPart(); err != io.EOF {
					t.Fatalf("more than two parts: %v", err)
				}
			})
			for _, rng := range []string{
				"bytes=" + strconv.Itoa(n) + "-",
				"bytes=" + strconv.Itoa(n+10) + "-" + strconv.Itoa(n+20),
				"bytes=abc",
				"items=0-10",
				"bytes=20-10",
			} {
				t.Run("unsatisfiable "+rng, func(t *testing.T) {
					resp, got := get(rng)
					wantError(t, resp, got, errs.RangeNotSatisfiable)
					if cr := resp.Header.Get("Content-Range"); cr != "bytes */"+strconv.Itoa(n) {
						t.Fatalf("Content-Range %q, want bytes */%d", cr, n)
					}
					if d := resp.Header.Get(api.HeaderDigest); d != rt.Digest {
						t.Fatalf("Content-Digest %q, want the envelope's %q", d, rt.Digest)
					}
					if strings.Contains(string(got), "invalid range") {
						t.Fatalf("net/http's text leaked into the body: %q", got)
					}
				})
			}

			// If-Match guards a resumed download against another envelope
			// under the same id: the ETag passes, anything else is 412 as
			// the catalogue's JSON, not net/http's empty answer.
			t.Run("if-match", func(t *testing.T) {
				resp, _ := get("")
				etag := resp.Header.Get("ETag")
				if etag == "" {
					t.Fatal("no ETag on the download")
				}
				resp, got := e.Raw(http.MethodGet, url, tok, nil, map[string]string{"Range": "bytes=0-9", "If-Match": etag})
				if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, body[:10]) {
					t.Fatalf("If-Match with the ETag: status %d, %d bytes", resp.StatusCode, len(got))
				}
				resp, got = e.Raw(http.MethodGet, url, tok, nil, map[string]string{"Range": "bytes=0-9", "If-Match": `"other"`})
				wantError(t, resp, got, errs.PreconditionFailed)
				if resp.Header.Get("ETag") != "" || resp.Header.Get("Content-Length") != strconv.Itoa(len(got)) {
					t.Fatalf("412 headers: ETag %q, Content-Length %q for %d bytes", resp.Header.Get("ETag"), resp.Header.Get("Content-Length"), len(got))
				}
			})

			// The client resumes a download it already has whole through
			// the 416 and checks its copy against Content-Digest.
			t.Run("client resume of a complete copy", func(t *testing.T) {
				dst := filepath.Join(t.TempDir(), "env")
				if err := os.WriteFile(dst, body, 0o600); err != nil {
					t.Fatal(err)
				}
				f, err := os.OpenFile(dst, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if err := oslo.Download(t.Context(), rt.ID, f); err != nil {
					t.Fatalf("download of a complete copy: %v", err)
				}
				bad := bytes.Clone(body)
				bad[0] ^= 0xff
				if _, err := f.WriteAt(bad, 0); err != nil {
					t.Fatal(err)
				}
				gatewaytest.WantCode(t, oslo.Download(t.Context(), rt.ID, f), errs.DigestMismatch)
			})
		})
	}
}

// TestTokenFormTooLarge: an oversized form on the token endpoint is 413
// too_large, not 400; a small malformed one stays 400 bad_request.
func TestTokenFormTooLarge(t *testing.T) {
	e := gatewaytest.New(t, nil)
	_, err := e.PostToken(strings.Repeat("a", 64<<10))
	gatewaytest.WantCode(t, err, errs.TooLarge)

	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	resp, body := e.Raw(http.MethodPost, e.URL()+api.PathToken, "", []byte("grant_type=%zz"), form)
	wantError(t, resp, body, errs.BadRequest)
	resp, body = e.Raw(http.MethodPost, e.URL()+api.PathToken, "", bytes.Repeat([]byte("x=1&"), 16<<10), form)
	wantError(t, resp, body, errs.TooLarge)
}
