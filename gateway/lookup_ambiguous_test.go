package gateway_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/schemas"
)

// ambiguousOslo puts a second account into e's catalog, past the admin
// API (whose catalog_conflict check would refuse it), that answers to
// Oslo's municipality number 0301 and org number for gatewaytest's
// MessageType, with the certificate of the PKI name "oslo2". It returns
// its id (also e.IDs["oslo2"]).
func ambiguousOslo(t *testing.T, e *gatewaytest.Env) string {
	t.Helper()
	now := time.Now().UTC()
	id := uuid.NewString()
	e.PutAccountOffline("oslo2", store.Account{ID: id, Name: "Oslo kommune, second service", OrgNumber: gatewaytest.OrgNumber("oslo"),
		Municipality: "0301", Service: "barneverntjenesten", Types: []string{gatewaytest.MessageType},
		Certificates: [][]byte{e.PKI.Accounts["oslo2"].Cert.Raw}, Created: now, Updated: now})
	return id
}

// TestLookupAmbiguousRefused: when two accounts answer to a municipality
// or org number for a type, client.Find refuses with ambiguous_receiver
// and names both, instead of returning whichever sorts first; the
// gateway's lookup lists both (documented: more than one entry means
// ambiguous). Once the catalog is fixed, Find answers the one account.
func TestLookupAmbiguousRefused(t *testing.T) {
	e := gatewaytest.New(t, nil, "oslo2")
	second := ambiguousOslo(t, e)
	oslo := e.IDs["oslo"]
	c := e.Client("bergen")

	for _, q := range []string{"0301", gatewaytest.OrgNumber("oslo")} {
		t.Run("find-"+q, func(t *testing.T) {
			got, err := c.Find(t.Context(), q, gatewaytest.MessageType)
			gatewaytest.WantCode(t, err, errs.AmbiguousReceiver)
			if got.ID != "" {
				t.Fatalf("Find returned account %s with the error", got.ID)
			}
			var e2 *errs.Error
			if !errors.As(err, &e2) || !strings.Contains(e2.Detail, oslo) || !strings.Contains(e2.Detail, second) ||
				!strings.Contains(e2.Detail, "account id") {
				t.Fatalf("detail should name both candidates and ask for the account id: %v", err)
			}
		})
	}

	t.Run("lookup-lists-both", func(t *testing.T) {
		tok, err := c.Token(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		q := url.Values{"municipality": {"0301"}, "type": {gatewaytest.MessageType}}
		resp, body := e.Raw(http.MethodGet, e.URL()+api.PathAccounts+"?"+q.Encode(), tok, nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var list []api.Account
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 {
			t.Fatalf("lookup answered %d accounts, want both", len(list))
		}
	})

	t.Run("unambiguous-still-found", func(t *testing.T) {
		got, err := c.Find(t.Context(), "4601", gatewaytest.MessageType)
		if err != nil || got.ID != e.IDs["bergen"] {
			t.Fatalf("Find(4601) = %s, %v; want bergen", got.ID, err)
		}
		_, err = c.Find(t.Context(), "0301", schemas.TypeRapportering)
		gatewaytest.WantCode(t, err, errs.NotFound)
	})

	t.Run("fixed-catalog", func(t *testing.T) {
		if err := e.Admin().DeleteAccount(t.Context(), second); err != nil {
			t.Fatal(err)
		}
		got, err := c.Find(t.Context(), "0301", gatewaytest.MessageType)
		if err != nil || got.ID != oslo {
			t.Fatalf("Find(0301) = %s, %v; want oslo %s", got.ID, err, oslo)
		}
	})
}
