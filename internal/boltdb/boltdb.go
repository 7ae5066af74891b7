// Package boltdb wraps go.etcd.io/bbolt with the one-writer, group-commit
// discipline kurer uses for everything it promises durable: every Update is
// handed to a single writer goroutine, which runs all updates waiting at that
// moment in one read-write transaction and one fsync. A caller's Update returns
// only after the transaction that carried it is on disk. NoSync is never set.
//
// Domain stores (gateway, agent) sit on top of DB and expose domain methods;
// nothing outside a store touches buckets directly.
package boltdb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// defaultMmapSize is 1 GiB on 64-bit platforms, 64 MiB on 32-bit ones.
func defaultMmapSize() int {
	if strconv.IntSize == 64 {
		return 1 << 30
	}
	return 64 << 20
}

// ErrClosed is returned by Update after Close.
var ErrClosed = errors.New("store is closed")

// Options tune the store. Zero values are the defaults.
type Options struct {
	// LockTimeout is how long Open waits for the file lock held by another
	// process. Default 5s.
	LockTimeout time.Duration
	// MaxBatch is the most updates one transaction carries. Default 256.
	MaxBatch int
	// Linger is how long the writer waits for more updates before it
	// commits a small batch while the store is busy (the last transaction
	// carried more than one update): each commit costs two fsyncs however
	// many updates it carries, so under load a slightly later, larger
	// commit gives more throughput and, overall, lower latency. A lone
	// update never waits. Default 500µs; negative: never.
	Linger time.Duration
	// LingerBatch is the batch size that ends a linger early. Default 12.
	LingerBatch int
	// InitialMmapSize is the address space mapped at open, in bytes.
	// Growing the map past it blocks every reader until all open reads
	// end, so a busy store maps generously up front (it costs address
	// space, not memory or disk). Default 1 GiB (64-bit) or 64 MiB.
	InitialMmapSize int
	// Buckets are created at open if missing.
	Buckets []string
	// StallAfter: Health reports the writer stalled once one of its
	// transactions has run this long (a disk that stopped answering
	// fsyncs). Default 30s.
	StallAfter time.Duration
	// Filled names buckets written at their end (keys that only grow:
	// sequence numbers, times, UUIDv7 ids) and emptied from the front: the
	// writer fills their leaf pages (bbolt FillPercent 1) instead of
	// splitting them half full, so appends dirty about half the pages.
	// Keys written in the middle of such a bucket cost a split instead.
	Filled []string
}

// DB is a bbolt database with a single group-committing writer.
type DB struct {
	bolt        *bolt.DB
	reqs        chan *request
	maxBatch    int
	linger      time.Duration
	lingerBatch int
	filled      [][]byte

	commits atomic.Uint64 // transactions committed by the writer
	updates atomic.Uint64 // updates they carried
	busy    atomic.Int64  // nanoseconds the writer spent running them

	// For Health: when the running transaction started (UnixNano, 0 when
	// idle), and the error of the last transaction if it failed to commit
	// (nil once one commits again).
	stallAfter time.Duration
	txStart    atomic.Int64
	commitErr  atomic.Pointer[error]

	mu        sync.RWMutex // guards closed against in-flight sends
	closed    bool
	closeOnce sync.Once
	done      chan struct{}
	stopped   chan struct{}
}

type request struct {
	fn  func(*bolt.Tx) error
	err chan error
}

// Open opens (creating if needed) the database at path.
func Open(path string, o Options) (*DB, error) {
	if o.LockTimeout == 0 {
		o.LockTimeout = 5 * time.Second
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 256
	}
	if o.Linger == 0 {
		o.Linger = 500 * time.Microsecond
	}
	if o.LingerBatch <= 0 {
		o.LingerBatch = 12
	}
	if o.InitialMmapSize == 0 {
		o.InitialMmapSize = defaultMmapSize()
	}
	if o.StallAfter <= 0 {
		o.StallAfter = 30 * time.Second
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout, FreelistType: bolt.FreelistMapType, NoFreelistSync: true, InitialMmapSize: o.InitialMmapSize})
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if len(o.Buckets) > 0 {
		err = b.Update(func(tx *bolt.Tx) error {
			for _, name := range o.Buckets {
				if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			_ = b.Close()
			return nil, fmt.Errorf("create buckets: %w", err)
		}
	}
	d := &DB{
		bolt:        b,
		filled:      bytesOf(o.Filled),
		reqs:        make(chan *request, o.MaxBatch),
		maxBatch:    o.MaxBatch,
		linger:      o.Linger,
		lingerBatch: min(o.LingerBatch, o.MaxBatch),
		stallAfter:  o.StallAfter,
		done:        make(chan struct{}),
		stopped:     make(chan struct{}),
	}
	go d.writer()
	return d, nil
}

// Update runs fn in a read-write transaction, possibly together with other
// callers' functions, and returns once that transaction is committed and
// fsynced. fn must be idempotent in the sense that it may be run twice if a
// function batched with it fails: its first run is then rolled back.
// An error from fn rolls back fn's changes and is returned as is.
func (d *DB) Update(ctx context.Context, fn func(*bolt.Tx) error) error {
	r := &request{fn: fn, err: make(chan error, 1)}
	d.mu.RLock()
	if d.closed {
		d.mu.RUnlock()
		return ErrClosed
	}
	select {
	case d.reqs <- r:
		d.mu.RUnlock()
	case <-ctx.Done():
		d.mu.RUnlock()
		return ctx.Err()
	}
	// Once queued, the request will be run; wait for its outcome even if ctx
	// ends, so that a caller never mistakes a committed write for a failed one.
	return <-r.err
}

// Stats describe the writer since Open: how saturated the one serial stage
// of the store is. Busy/elapsed near 1 means updates queue behind it.
type Stats struct {
	Commits uint64        // read-write transactions run (each two fsyncs)
	Updates uint64        // Update calls they carried
	Busy    time.Duration // time spent in them, fsyncs included
	Bytes   uint64        // bytes of the pages the commits allocated, i.e. wrote (whole pages)
	Write   time.Duration // part of Busy spent writing pages and in the fsyncs
}

// Stats returns the writer's counters.
func (d *DB) Stats() Stats {
	tx := d.bolt.Stats().TxStats
	return Stats{
		Commits: d.commits.Load(), Updates: d.updates.Load(), Busy: time.Duration(d.busy.Load()),
		Bytes: uint64(tx.GetPageAlloc()), Write: tx.GetWriteTime(),
	}
}

// Queued returns how many updates wait for the writer (not counting the
// batch it is running).
func (d *DB) Queued() int { return len(d.reqs) }

// View runs fn in a read-only transaction. Bytes read must be copied if they
// outlive fn.
func (d *DB) View(fn func(*bolt.Tx) error) error {
	return d.bolt.View(fn)
}

// Bolt exposes the underlying database for backups and stats; do not write
// through it.
func (d *DB) Bolt() *bolt.DB { return d.bolt }

// Close stops the writer after the queued updates and closes the file.
// It is safe to call more than once.
func (d *DB) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		close(d.done)
		<-d.stopped
		err = d.bolt.Close()
	})
	return err
}

