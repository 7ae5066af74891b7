package gateway_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/errs"
)

// TestPollInline: a poll that asks for envelopes up to N bytes inline gets
// the small ones' exact bytes in the answer and the larger ones without
// (downloaded as usual); a poll that does not ask gets none. Notices never
// carry content.
func TestPollInline(t *testing.T) {
	e := gatewaytest.New(t, func(c *gateway.Config) { c.LeaseTimeout = time.Minute })
	oslo := e.Client("oslo")
	small, large := gatewaytest.RandBytes(10<<10), gatewaytest.RandBytes(20<<10)
	rs, rl := e.Routing("oslo", "bergen", small), e.Routing("oslo", "bergen", large)
	if _, err := oslo.Submit(t.Context(), rs, bytes.NewReader(small)); err != nil {
		t.Fatal(err)
	}
	if _, err := oslo.Submit(t.Context(), rl, bytes.NewReader(large)); err != nil {
		t.Fatal(err)
	}

	// Without asking: no content; the lease then runs out.
	plain := gatewaytest.PollUntil(t, e.Client("bergen"), 2)
	for _, it := range plain {
		if it.Content != nil {
			t.Fatalf("content without ?inline: %s", it.Routing.ID)
		}
	}
	e.Clock.Advance(2 * time.Minute) // the leases end: offered again

	inl := e.ClientWith("bergen", func(c *client.Config) { c.PollInline = 16 << 10 })
	got := gatewaytest.PollUntil(t, inl, 2)
	byID := map[string][]byte{}
	for _, it := range got {
		byID[it.Routing.ID] = it.Content
	}
	if !bytes.Equal(byID[rs.ID], small) {
		t.Errorf("small envelope inline: %d bytes, want its %d bytes", len(byID[rs.ID]), len(small))
	}
	if c, ok := byID[rl.ID]; !ok || c != nil {
		t.Errorf("large envelope (over the asked 16 KiB) came inline or not at all: %v, %d bytes", ok, len(c))
	}
	// The large one downloads as before, and acks work for both.
	for _, id := range []string{rs.ID, rl.ID} {
		if err := inl.Ack(t.Context(), id); err != nil {
			t.Fatalf("ack %s: %v", id, err)
		}
	}
	// A malformed inline value is refused.
	tok, err := inl.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"-1", "abc", "1e9"} {
		resp, body := e.Raw(http.MethodGet, e.URL()+api.PathMailbox+"?inline="+v, tok, nil, nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), string(errs.BadRequest)) {
			t.Errorf("inline=%s: %d %s", v, resp.StatusCode, body)
		}
	}
	// Oslo's notices (accepted, delivered) never carry content.
	inlOslo := e.ClientWith("oslo", func(c *client.Config) { c.PollInline = 64 << 10 })
	for _, it := range gatewaytest.PollUntil(t, inlOslo, 2) {
		if it.Content != nil {
			t.Fatalf("notice with content: %+v", it.Routing)
		}
	}
}

// contentTypeRecorder is a RoundTripper that records the media type of
// each answer.
type contentTypeRecorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	got  []string
}

func (r *contentTypeRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err == nil && req.URL.Path == api.PathMailbox {
		mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		r.mu.Lock()
		r.got = append(r.got, mt)
		r.mu.Unlock()
	}
	return resp, err
}

