package bolt_test

import (
	"testing"

	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/gateway/store/bolt"
	"github.com/kurer/kurer/gateway/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, dir string, journal store.JournalFunc) storetest.Backend {
		tb.Helper()
		b, err := bolt.Open(dir, bolt.Options{Journal: journal})
		if err != nil {
			tb.Fatal(err)
		}
		return b
	})
}
