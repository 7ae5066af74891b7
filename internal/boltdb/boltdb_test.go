package boltdb

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

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
