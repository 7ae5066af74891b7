package gatewaytest

import (
	"context"
	"path/filepath"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/gateway/store/bolt"
)

// PutAccountOffline stops the gateway, writes a straight into its store,
// past every check of the admin API (as a catalog written by an older
// version, or edited by hand, would hold it), and starts the gateway again
// (new ports: make clients after it). name, if not "", is entered in IDs
// with a's id so that Client(name) works when the PKI has that name.
func (e *Env) PutAccountOffline(name string, a store.Account) {
	e.tb.Helper()
	e.Stop()
	b, err := bolt.Open(filepath.Join(e.Cfg.DataDir, "store"), bolt.Options{Journal: gateway.AuditJournal})
	if err != nil {
		e.tb.Fatal(err)
	}
	if err := b.PutAccount(context.Background(), a); err != nil {
		_ = b.Close()
		e.tb.Fatal(err)
	}
	if err := b.Close(); err != nil {
		e.tb.Fatal(err)
	}
	e.Start()
	if name != "" {
		e.IDs[name] = a.ID
	}
}
