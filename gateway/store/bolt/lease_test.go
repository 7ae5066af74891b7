package bolt

import (
	"fmt"
	"sync"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
)

// TestConcurrentPollersOneWrite: many pollers of one mailbox racing for one
// new item cost one write transaction, not one each; one of them gets it.
func TestConcurrentPollersOneWrite(t *testing.T) {
	b := openT(t)
	ctx := t.Context()
	acceptR(t, b, "m-herd")
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

// TestLeasesShareCommit: a second poller of a mailbox does not wait for
// the first one's commit; both leases ride the same group commit and take
// different items, in mailbox order.
func TestLeasesShareCommit(t *testing.T) {
	b := openT(t)
	ctx := t.Context()
	for i := range 16 {
		id := fmt.Sprintf("m-%02d", i)
		acceptR(t, b, id)
	}
	// Hold the writer inside a transaction: nothing commits until release.
	release, running := make(chan struct{}), make(chan struct{})
	blocked := make(chan error, 1)
	go func() {
		blocked <- b.db.Update(ctx, func(*bbolt.Tx) error {
			close(running)
			<-release
			return nil
		})
	}()
	<-running
	before := b.WriterStats()
	got := make([][]store.Item, 2)
	errc := make(chan error, 2)
	for i := range got {
		go func() {
			var err error
			got[i], err = b.Lease(ctx, "r", 8, ct0, ct0.Add(time.Minute))
			errc <- err
		}()
	}
	// Both reserve their items and queue their writes while the writer is
	// held: before, the second waited for the first one's commit.
	ls := b.leaseState("r")
	for deadline := time.Now().Add(10 * time.Second); ; {
		ls.mu.Lock()
		n := ls.reserved
		ls.mu.Unlock()
		if n == 16 {
			break
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("reserved %d items with the writer held, want 16 (two leases of 8)", n)
		}
		time.Sleep(time.Millisecond)
	}
	for deadline := time.Now().Add(10 * time.Second); b.db.Queued() < 2; {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("%d lease writes queued with the writer held, want 2", b.db.Queued())
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	for range got {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, items := range got {
		if len(items) != 8 {
			t.Fatalf("a lease took %d items, want 8", len(items))
		}
		for j, it := range items {
			if seen[it.Routing.ID] {
				t.Fatalf("item %s leased twice", it.Routing.ID)
			}
			seen[it.Routing.ID] = true
			if j > 0 && it.Routing.ID < items[j-1].Routing.ID {
				t.Fatalf("lease out of mailbox order: %s after %s", it.Routing.ID, items[j-1].Routing.ID)
			}
		}
	}
	if d := b.WriterStats().Commits - before.Commits; d != 1 {
		t.Fatalf("the two leases took %d commits after the held one, want 1 (shared)", d)
	}
	if ls.reserved != 0 {
		t.Fatalf("%d items still reserved after the leases returned", ls.reserved)
	}
}

// TestLeaseWakesSkippedPoller: a poller that found only items reserved by
// another lease is woken when that lease ends, so it never sleeps on items
// that are still (or again) in the mailbox.
func TestLeaseWakesSkippedPoller(t *testing.T) {
	b := openT(t)
	ctx := t.Context()
	acceptR(t, b, "m-1")
	// Another lease has reserved the one item but not yet committed.
	ls := b.leaseState("r")
	ls.mu.Lock()
	ls.reserved = 1
	ls.mu.Unlock()
	woken := b.Wait("r")
	if items, err := b.Lease(ctx, "r", 8, ct0, ct0.Add(time.Minute)); err != nil || len(items) != 0 {
		t.Fatalf("Lease with the only item reserved = %d items, %v; want none", len(items), err)
	}
	select {
	case <-woken:
		t.Fatal("woken before the reserving lease ended")
	default:
	}
	// That lease ends (here: with nothing taken, as if it failed); a second
	// lease that lets go of its count is what wakes the mailbox.
	ls.mu.Lock()
	ls.reserved = 0
	ls.mu.Unlock()
	items, err := b.Lease(ctx, "r", 8, ct0, ct0.Add(time.Minute))
	if err != nil || len(items) != 1 {
		t.Fatalf("Lease after the reservation ended = %d items, %v; want 1", len(items), err)
	}
	select {
	case <-woken:
	case <-time.After(5 * time.Second):
		t.Fatal("the poller that skipped reserved items was not woken")
	}
}

// acceptR accepts a one-byte message id from "s" into mailbox "r".
func acceptR(t *testing.T, b *Backend, id string) {
	t.Helper()
	it := store.Item{Routing: api.Routing{ID: id, From: "s", To: "r", Type: "t", Expires: ct0.Add(time.Hour), Size: 1, Digest: "d"}, AcceptedAt: ct0}
	if _, err := b.Accept(t.Context(), it, store.Payload{Inline: []byte("x")}, nil); err != nil {
		t.Fatal(err)
	}
}
