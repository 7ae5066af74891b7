package gateway

import (
	"bytes"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
)

// FuzzRoutingHeader fuzzes the submit routing header decoding
// (routingFromRequest): it never panics, refuses only with the documented
// codes, and what it accepts is within the limits and well formed.
func FuzzRoutingHeader(f *testing.F) {
	const acct = "0b6f2c1e-8d4a-4f3b-9c2d-1a2b3c4d5e6f"
	const id = "5d0f1f4e-8a53-4d8e-b1a5-0c2d3e4f5a6b"
	sum := sha256.Sum256([]byte("x"))
	f.Add(id, acct, "3f1e2d3c-4b5a-4697-8877-665544332211", "no.kurer.barnevern.sak.overforing.v1",
		"2030-01-02T03:04:05Z", FormatDigest(sum[:]), "", "", int64(1))
	f.Add(id, acct, acct, "x", "tomorrow", "sha-256=:AAAA:", "bytes 0-0/1", "1", int64(1))
	f.Add("../x", "", "", "", "", "md5=:x:, sha-256=:", "bytes 5-1/2", "-1", int64(-1))
	f.Add(id, acct, acct, "a.b", "2030-01-02T03:04:05+01:00", FormatDigest(sum[:]), "bytes 0-9/99999999999", "99999999999", int64(10))
	s := &Server{cfg: Config{MaxMessageSize: 1 << 20}}
	f.Fuzz(func(t *testing.T, id, from, to, typ, expires, digest, contentRange, size string, cl int64) {
		r := httptest.NewRequest(http.MethodPut, "/v1/messages/x", nil)
		r.SetPathValue("id", id)
		for k, v := range map[string]string{api.HeaderFrom: from, api.HeaderTo: to, api.HeaderType: typ,
			api.HeaderExpires: expires, api.HeaderDigest: digest, "Content-Range": contentRange, api.HeaderSize: size} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		r.ContentLength = cl
		rt, got, cr, err := s.routingFromRequest(r, acct)
		if err != nil {
			switch c := errs.CodeOf(err); c {
			case errs.InvalidHeader, errs.Forbidden, errs.TooLarge:
			default:
				t.Fatalf("undocumented code %s: %v", c, err)
			}
			return
		}
		if !isUUID(rt.ID) || rt.From != acct || !isUUID(rt.To) {
			t.Fatalf("accepted bad ids: %+v", rt)
		}
		if rt.Size < 0 || rt.Size > int64(s.cfg.MaxMessageSize) {
			t.Fatalf("accepted size %d", rt.Size)
		}
		if len(got) != sha256.Size || rt.Digest != FormatDigest(got) {
			t.Fatalf("digest %q / %x", rt.Digest, got)
		}
		if cr.set && (cr.start < 0 || cr.end < cr.start || cr.end >= cr.total || cr.end-cr.start+1 != cl) {
			t.Fatalf("accepted bad range %+v for length %d", cr, cl)
		}
	})
}

// FuzzParseDigest: ParseDigest never panics and what it accepts round-trips.
func FuzzParseDigest(f *testing.F) {
	sum := sha256.Sum256(nil)
	f.Add(FormatDigest(sum[:]))
	f.Add("sha-512=:AA==:, sha-256=:" + FormatDigest(sum[:])[9:])
	f.Add("sha-256=::")
	f.Fuzz(func(t *testing.T, v string) {
		got, err := ParseDigest(v)
		if err != nil {
			return
		}
		if len(got) != sha256.Size {
			t.Fatalf("accepted a %d-byte digest", len(got))
		}
		again, err := ParseDigest(FormatDigest(got))
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzAccountRequestJSON fuzzes the operator API's JSON decoding and field
// checks: no panic, and only malformed_json / too_large refusals from
// decoding and bad_request / unknown_message_type (a well-formed type the
// registry does not know) from the field checks.
func FuzzAccountRequestJSON(f *testing.F) {
	f.Add([]byte(`{"name":"Oslo kommune","org_number":"974760673","types":["no.kurer.barnevern.sak.overforing.v1"]}`))
	f.Add([]byte(`{"name":"x"} {}`))
	f.Add([]byte(`{"name":"x","admin":true}`))
	f.Add([]byte(`[` + strconv.Quote("x") + `]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, api.PathAdminAccounts, bytes.NewReader(body))
		w := httptest.NewRecorder()
		var req api.AccountRequest
		err := decodeJSON(w, r, &req, 64<<10)
		if err != nil {
			if c := errs.CodeOf(err); c != errs.MalformedJSON && c != errs.TooLarge {
				t.Fatalf("decode: code %s", c)
			}
			return
		}
		if err := validateAccountFields(req); err != nil {
			if c := errs.CodeOf(err); c != errs.BadRequest && c != errs.UnknownType {
				t.Fatalf("validate: code %s", c)
			}
		}
	})
}

// FuzzBearer: the Authorization parser never panics and never returns a
// token with surrounding space.
func FuzzBearer(f *testing.F) {
	f.Add("Bearer abc")
	f.Add("bearer   ")
	f.Add("Basic x")
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", h)
		tok := bearer(r)
		if tok != "" && (tok[0] == ' ' || tok[len(tok)-1] == ' ') {
			t.Fatalf("token %q has surrounding space", tok)
		}
	})
}
