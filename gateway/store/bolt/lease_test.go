package bolt

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
)

// TestConcurrentPollersOneWrite: many pollers of one mailbox racing for one
// new item cost one write transaction, not one each; one of them gets it.
func TestConcurrentPollersOneWrite(t *testing.T) {
	b := openT(t)
	ctx := t.Context()
	it := store.Item{Routing: api.Routing{ID: "m-herd", From: "s", To: "r", Type: "t", Expires: ct0.Add(time.Hour), Size: 1, Digest: "d"}, AcceptedAt: ct0}
	if _, err := b.Accept(ctx, it, store.Payload{Inline: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	before := b.WriterStats().Updates
	const pollers = 16
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		got  int
		errs []error
	)
	start := make(chan struct{})
	for range pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			items, err := b.Lease(ctx, "r", 8, ct0, ct0.Add(time.Minute))
			mu.Lock()
			defer mu.Unlock()
			got += len(items)
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 || got != 1 {
		t.Fatalf("leased %d items, errors %v; want 1 item", got, errs)
	}
	if n := b.WriterStats().Updates - before; n != 1 {
		t.Fatalf("%d write transactions for %d pollers and one item, want 1", n, pollers)
	}
}

// TestLeaseTurnHonoursContext: a poller waiting for its mailbox's lease
// turn leaves when its context ends.
func TestLeaseTurnHonoursContext(t *testing.T) {
	b := openT(t)
	turn := b.leaseTurn("r")
	turn <- struct{}{} // someone else is leasing
	defer func() { <-turn }()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := b.Lease(ctx, "r", 1, ct0, ct0.Add(time.Minute)); err != context.Canceled {
		t.Fatalf("Lease with an ended context = %v, want context.Canceled", err)
	}
}
