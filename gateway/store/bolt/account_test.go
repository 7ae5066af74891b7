package bolt

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/store"
)

func openT(tb testing.TB) *Backend {
	tb.Helper()
	b, err := Open(tb.TempDir(), Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

func cached(b *Backend, id string) (store.Account, bool) {
	b.acctMu.RLock()
	defer b.acctMu.RUnlock()
	a, ok := b.acct[id]
	return a, ok
}

func TestAccountCache(t *testing.T) {
	b := openT(t)
	ctx := t.Context()
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	a := store.Account{ID: "a1", Name: "Oslo", OrgNumber: "974760673", Types: []string{"t1", "t2"},
		Certificates: [][]byte{{1, 2, 3}}, Created: now, Updated: now}
	if err := b.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, ok := cached(b, "a1"); ok {
		t.Fatal("cached before the first read")
	}
	got, err := b.Account(ctx, "a1")
	if err != nil || got.Name != "Oslo" || !got.Created.Equal(now) {
		t.Fatalf("first read: %+v, %v", got, err)
	}
	if c, ok := cached(b, "a1"); !ok || c.Name != "Oslo" {
		t.Fatalf("not cached after a read: %+v", c)
	}

	// Returned slices are the caller's own.
	got.Types[0] = "changed"
	got.Types = append(got.Types, "more")
	got.Certificates = append(got.Certificates[:0], []byte{9})
	again, err := b.Account(ctx, "a1")
	if err != nil || len(again.Types) != 2 || again.Types[0] != "t1" ||
		len(again.Certificates) != 1 || string(again.Certificates[0]) != "\x01\x02\x03" {
		t.Fatalf("cache corrupted through a returned slice: %+v, %v", again, err)
	}

	a.Name, a.Types = "Oslo kommune", []string{"t3"}
	if err := b.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Account(ctx, "a1"); err != nil || got.Name != "Oslo kommune" || len(got.Types) != 1 || got.Types[0] != "t3" {
		t.Fatalf("read after update: %+v, %v", got, err)
	}
	if err := b.DeleteAccount(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Account(ctx, "a1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("read after delete: %v", err)
	}
	if _, ok := cached(b, "a1"); ok {
		t.Fatal("deleted account still cached")
	}
	if _, err := b.Account(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown account: %v", err)
	}
	if _, ok := cached(b, "nobody"); ok {
		t.Fatal("a miss was cached")
	}
}

// TestAccountCacheRace writes an account while others read it: once the
// writes are done, a read returns the last one.
func TestAccountCacheRace(t *testing.T) {
	b := openT(t)
	ctx := t.Context()
	if err := b.PutAccount(ctx, store.Account{ID: "a", Name: "v0"}); err != nil {
		t.Fatal(err)
	}
	const writes = 50
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := b.Account(ctx, "a"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := 1; i <= writes; i++ {
		if err := b.PutAccount(ctx, store.Account{ID: "a", Name: fmt.Sprint("v", i)}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if got, err := b.Account(ctx, "a"); err != nil || got.Name != fmt.Sprint("v", writes) {
		t.Fatalf("after writes: %+v, %v", got, err)
	}
}
