package gateway_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
	"github.com/kurer/kurer/internal/pki/pkitest"
)

// fingerprints are the fingerprints of an account's certificates.
func fingerprints(a api.Account) []string {
	out := make([]string, 0, len(a.Certificates))
	for _, c := range a.Certificates {
		out = append(out, c.Fingerprint)
	}
	slices.Sort(out)
	return out
}

func certPEM(c *x509.Certificate) string { return string(pki.EncodeCertPEM(c)) }

// TestCatalogCertificateRefusals: a certificate that is expired, not yet
// valid, or issued by a CA outside the trust roots is refused when an
// account is created with it and when it is added to an account, and
// the catalog is unchanged; a current certificate from the trust roots is
// taken (so the refusals are the validity checks).
func TestCatalogCertificateRefusals(t *testing.T) {
	e := gatewaytest.New(t, nil)
	ad := e.Admin()
	ctx := t.Context()
	now := e.Clock.Now()
	stranger := pkitest.New(t) // another CA, not among the gateway's trust roots
	cases := []struct {
		name string
		cert *x509.Certificate
	}{
		{"expired", e.PKI.Add(t, "expired", nil, now.Add(-48*time.Hour), now.Add(-24*time.Hour)).Cert},
		{"not-yet-valid", e.PKI.Add(t, "not-yet-valid", nil, now.Add(24*time.Hour), now.Add(48*time.Hour)).Cert},
		{"untrusted-ca", stranger.Add(t, "oslo", nil, time.Time{}, time.Time{}).Cert},
	}
	osloID := e.IDs["oslo"]
	for i, tc := range cases {
		t.Run("add-account-"+tc.name, func(t *testing.T) {
			before, err := ad.Accounts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ad.CreateAccount(ctx, api.AccountRequest{Name: "ny " + tc.name, OrgNumber: orgNumber(t, 20+i),
				Types: []string{gatewaytest.MessageType}, Certificates: []string{certPEM(tc.cert)}})
			gatewaytest.WantCode(t, err, errs.BadRequest)
			after, err := ad.Accounts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != len(before) {
				t.Fatalf("catalog went from %d to %d accounts", len(before), len(after))
			}
		})
		t.Run("add-cert-"+tc.name, func(t *testing.T) {
			before, err := ad.Account(ctx, osloID)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ad.AddCert(ctx, osloID, certPEM(tc.cert))
			gatewaytest.WantCode(t, err, errs.BadRequest)
			after, err := ad.Account(ctx, osloID)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(fingerprints(after), fingerprints(before)) {
				t.Fatalf("certificates changed: %v -> %v", fingerprints(before), fingerprints(after))
			}
		})
	}
	t.Run("control-current-trusted-cert-taken", func(t *testing.T) {
		fresh := e.PKI.Add(t, "fresh", nil, time.Time{}, time.Time{}).Cert
		a, err := ad.AddCert(ctx, osloID, certPEM(fresh))
		if err != nil || !slices.Contains(fingerprints(a), pki.Fingerprint(fresh)) {
			t.Fatalf("add a current certificate: %v (%v)", err, fingerprints(a))
		}
	})
}

