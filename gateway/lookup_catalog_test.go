package gateway_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"testing"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
	"github.com/kurer/kurer/schemas"
)

// orgNumber is a valid (mod-11) organisation number 31xxxxxxx derived
// from n, unlike gatewaytest's.
func orgNumber(t *testing.T, n int) string {
	t.Helper()
	for base := 31_500_000 + 10*n; ; base++ {
		for d := range 10 {
			if s := strconv.Itoa(base) + strconv.Itoa(d); gateway.ValidOrgNumber(s) {
				return s
			}
		}
	}
}

// TestCatalogRefusesAmbiguousReceiver: the admin API refuses (409
// catalog_conflict) an add or update that would make a (municipality,
// type) or (org number, type) pair answer to two accounts, and stores
// nothing; one organisation may still run several services whose
// (non-receipt) types do not overlap, and an account without a
// municipality number may share a type with the municipality's account.
func TestCatalogRefusesAmbiguousReceiver(t *testing.T) {
	e := gatewaytest.New(t, nil, "svc1", "svc2", "svc3", "svc4", "svc5")
	ad := e.Admin()
	ctx := t.Context()
	receipts := []string{schemas.TypeMottatt, schemas.TypeAvvist, schemas.TypeBehandlet}
	e.SetTypes("oslo", append([]string{gatewaytest.MessageType}, receipts...)...)
	osloOrg := gatewaytest.OrgNumber("oslo")
	cert := func(name string) []string { return []string{string(pki.EncodeCertPEM(e.PKI.Accounts[name].Cert))} }
	accounts := func() []api.Account {
		t.Helper()
		all, err := ad.Accounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return all
	}

	refused := []struct {
		name string
		req  api.AccountRequest
	}{
		{"same-municipality-and-type-other-org", api.AccountRequest{Name: "x", OrgNumber: orgNumber(t, 1), Municipality: "0301",
			Types: []string{gatewaytest.MessageType}, Certificates: cert("svc1")}},
		{"same-org-and-type-no-municipality", api.AccountRequest{Name: "x", OrgNumber: osloOrg,
			Types: []string{gatewaytest.MessageType}, Certificates: cert("svc1")}},
		{"same-org-and-type-other-municipality", api.AccountRequest{Name: "x", OrgNumber: osloOrg, Municipality: "1103",
			Types: []string{schemas.TypeBekymringsmelding, gatewaytest.MessageType}, Certificates: cert("svc1")}},
	}
	for _, tc := range refused {
		t.Run("add-"+tc.name, func(t *testing.T) {
			before := accounts()
			body, err := json.Marshal(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			resp, out := e.Raw(http.MethodPost, e.AdminURL()+api.PathAdminAccounts, e.OperatorToken, body,
				map[string]string{"Content-Type": "application/json"})
			if resp.StatusCode != http.StatusConflict {
				t.Fatalf("status %d, want 409: %.200s", resp.StatusCode, out)
			}
			gatewaytest.WantCode(t, errs.FromResponse(resp.StatusCode, out), errs.CatalogConflict)
			if after := accounts(); len(after) != len(before) {
				t.Fatalf("catalog grew from %d to %d accounts after a refusal", len(before), len(after))
			}
		})
	}

	// One organisation, several services: types that do not overlap
	// (receipts may: they always go to an account id).
	var family api.Account
	t.Run("add-same-org-other-types-allowed", func(t *testing.T) {
		var err error
		family, err = ad.CreateAccount(ctx, api.AccountRequest{Name: "Oslo kommune, annen tjeneste", OrgNumber: osloOrg, Municipality: "0301",
			Service: "annen", Types: append([]string{schemas.TypeDokumentasjonForesporsel}, receipts...), Certificates: cert("svc2")})
		if err != nil {
			t.Fatalf("a second service of the same org with other types: %v", err)
		}
	})
	t.Run("add-same-type-without-municipality-other-org-allowed", func(t *testing.T) {
		// Two of them: an empty municipality number is no number.
		for i, name := range []string{"svc3", "svc4"} {
			if _, err := ad.CreateAccount(ctx, api.AccountRequest{Name: "bydel " + name, OrgNumber: orgNumber(t, 2+i),
				Types: []string{gatewaytest.MessageType}, Certificates: cert(name)}); err != nil {
				t.Fatalf("same type, no municipality, own org (%s): %v", name, err)
			}
		}
	})

	updates := []struct {
		name string
		id   func() string
		req  func() api.AccountRequest
		want errs.Code // "" = allowed
	}{
		{"bergen-into-0301", func() string { return e.IDs["bergen"] }, func() api.AccountRequest {
			return api.AccountRequest{Name: "bergen", OrgNumber: gatewaytest.OrgNumber("bergen"), Municipality: "0301", Types: []string{gatewaytest.MessageType}}
		}, errs.CatalogConflict},
		{"bergen-takes-oslo-org", func() string { return e.IDs["bergen"] }, func() api.AccountRequest {
			return api.AccountRequest{Name: "bergen", OrgNumber: osloOrg, Municipality: "4601", Types: []string{gatewaytest.MessageType}}
		}, errs.CatalogConflict},
		{"second-service-takes-oslo-type", func() string { return family.ID }, func() api.AccountRequest {
			return api.AccountRequest{Name: family.Name, OrgNumber: osloOrg, Municipality: "0301",
				Types: []string{schemas.TypeDokumentasjonForesporsel, gatewaytest.MessageType}}
		}, errs.CatalogConflict},
		{"oslo-unchanged-no-self-conflict", func() string { return e.IDs["oslo"] }, func() api.AccountRequest {
			return api.AccountRequest{Name: "oslo kommune", OrgNumber: osloOrg, Municipality: "0301",
				Types: append([]string{gatewaytest.MessageType}, receipts...)}
		}, ""},
	}
	for _, tc := range updates {
		t.Run("update-"+tc.name, func(t *testing.T) {
			before, err := ad.Account(ctx, tc.id())
			if err != nil {
				t.Fatal(err)
			}
			_, err = ad.UpdateAccount(ctx, tc.id(), tc.req())
			if tc.want == "" {
				if err != nil {
					t.Fatalf("update: %v", err)
				}
				return
			}
			gatewaytest.WantCode(t, err, tc.want)
			after, err := ad.Account(ctx, tc.id())
			if err != nil {
				t.Fatal(err)
			}
			if after.OrgNumber != before.OrgNumber || after.Municipality != before.Municipality || !slices.Equal(after.Types, before.Types) {
				t.Fatalf("refused update changed the account: %+v -> %+v", before, after)
			}
		})
	}

	// The numbers still name exactly one account for each type.
	c := e.Client("trondheim")
	for _, q := range []struct{ query, typ, want string }{
		{"0301", gatewaytest.MessageType, e.IDs["oslo"]},
		{osloOrg, gatewaytest.MessageType, e.IDs["oslo"]},
		{"0301", schemas.TypeDokumentasjonForesporsel, family.ID},
		{"4601", gatewaytest.MessageType, e.IDs["bergen"]},
	} {
		got, err := c.Find(ctx, q.query, q.typ)
		if err != nil || got.ID != q.want {
			t.Errorf("Find(%s, %s) = %s, %v; want %s", q.query, q.typ, got.ID, err, q.want)
		}
	}
}