// TestPollInlineMultipart: a client that asks for inline envelopes gets a
// multipart answer and from it exactly the envelopes that fit; the others
// have no content and download as usual.
func TestPollInlineMultipart(t *testing.T) {
	e := gatewaytest.New(t, func(c *gateway.Config) { c.LeaseTimeout = time.Minute })
	oslo := e.Client("oslo")
	sizes := []int{10 << 10, 20 << 10, 1, 16 << 10, 5 << 10, 16<<10 + 1}
	bodies := map[string][]byte{}
	for _, n := range sizes {
		b := gatewaytest.RandBytes(n)
		r := e.Routing("oslo", "bergen", b)
		if _, err := oslo.Submit(t.Context(), r, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		bodies[r.ID] = b
	}
	rec := &contentTypeRecorder{base: client.NewHTTPClient(e.TLS).Transport}
	inl := e.ClientWith("bergen", func(c *client.Config) {
		c.PollInline = 16 << 10
		c.HTTPClient = &http.Client{Transport: rec}
	})
	got := gatewaytest.PollUntil(t, inl, len(sizes))
	if len(got) != len(sizes) {
		t.Fatalf("%d items, want %d", len(got), len(sizes))
	}
	for _, it := range got {
		want := bodies[it.Routing.ID]
		if len(want) > 16<<10 {
			if it.Content != nil {
				t.Errorf("%d bytes (over 16 KiB) came inline", len(want))
			}
			f, err := os.Create(filepath.Join(t.TempDir(), "env"))
			if err != nil {
				t.Fatal(err)
			}
			if err := inl.Download(t.Context(), it.Routing.ID, f); err != nil {
				t.Fatalf("download: %v", err)
			}
			dl, _ := os.ReadFile(f.Name())
			f.Close()
			if !bytes.Equal(dl, want) {
				t.Errorf("downloaded %d bytes, want its %d", len(dl), len(want))
			}
		} else if !bytes.Equal(it.Content, want) {
			t.Errorf("inline: %d bytes, want its %d bytes", len(it.Content), len(want))
		}
		if err := inl.Ack(t.Context(), it.Routing.ID); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) == 0 || rec.got[0] != api.MediaMultipart {
		t.Errorf("answers were %q, want multipart/mixed", rec.got)
	}
}

// TestPollInlineNegotiation: the gateway answers multipart only when the
// Accept header names multipart/mixed (q above 0); otherwise JSON with
// base64 content as before. A multipart answer has the JSON first, without
// content, then one part per inline envelope, in item order, with its id
// and digest.
func TestPollInlineNegotiation(t *testing.T) {
	e := gatewaytest.New(t, func(c *gateway.Config) { c.LeaseTimeout = time.Minute })
	oslo := e.Client("oslo")
	bodies := map[string][]byte{}
	for _, n := range []int{3 << 10, 40 << 10, 7 << 10, 1 << 10} {
		b := gatewaytest.RandBytes(n)
		r := e.Routing("oslo", "bergen", b)
		if _, err := oslo.Submit(t.Context(), r, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		bodies[r.ID] = b
	}
	// collect polls with accept until it has seen all four items, each
	// answer checked by check (which returns its number of items); the
	// clock then ends the leases for the next subtest.
	collect := func(t *testing.T, accept string, check func(t *testing.T, resp *http.Response, body []byte) int) {
		t.Helper()
		defer e.Clock.Advance(2 * time.Minute)
		tok, err := e.Client("bergen").Token(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var hdr map[string]string
		if accept != "" {
			hdr = map[string]string{"Accept": accept}
		}
		deadline := time.Now().Add(15 * time.Second)
		for n := 0; n < len(bodies); {
			if time.Now().After(deadline) {
				t.Fatalf("got %d items, want %d", n, len(bodies))
			}
			resp, body := e.Raw(http.MethodGet, e.URL()+api.PathMailbox+"?wait=2s&max=10&inline=16384", tok, nil, hdr)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("poll: %d %s", resp.StatusCode, body)
			}
			n += check(t, resp, body)
		}
	}

	for _, accept := range []string{"", "application/json", "*/*", "multipart/*", "multipart/mixed;q=0", "multipart/mixed; q=0.0, application/json"} {
		t.Run("json "+accept, func(t *testing.T) {
			collect(t, accept, func(t *testing.T, resp *http.Response, body []byte) int {
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("Content-Type %q", ct)
				}
				var out api.MailboxResponse
				if err := json.Unmarshal(body, &out); err != nil {
					t.Fatal(err)
				}
				for _, it := range out.Items {
					want := bodies[it.Routing.ID]
					if len(want) <= 16<<10 && !bytes.Equal(it.Content, want) || len(want) > 16<<10 && it.Content != nil {
						t.Errorf("%d bytes: content of %d bytes", len(want), len(it.Content))
					}
				}
				return len(out.Items)
			})
		})
	}

	for _, accept := range []string{"multipart/mixed, application/json;q=0.5", "application/json;q=0.5, Multipart/Mixed;q=1"} {
		t.Run("multipart "+accept, func(t *testing.T) {
			collect(t, accept, func(t *testing.T, resp *http.Response, body []byte) int {
				mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
				if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
					t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
				}
				mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
				p, err := mr.NextRawPart()
				if err != nil {
					t.Fatal(err)
				}
				if ct := p.Header.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("first part %q", ct)
				}
				var out api.MailboxResponse
				if err := json.NewDecoder(p).Decode(&out); err != nil {
					t.Fatal(err)
				}
				var wantIDs []string
				for _, it := range out.Items {
					if it.Content != nil {
						t.Errorf("JSON part carries content of %s", it.Routing.ID)
					}
					if len(bodies[it.Routing.ID]) <= 16<<10 {
						wantIDs = append(wantIDs, it.Routing.ID)
					}
				}
				for i := 0; ; i++ {
					p, err := mr.NextRawPart()
					if err == io.EOF {
						if i != len(wantIDs) {
							t.Errorf("%d parts, want %d", i, len(wantIDs))
						}
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					id := p.Header.Get(api.HeaderMessageID)
					if i >= len(wantIDs) || id != wantIDs[i] {
						t.Fatalf("part %d for %q, want in item order %q", i, id, wantIDs)
					}
					b, _ := io.ReadAll(p)
					if ct := p.Header.Get("Content-Type"); ct != "application/octet-stream" {
						t.Errorf("part %d: Content-Type %q", i, ct)
					}
					if d := p.Header.Get("Content-Digest"); d != e.Routing("oslo", "bergen", b).Digest {
						t.Errorf("part %d: Content-Digest %q", i, d)
					}
					if !bytes.Equal(b, bodies[id]) {
						t.Errorf("part %d: %d bytes, want its %d", i, len(b), len(bodies[id]))
					}
				}
				return len(out.Items)
			})
		})
	}
}