func (d *DB) writer() {
	defer close(d.stopped)
	batch := make([]*request, 0, d.maxBatch)
	busy := false // the last transaction carried more than one update
	var lingerT *time.Timer
	for {
		batch = batch[:0]
		select {
		case r := <-d.reqs:
			batch = append(batch, r)
		case <-d.done:
			// Drain what was queued before Close.
			for {
				select {
				case r := <-d.reqs:
					d.run([]*request{r})
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < d.maxBatch {
			select {
			case r := <-d.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		if busy && d.linger > 0 && len(batch) < d.lingerBatch {
			if lingerT == nil {
				lingerT = time.NewTimer(d.linger)
			} else {
				lingerT.Reset(d.linger)
			}
		linger:
			for len(batch) < d.lingerBatch {
				select {
				case r := <-d.reqs:
					batch = append(batch, r)
				case <-lingerT.C:
					break linger
				case <-d.done:
					break linger // the outer loop drains after this batch
				}
			}
			lingerT.Stop()
		}
		busy = len(batch) > 1
		d.run(batch)
	}
}

// run commits batch in one transaction. If a function fails, the transaction
// is rolled back and every function is run again in a transaction of its own,
// so one caller's error never undoes another caller's write.
func (d *DB) run(batch []*request) {
	// Counted before any caller learns its outcome, so that a caller sees
	// its own update in Stats.
	d.commits.Add(1)
	d.updates.Add(uint64(len(batch)))
	start := time.Now()
	defer func() { d.busy.Add(int64(time.Since(start))) }()
	if len(batch) == 1 {
		batch[0].err <- d.update(batch[0].fn)
		return
	}
	failed := false
	err := d.update(func(tx *bolt.Tx) error {
		for _, r := range batch {
			if err := safeCall(r.fn, tx); err != nil {
				failed = true
				return err
			}
		}
		return nil
	})
	if err == nil {
		for _, r := range batch {
			r.err <- nil
		}
		return
	}
	if !failed { // commit itself failed: every caller learns it
		for _, r := range batch {
			r.err <- err
		}
		return
	}
	for _, r := range batch {
		d.commits.Add(1) // each runs again in a transaction of its own
		r.err <- d.update(func(tx *bolt.Tx) error { return safeCall(r.fn, tx) })
	}
}

// update runs fn in a read-write transaction with the Options.Filled
// buckets filled (a bucket's FillPercent lasts one transaction). It keeps
// what Health reports: the transaction's start while it runs, and whether
// it failed to commit (an error that is not fn's own).
func (d *DB) update(fn func(*bolt.Tx) error) error {
	d.txStart.Store(time.Now().UnixNano())
	defer d.txStart.Store(0)
	var fnErr error
	err := d.bolt.Update(func(tx *bolt.Tx) error {
		for _, name := range d.filled {
			if bk := tx.Bucket(name); bk != nil {
				bk.FillPercent = 1
			}
		}
		fnErr = fn(tx)
		return fnErr
	})
	switch {
	case err == nil:
		d.commitErr.Store(nil)
	case fnErr == nil: // the commit itself failed
		d.commitErr.Store(&err)
	}
	return err
}

// Health returns nil while the store can commit: an error once it is
// closed, while a transaction has been running for StallAfter or longer,
// or when the last transaction failed to commit (until one commits).
func (d *DB) Health() error {
	d.mu.RLock()
	closed := d.closed
	d.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if t := d.txStart.Load(); t != 0 {
		if running := time.Since(time.Unix(0, t)); running >= d.stallAfter {
			return fmt.Errorf("store writer stalled: a commit has run for %s", running.Truncate(time.Second))
		}
	}
	if p := d.commitErr.Load(); p != nil {
		return fmt.Errorf("store commit failed: %w", *p)
	}
	return nil
}

func bytesOf(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func safeCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store update panicked: %v", p)
		}
	}()
	return fn(tx)
}