// TestCatalogLastCertificateKept: an account's last certificate cannot be
// removed (it could no longer authenticate nor be encrypted to); with two,
// one goes, and the other is then the last.
func TestCatalogLastCertificateKept(t *testing.T) {
	e := gatewaytest.New(t, nil)
	ad := e.Admin()
	ctx := t.Context()
	id := e.IDs["oslo"]
	first := pki.Fingerprint(e.PKI.Accounts["oslo"].Cert)

	t.Run("remove-only-certificate", func(t *testing.T) {
		_, err := ad.RemoveCert(ctx, id, first)
		gatewaytest.WantCode(t, err, errs.BadRequest)
		a, err := ad.Account(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := fingerprints(a); !slices.Equal(got, []string{first}) {
			t.Fatalf("certificates after the refusal: %v, want [%s]", got, first)
		}
		// The account still authenticates with it.
		if _, err := e.Client("oslo").Token(ctx); err != nil {
			t.Fatalf("token after the refused removal: %v", err)
		}
	})
	t.Run("rotation-then-last", func(t *testing.T) {
		next := e.PKI.Add(t, "oslo-next", nil, time.Time{}, time.Time{}).Cert
		if _, err := ad.AddCert(ctx, id, certPEM(next)); err != nil {
			t.Fatal(err)
		}
		if _, err := ad.RemoveCert(ctx, id, first); err != nil {
			t.Fatalf("remove one of two: %v", err)
		}
		_, err := ad.RemoveCert(ctx, id, pki.Fingerprint(next))
		gatewaytest.WantCode(t, err, errs.BadRequest)
		a, err := ad.Account(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := fingerprints(a); !slices.Equal(got, []string{pki.Fingerprint(next)}) {
			t.Fatalf("certificates: %v, want only the new one", got)
		}
	})
}

// TestLookupCurrentCertificatesOnly: the agents' lookups (by number and by
// id) answer only certificates valid at the gateway's now: an expired one
// and a not-yet-valid one are left out (an agent must never encrypt to
// them), while the operator's view lists every certificate.
func TestLookupCurrentCertificatesOnly(t *testing.T) {
	e := gatewaytest.New(t, nil)
	ad := e.Admin()
	ctx := t.Context()
	id := e.IDs["oslo"]
	now := e.Clock.Now()
	base := pki.Fingerprint(e.PKI.Accounts["oslo"].Cert)
	short := e.PKI.Add(t, "oslo-short", nil, now.Add(-time.Hour), now.Add(time.Hour)).Cert
	if _, err := ad.AddCert(ctx, id, certPEM(short)); err != nil {
		t.Fatal(err)
	}
	// Two hours on, short has expired; add one that is valid then but
	// not yet valid at the real now.
	e.Clock.Advance(2 * time.Hour)
	future := e.PKI.Add(t, "oslo-future", nil, now.Add(90*time.Minute), now.Add(72*time.Hour)).Cert
	if _, err := ad.AddCert(ctx, id, certPEM(future)); err != nil {
		t.Fatal(err)
	}

	check := func(t *testing.T, want []string) {
		t.Helper()
		slices.Sort(want)
		c := e.Client("bergen")
		byNumber, err := c.Find(ctx, "0301", gatewaytest.MessageType)
		if err != nil {
			t.Fatal(err)
		}
		byID, err := c.Lookup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for what, a := range map[string]api.Account{"find": byNumber, "lookup": byID} {
			if got := fingerprints(a); !slices.Equal(got, want) {
				t.Errorf("%s answered certificates %v, want %v", what, got, want)
			}
		}
		all, err := ad.Account(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(all.Certificates) != 3 {
			t.Errorf("operator view lists %d certificates, want all 3", len(all.Certificates))
		}
	}
	t.Run("expired-left-out", func(t *testing.T) {
		check(t, []string{base, pki.Fingerprint(future)})
	})
	t.Run("not-yet-valid-left-out", func(t *testing.T) {
		e.Clock.Advance(-2 * time.Hour)
		check(t, []string{base, pki.Fingerprint(short)})
	})
}

// TestAssertionTimeAndAlgorithmRefusals: client assertions whose iat or
// nbf lies in the future, whose exp lies more than the 2-minute lifetime
// ahead, or that use alg none or HS256 keyed with the account's
// certificate, are refused with invalid_client_assertion; a well-formed
// one at the edge of the lifetime is taken.
func TestAssertionTimeAndAlgorithmRefusals(t *testing.T) {
	const skew, life = 30 * time.Second, 2 * time.Minute
	e := gatewaytest.New(t, func(c *gateway.Config) { c.ClockSkew, c.MaxAssertionLifetime = skew, life })
	oslo := e.PKI.Accounts["oslo"]
	now := e.Clock.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": e.IDs["oslo"], "sub": e.IDs["oslo"], "aud": e.Cfg.Audience, "jti": uuid.NewString(),
			"iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
		mod(c)
		return c
	}
	certPEMBytes := pki.EncodeCertPEM(oslo.Cert)
	cases := []struct {
		name      string
		assertion func(t *testing.T) string
	}{
		// exp - now stays within lifetime + skew, so only the iat check
		// refuses it.
		{"iat-in-future", func(t *testing.T) string {
			return gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(func(c map[string]any) {
				c["iat"] = now.Add(skew + 30*time.Second).Unix()
				c["exp"] = now.Add(skew + time.Minute).Unix()
			}))
		}},
		{"nbf-in-future", func(t *testing.T) string {
			return gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(func(c map[string]any) {
				c["nbf"] = now.Add(skew + time.Minute).Unix()
			}))
		}},
		{"exp-10min-ahead", func(t *testing.T) string {
			return gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(func(c map[string]any) {
				c["exp"] = now.Add(10 * time.Minute).Unix()
			}))
		}},
		{"exp-just-over-lifetime", func(t *testing.T) string {
			return gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(func(c map[string]any) {
				c["exp"] = now.Add(life + time.Second).Unix()
			}))
		}},
		{"alg-none", func(t *testing.T) string {
			enc := base64.RawURLEncoding.EncodeToString
			payload, _ := json.Marshal(claims(func(map[string]any) {}))
			return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + "."
		}},
		{"hs256-keyed-with-cert-pem", func(t *testing.T) string {
			return gatewaytest.Assertion(t, certPEMBytes, jwa.HS256(), claims(func(map[string]any) {}))
		}},
		{"hs256-keyed-with-cert-der", func(t *testing.T) string {
			return gatewaytest.Assertion(t, oslo.Cert.Raw, jwa.HS256(), claims(func(map[string]any) {}))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := e.PostToken(tc.assertion(t))
			gatewaytest.WantCode(t, err, errs.InvalidAssertion)
			if tr.AccessToken != "" {
				t.Fatal("a token was issued")
			}
		})
	}
	t.Run("control-lifetime-edge-taken", func(t *testing.T) {
		a := gatewaytest.Assertion(t, oslo.Key, jwa.RS256(), claims(func(c map[string]any) { c["exp"] = now.Add(life).Unix() }))
		if tr, err := e.PostToken(a); err != nil || tr.AccessToken == "" {
			t.Fatalf("a valid assertion of exactly the lifetime: %v", err)
		}
	})
}