// TestPollMultipartHostile: the client refuses a multipart answer with a
// part it did not ask for, and drops content that does not match its
// routing as it does in a JSON answer. A real gateway sends none of these,
// so a handler stands in for it.
func TestPollMultipartHostile(t *testing.T) {
	good, other := gatewaytest.RandBytes(1000), gatewaytest.RandBytes(1000)
	digest := func(b []byte) string {
		sum := sha256.Sum256(b)
		return "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
	}
	msg := func(id string, b []byte) api.MailboxItem {
		return api.MailboxItem{Kind: api.KindMessage, Routing: api.Routing{ID: id, Size: int64(len(b)), Digest: digest(b)}}
	}
	items := []api.MailboxItem{msg("a", good), msg("b", other),
		{Kind: api.KindNotice, Routing: api.Routing{ID: "n"}, Notice: "x.y.z"}, msg("big", gatewaytest.RandBytes(64<<10))}
	type part struct {
		id   string
		body []byte
	}
	for _, tc := range []struct {
		name  string
		json  []byte // default: items
		parts []part
		cut   int // cut the answer this many bytes short
		want  errs.Code
		drop  bool // a's content is dropped, no error
	}{
		{name: "good", parts: []part{{"a", good}, {"b", other}}},
		{name: "unknown id", parts: []part{{"a", good}, {"zzz", other}}, want: errs.MalformedJSON},
		{name: "no id", parts: []part{{"", good}}, want: errs.MalformedJSON},
		{name: "duplicate", parts: []part{{"a", good}, {"a", good}}, want: errs.MalformedJSON},
		{name: "notice", parts: []part{{"n", good}}, want: errs.MalformedJSON},
		{name: "larger than routing", parts: []part{{"a", append(bytes.Clone(good), 'x')}}, want: errs.MalformedJSON},
		{name: "larger than asked", parts: []part{{"big", gatewaytest.RandBytes(64 << 10)}}, want: errs.MalformedJSON},
		{name: "digest mismatch", parts: []part{{"a", other}}, drop: true},
		{name: "shorter than routing", parts: []part{{"a", good[:999]}}, drop: true},
		{name: "JSON part too large", json: append([]byte(`{"items":[],"pad":"`+strings.Repeat("x", 200<<10)), `"}`...), want: errs.TooLarge},
		{name: "JSON malformed", json: []byte(`{"items":[`), want: errs.MalformedJSON},
		{name: "cut off", parts: []part{{"a", good}, {"b", other}}, cut: 500, want: errs.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == api.PathToken {
					w.Header().Set("Content-Type", "application/json")
					_ = json.NewEncoder(w).Encode(api.TokenResponse{AccessToken: "t", TokenType: "Bearer", ExpiresIn: 300})
					return
				}
				if !strings.HasPrefix(r.Header.Get("Accept"), "multipart/mixed") {
					http.Error(w, "want multipart", http.StatusNotAcceptable)
					return
				}
				var buf bytes.Buffer
				mw := multipart.NewWriter(&buf)
				jp, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
				if tc.json != nil {
					_, _ = jp.Write(tc.json)
				} else {
					_ = json.NewEncoder(jp).Encode(api.MailboxResponse{Items: items})
				}
				for _, p := range tc.parts {
					pw, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/octet-stream"},
						api.HeaderMessageID: {p.id}, api.HeaderDigest: {digest(p.body)}})
					_, _ = pw.Write(p.body)
				}
				_ = mw.Close()
				w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
				_, _ = w.Write(buf.Bytes()[:buf.Len()-tc.cut])
			}))
			defer srv.Close()
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			c, err := client.New(client.Config{BaseURL: srv.URL, AccountID: "897028ee-1d43-591c-bb6c-b98ced0afa70",
				Signer: key, HTTPClient: srv.Client(), PollInline: 16 << 10})
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Poll(t.Context(), time.Second, 1)
			if tc.want != "" {
				gatewaytest.WantCode(t, err, tc.want)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(items) {
				t.Fatalf("%d items, want %d", len(got), len(items))
			}
			if tc.drop {
				if got[0].Content != nil {
					t.Errorf("content that does not match kept: %d bytes", len(got[0].Content))
				}
				return
			}
			if !bytes.Equal(got[0].Content, good) || !bytes.Equal(got[1].Content, other) || got[2].Content != nil || got[3].Content != nil {
				t.Errorf("contents: %d %d %d %d bytes", len(got[0].Content), len(got[1].Content), len(got[2].Content), len(got[3].Content))
			}
		})
	}
}
