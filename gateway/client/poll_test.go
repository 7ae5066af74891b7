package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/api"
)

// TestPollDropsContentThatDoesNotMatch: inline content is checked like a
// download; content whose size or digest disagrees with its routing header
// is dropped (the receiver downloads instead), matching content is kept.
// A real gateway cannot send a bad one, so a handler stands in for it here.
func TestPollDropsContentThatDoesNotMatch(t *testing.T) {
	good := []byte("ciphertext of the small envelope")
	items := []api.MailboxItem{
		{Kind: api.KindMessage, Routing: api.Routing{ID: "good", Size: int64(len(good)), Digest: contentDigest(good)}, Content: good},
		{Kind: api.KindMessage, Routing: api.Routing{ID: "flipped", Size: int64(len(good)), Digest: contentDigest(good)}, Content: append([]byte("X"), good[1:]...)},
		{Kind: api.KindMessage, Routing: api.Routing{ID: "short", Size: int64(len(good)) + 1, Digest: contentDigest(good)}, Content: good},
	}
	var gotInline string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case api.PathToken:
			_ = json.NewEncoder(w).Encode(api.TokenResponse{AccessToken: "t", TokenType: "Bearer", ExpiresIn: 300})
		case api.PathMailbox:
			gotInline = r.URL.Query().Get("inline")
			_ = json.NewEncoder(w).Encode(api.MailboxResponse{Items: items})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{BaseURL: srv.URL, AccountID: "897028ee-1d43-591c-bb6c-b98ced0afa70", Signer: key,
		HTTPClient: srv.Client(), PollInline: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Poll(t.Context(), time.Second, 10)
	if err != nil {
		t.Fatal(err)
	}
	if gotInline != "65536" {
		t.Errorf("inline asked = %q, want 65536", gotInline)
	}
	if len(out) != 3 || string(out[0].Content) != string(good) || out[1].Content != nil || out[2].Content != nil {
		t.Fatalf("contents: %q %q %q", out[0].Content, out[1].Content, out[2].Content)
	}
}
