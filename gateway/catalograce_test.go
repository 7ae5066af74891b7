package gateway_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/pki"
)

// TestCatalogWritesDoNotUndoEachOther: a certificate removal racing with
// account updates stays removed. Each catalog write reads the account,
// changes it and writes it back; without one lock over that step, an
// update that read the account before the removal wrote the removed
// certificate back (and with it, the tokens it can buy).
func TestCatalogWritesDoNotUndoEachOther(t *testing.T) {
	e := gatewaytest.New(t, nil, "oslo-next")
	ad, id, ctx := e.Admin(), e.IDs["oslo"], t.Context()
	next := e.PKI.Accounts["oslo-next"].Cert
	nextPEM, nextFP := string(pki.EncodeCertPEM(next)), pki.Fingerprint(next)
	cur, err := ad.Account(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 25 {
		if _, err := ad.AddCert(ctx, id, nextPEM); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errc := make(chan error, 5)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ad.RemoveCert(ctx, id, nextFP)
			errc <- err
		}()
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := ad.UpdateAccount(ctx, id, api.AccountRequest{
					Name: fmt.Sprintf("Oslo kommune %d.%d", round, i), OrgNumber: cur.OrgNumber,
					Municipality: cur.Municipality, Service: cur.Service, Types: cur.Types,
				})
				errc <- err
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatal(err)
			}
		}
		got, err := ad.Account(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range got.Certificates {
			if c.Fingerprint == nextFP {
				t.Fatalf("round %d: the removed certificate is back in the catalog", round)
			}
		}
	}
}