// TestOthersMessageContentAndReject: an account that is not a message's
// receiver (a third account, or the sender itself) gets 404 not_found,
// the same answer as for an id that does not exist, from the receiver's
// content and reject endpoints; the message stays as it was, and the
// receiver downloads its unchanged bytes afterwards.
func TestOthersMessageContentAndReject(t *testing.T) {
	e := gatewaytest.New(t, nil)
	ctx := t.Context()
	body := gatewaytest.RandBytes(4096)
	r := e.Routing("bergen", "trondheim", body)
	if _, err := e.Client("bergen").Submit(ctx, r, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	rejectBody := []byte(`{"reason":"invalid_envelope","detail":"x"}`)
	jsonHdr := map[string]string{"Content-Type": "application/json"}
	unknown := uuid.NewString()
	for _, name := range []string{"oslo", "bergen"} {
		tok, err := e.Client(name).Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range []struct {
			what, method, suffix string
			body                 []byte
		}{
			{"content", http.MethodGet, "/content", nil},
			{"reject", http.MethodPost, "/reject", rejectBody},
		} {
			t.Run(name+"-"+op.what, func(t *testing.T) {
				resp, got := e.Raw(op.method, e.URL()+api.PathMailbox+"/"+r.ID+op.suffix, tok, op.body, jsonHdr)
				if resp.StatusCode != http.StatusNotFound {
					t.Fatalf("status %d, want 404: %.80q", resp.StatusCode, got)
				}
				gatewaytest.WantCode(t, errs.FromResponse(resp.StatusCode, got), errs.NotFound)
				if bytes.Contains(got, body[:32]) {
					t.Fatal("ciphertext in the answer")
				}
				resp2, got2 := e.Raw(op.method, e.URL()+api.PathMailbox+"/"+unknown+op.suffix, tok, op.body, jsonHdr)
				if resp2.StatusCode != resp.StatusCode || !bytes.Equal(got2, got) {
					t.Fatalf("existing and unknown ids answer differently: %d %.80q vs %d %.80q", resp.StatusCode, got, resp2.StatusCode, got2)
				}
			})
		}
	}

	// Nothing changed: still accepted, no rejection, bytes intact.
	ms, err := e.Admin().Messages(ctx, client.MessageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].State != "accepted" {
		t.Fatalf("messages after the refusals: %+v", ms)
	}
	for _, h := range ms[0].History {
		if strings.Contains(h.State, "reject") {
			t.Fatalf("history: %+v", ms[0].History)
		}
	}
	tc := e.Client("trondheim")
	items := gatewaytest.PollUntil(t, tc, 1)
	if items[0].Routing.ID != r.ID {
		t.Fatalf("trondheim got %s, want %s", items[0].Routing.ID, r.ID)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tc.Download(ctx, r.ID, f); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("receiver's download: %d bytes, %v; want the %d submitted", len(got), err, len(body))
	}
}
