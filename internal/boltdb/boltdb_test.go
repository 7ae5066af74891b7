package boltdb

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestGroupCommitIsolatesFailures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	d, err := Open(path, Options{Buckets: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.Update(t.Context(), func(tx *bolt.Tx) error {
				if err := tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%03d", i), []byte("v")); err != nil {
					return err
				}
				if i%7 == 0 {
					return boom
				}
				return nil
			})
		}()
	}
	wg.Wait()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	// Reopen: exactly the successful writes are there.
	d, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	err = d.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := range 200 {
			got := b.Get(fmt.Appendf(nil, "k%03d", i)) != nil
			if want := i%7 != 0; got != want {
				t.Errorf("key %d present=%v, want %v", i, got, want)
			}
			if (i%7 == 0) != errors.Is(errs[i], boom) {
				t.Errorf("key %d err=%v", i, errs[i])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Update(context.Background(), func(*bolt.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateAfterClose(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := d.Update(t.Context(), func(*bolt.Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

// TestReopenAfterFrees: the free list is not written (NoFreelistSync) but
// rebuilt at open; pages freed before a close are reused after it without
// losing or corrupting anything written before or after.
func TestReopenAfterFrees(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	val := make([]byte, 10<<10) // overflow pages, freed on delete
	put := func(d *DB, from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := d.Update(t.Context(), func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%04d", i), append(fmt.Appendf(nil, "%04d", i), val...))
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	d, err := Open(path, Options{Buckets: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	put(d, 0, 200)
	if err := d.Update(t.Context(), func(tx *bolt.Tx) error {
		for i := 0; i < 200; i += 2 {
			if err := tx.Bucket([]byte("b")).Delete(fmt.Appendf(nil, "k%04d", i)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		d, err = Open(path, Options{Buckets: []string{"b"}})
		if err != nil {
			t.Fatalf("reopen %d: %v", round, err)
		}
		put(d, 200+round*100, 300+round*100)
		if err := d.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			return nil
		}); err != nil {
			t.Fatalf("check after reopen %d: %v", round, err)
		}
		n := 0
		if err := d.View(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("b")).ForEach(func(k, v []byte) error {
				if len(v) != 4+len(val) || string(k[1:]) != string(v[:4]) {
					return fmt.Errorf("key %s holds %q", k, v)
				}
				n++
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		if want := 100 + 100*(round+1); n != want {
			t.Fatalf("round %d: %d keys, want %d", round, n, want)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLingerOnlyWhenBusy: a lone update never waits for company; after a
// transaction that carried several, a small batch waits (here: until a
// second update comes, the linger being an hour).
func TestLingerOnlyWhenBusy(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "db"), Options{Buckets: []string{"b"}, Linger: time.Hour, LingerBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	inside := make(chan struct{}, 1)
	put := func(k string, gate chan struct{}) error {
		return d.Update(t.Context(), func(tx *bolt.Tx) error {
			if gate != nil {
				inside <- struct{}{}
				<-gate
			}
			return tx.Bucket([]byte("b")).Put([]byte(k), []byte("v"))
		})
	}
	// Lone updates, one after the other: none may linger.
	for i := range 3 {
		done := make(chan error, 1)
		go func() { done <- put(fmt.Sprint("lone", i), nil) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a lone update lingered")
		}
	}
	// Make the store busy: hold the writer, queue two, release: they
	// commit together.
	gate := make(chan struct{})
	errc := make(chan error, 5)
	go func() { errc <- put("held", gate) }()
	<-inside // the writer is running "held" alone
	defer func() {
		select {
		case <-gate:
		default:
			close(gate) // never leave the writer stuck (Close would hang)
		}
	}()
	go func() { errc <- put("q1", nil) }()
	go func() { errc <- put("q2", nil) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(d.reqs) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("updates not queued")
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	for range 3 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	// Busy now: a single update waits for a second one.
	go func() { errc <- put("waits", nil) }()
	select {
	case err := <-errc:
		t.Fatalf("update after a busy commit did not linger (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	go func() { errc <- put("company", nil) }()
	for range 2 {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a full linger batch was not committed")
		}
	}
}

// TestCloseEndsLinger: Close does not wait out a linger.
func TestCloseEndsLinger(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "db"), Options{Buckets: []string{"b"}, Linger: time.Hour, LingerBatch: 100})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = d.Update(context.Background(), func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%d", i), nil)
			})
		}()
	}
	time.Sleep(50 * time.Millisecond) // let some batches form; the rest may linger
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the linger")
	}
	wg.Wait()
}

// TestStatsCountWrites: one update of a 20 KiB value is one commit that
// writes at least its five overflow pages, and spends time writing.
func TestStatsCountWrites(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "db"), Options{Buckets: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	before := d.Stats()
	err = d.Update(t.Context(), func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("b")).Put([]byte("k"), make([]byte, 20<<10))
	})
	if err != nil {
		t.Fatal(err)
	}
	after := d.Stats()
	if c, u := after.Commits-before.Commits, after.Updates-before.Updates; c != 1 || u != 1 {
		t.Errorf("commits %d, updates %d, want 1 and 1", c, u)
	}
	page := uint64(d.Bolt().Info().PageSize)
	if b := after.Bytes - before.Bytes; b < 5*page || b%page != 0 {
		t.Errorf("bytes written %d, want whole pages, at least 5 for a 20 KiB value", b)
	}
	// (Busy is added just after the caller is answered, so it is not
	// compared here.)
	if w := after.Write - before.Write; w <= 0 {
		t.Errorf("write time %v, want > 0", w)
	}
}

// TestFilledBucketsPackLeaves: keys appended in order to a Filled bucket,
// in single updates and in batches, fill its leaves; the same keys in an
// ordinary bucket leave them about half full.
func TestFilledBucketsPackLeaves(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "db"), Options{Buckets: []string{"filled", "plain"}, Filled: []string{"filled"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	val := make([]byte, 100)
	var wg sync.WaitGroup
	for i := range 2000 {
		put := func() {
			err := d.Update(t.Context(), func(tx *bolt.Tx) error {
				for _, b := range []string{"filled", "plain"} {
					if err := tx.Bucket([]byte(b)).Put(fmt.Appendf(nil, "k%06d", i), val); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}
		if i < 1000 { // one commit each
			put()
			continue
		}
		// Then concurrent, so several share a commit (and the
		// keys of one commit need not arrive in order).
		wg.Add(1)
		go func() { defer wg.Done(); put() }()
		if i%50 == 49 {
			wg.Wait()
		}
	}
	wg.Wait()
	var filled, plain int
	err = d.View(func(tx *bolt.Tx) error {
		filled, plain = tx.Bucket([]byte("filled")).Stats().LeafPageN, tx.Bucket([]byte("plain")).Stats().LeafPageN
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("leaf pages: filled %d, plain %d", filled, plain)
	if filled == 0 || float64(filled) > 0.6*float64(plain) {
		t.Errorf("filled bucket has %d leaf pages, plain %d: want at most 60 %%", filled, plain)
	}
}

// TestHealth: healthy while commits succeed, also when a caller's own
// function fails; unhealthy while a transaction runs past StallAfter, when
// a transaction cannot commit, and once closed.
func TestHealth(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "db"), Options{Buckets: []string{"b"}, StallAfter: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := d.Health(); err != nil {
		t.Fatalf("new store: %v", err)
	}
	mine := errors.New("caller's own error")
	if err := d.Update(ctx, func(*bolt.Tx) error { return mine }); !errors.Is(err, mine) {
		t.Fatal(err)
	}
	if err := d.Health(); err != nil {
		t.Fatalf("after a caller's error: %v", err)
	}

	// A transaction that does not end (as one whose fsync hangs).
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- d.Update(ctx, func(tx *bolt.Tx) error {
			<-release
			return tx.Bucket([]byte("b")).Put([]byte("k"), []byte("v"))
		})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for d.Health() == nil {
		if time.Now().After(deadline) {
			t.Fatal("a transaction running past StallAfter was not reported")
		}
		time.Sleep(10 * time.Millisecond) // waiting for StallAfter to pass
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := d.Health(); err != nil {
		t.Fatalf("after the stall ended: %v", err)
	}

	// A transaction that cannot commit: the file is gone from under the
	// writer (bbolt refuses to begin).
	if err := d.Bolt().Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Update(ctx, func(tx *bolt.Tx) error { return nil }); err == nil {
		t.Fatal("update on a closed bolt database succeeded")
	}
	if err := d.Health(); err == nil {
		t.Fatal("a failed commit was not reported")
	}
	_ = d.Close()
	if err := d.Health(); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}
