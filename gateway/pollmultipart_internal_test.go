package gateway

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/api"
)

// TestAcceptsMultipart: only an Accept that names multipart/mixed with a q
// above 0 gets the multipart poll answer.
func TestAcceptsMultipart(t *testing.T) {
	for _, tc := range []struct {
		accept []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"application/json"}, false},
		{[]string{"*/*"}, false},
		{[]string{"multipart/*"}, false},
		{[]string{"multipart/mixed-up"}, false},
		{[]string{"multipart/mixed"}, true},
		{[]string{"multipart/mixed, application/json;q=0.5"}, true},
		{[]string{" Multipart/Mixed ;charset=x"}, true},
		{[]string{"application/json", "multipart/mixed"}, true},
		{[]string{"multipart/mixed;q=0"}, false},
		{[]string{"multipart/mixed; Q=0.000, application/json"}, false},
		{[]string{"multipart/mixed;q=0.001"}, true},
		{[]string{"multipart/mixed;q=x"}, false},
		{[]string{"application/json;q=1, multipart/mixed;boundary=x;q=0.1"}, true},
	} {
		h := http.Header{}
		for _, v := range tc.accept {
			h.Add("Accept", v)
		}
		if got := acceptsMultipart(h); got != tc.want {
			t.Errorf("Accept %q: %v, want %v", tc.accept, got, tc.want)
		}
	}
}

// discardWriter is an http.ResponseWriter that drops the body.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkPollAnswerEncode compares writing a poll answer with 8
// envelopes of 10 KiB inline: base64 in JSON against raw in multipart.
func BenchmarkPollAnswerEncode(b *testing.B) {
	const n, size = 8, 10 << 10
	items := make([]api.MailboxItem, n)
	for i := range items {
		c := make([]byte, size)
		sum := sha256.Sum256(c)
		items[i] = api.MailboxItem{Kind: api.KindMessage, Attempt: 1, LeaseUntil: time.Now().UTC(),
			Routing: api.Routing{ID: fmt.Sprintf("5d0f1f4e-8a53-4d8e-b1a5-0c2d3e4f5a%02d", i), Size: size,
				Digest: FormatDigest(sum[:]), Type: "no.kurer.barnevern.sak.overforing.v1"},
			Content: c}
	}
	for _, bc := range []struct {
		name  string
		write func(http.ResponseWriter, api.MailboxResponse)
	}{
		{"json", func(w http.ResponseWriter, out api.MailboxResponse) { writeJSON(w, http.StatusOK, out) }},
		{"multipart", writePollMultipart},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(n * size)
			for b.Loop() {
				out := api.MailboxResponse{Items: append([]api.MailboxItem(nil), items...)}
				bc.write(&discardWriter{h: http.Header{}}, out)
			}
		})
	}
}
