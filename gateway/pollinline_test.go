package gateway_test

import (
	"bytes"
	"net/http"
	"strings"
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
