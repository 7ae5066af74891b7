// Package bolt is the gateway's embedded storage: one bbolt file (through
// internal/boltdb: one writer goroutine, group commit, fsynced) plus spool
// files for large payloads. It implements both store.Store and store.Queue, so
// every transition (record, mailbox position, notice) is one transaction.
//
// Payloads up to the gateway's inline limit live inside bbolt (no file, no
// directory fsync per message); larger ones are spool files under
// DIR/payloads, renamed there from DIR/partial and the directory fsynced
// before the accept commits. Ciphertext is deleted when a message reaches a
// terminal state; the record (routing and history) stays until Purge.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/internal/boltdb"
	"github.com/kurer/kurer/internal/durable"
)

// Bucket names.
var (
	bAccounts = []byte("accounts") // id -> json account
	bJTI      = []byte("jti")      // jti -> exp (8 bytes)
	bJTIExp   = []byte("jti_exp")  // exp|jti -> nil
	bUploads  = []byte("uploads")  // id -> json upload
	bItems    = []byte("items")    // message id -> record (codec.go): its fixed part (v2), or all of it (v1, JSON; notices too)
	bNotices  = []byte("notices")  // notice id -> fixed part (v2) of a notice, until acked
	bStates   = []byte("states")   // seq -> state part of a v2 record
	bPayloads = []byte("payloads") // id -> inline ciphertext (databases before 2026-12-01; read and deleted only)
	bInline   = []byte("inline")   // seq -> bucket holding the inline ciphertext under inlineKey
	bReady    = []byte("ready")    // owner 0x00 seq -> id
	bLeases   = []byte("leases")   // until|id -> nil
	bExpiry   = []byte("expiry")   // expires|id -> nil (non-terminal messages)
	bDone     = []byte("done")     // terminalAt|id -> nil
	bCounts   = []byte("counts")   // state 0x00 type -> count (8 bytes)
	bJournal  = []byte("journal")  // seq -> json audit entry, until shipped
)

// Interface guards.
var (
	_ store.Store = (*Backend)(nil)
	_ store.Queue = (*Backend)(nil)
)

// Backend is the bbolt + spool implementation.
type Backend struct {
	db         *boltdb.DB
	dir        string
	partialDir string
	payloadDir string

	sigMu sync.Mutex
	sig   map[string]chan struct{}

	leaseMu sync.Mutex
	leasing map[string]*leaseReservation // account -> items reserved by leases in flight

	// acctMu guards the account cache: acct holds accounts as read from
	// the database (only ones that exist, so unknown ids cannot grow it);
	// writes drop their entry after committing, and acctGen counts them,
	// so that a read racing a write does not put back what it replaced.
	acctMu  sync.RWMutex
	acct    map[string]store.Account
	acctGen uint64

	journalFn store.JournalFunc
}

// Options tune Open.
type Options struct {
	// LockTimeout: how long to wait for another process's file lock.
	// Default 5s.
	LockTimeout time.Duration
	// MaxBatch: most updates per group commit. Default 256.
	MaxBatch int
	// Journal names the audit entries of each change; they commit with
	// it (store.JournalFunc). Nil: no journal.
	Journal store.JournalFunc
}

// Open opens (creating) the backend in dir: dir/gateway.db, dir/partial,
// dir/payloads. Payload files that no live record references (left by a
// crash between rename and commit) are removed.
func Open(dir string, o Options) (*Backend, error) {
	b := &Backend{
		dir:        dir,
		partialDir: filepath.Join(dir, "partial"),
		payloadDir: filepath.Join(dir, "payloads"),
		sig:        map[string]chan struct{}{},
		leasing:    map[string]*leaseReservation{},
		acct:       map[string]store.Account{},
		journalFn:  o.Journal,
	}
	for _, d := range []string{dir, b.partialDir, b.payloadDir} {
		if err := durable.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	db, err := boltdb.Open(filepath.Join(dir, "gateway.db"), boltdb.Options{
		LockTimeout: o.LockTimeout,
		MaxBatch:    o.MaxBatch,
		// Under load a commit (two fsyncs) costs 4-5 ms on a virtual disk
		// and grows little with the updates it carries: waiting up to 1 ms
		// for 32 instead of 500 µs for 12 took the writer from 87 % to
		// 73-76 % busy at the same messages/s in the benchmark.
		Linger:      time.Millisecond,
		LingerBatch: 32,
		Buckets: []string{string(bAccounts), string(bJTI), string(bJTIExp), string(bUploads), string(bItems), string(bNotices), string(bStates),
			string(bPayloads), string(bInline), string(bReady), string(bLeases), string(bExpiry), string(bDone), string(bCounts), string(bJournal)},
		// Written at their ends only (ids are UUIDv7 or sequence numbers,
		// keys start with a time); the others take keys anywhere.
		Filled: []string{string(bItems), string(bNotices), string(bJournal), string(bDone)},
	})
	if err != nil {
		return nil, err
	}
	b.db = db
	if err := b.cleanSpool(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return b, nil
}

// WriterStats reports the database writer's counters (commits, updates,
// busy time): the saturation of the store's one serial stage.
func (b *Backend) WriterStats() boltdb.Stats { return b.db.Stats() }

// Health reports whether the store can commit (boltdb.DB.Health): the
// gateway's /readyz answers not ready while it cannot.
func (b *Backend) Health() error { return b.db.Health() }

// Close closes the database after queued writes.
func (b *Backend) Close() error { return b.db.Close() }

// record is the stored form of an item (codec.go): getRec reads it, putRec
// writes it. The JSON tags read records written before the binary codec.
type record struct {
	store.Item
	Seq    uint64 `json:"seq"`
	Inline bool   `json:"inline,omitempty"`
	Spool  bool   `json:"spool,omitempty"`
	// split: read from a v2 record, whose fixed part is stored and never
	// changes; putRec then writes only the state.
	split bool
}

type accountRec struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	OrgNumber    string    `json:"org_number"`
	Municipality string    `json:"municipality,omitempty"`
	Service      string    `json:"service,omitempty"`
	Types        []string  `json:"types"`
	Certificates [][]byte  `json:"certificates"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
}

// cleanSpool removes payload files without a live record and partial files
// without an upload record.
func (b *Backend) cleanSpool() error {
	for _, d := range []struct {
		dir    string
		bucket []byte
		live   func(tx *bbolt.Tx, k, v []byte) bool
	}{
		{b.payloadDir, bItems, func(tx *bbolt.Tx, k, v []byte) bool {
			r, err := loadRec(tx, string(k), v)
			return err == nil && r.Spool && !store.Terminal(r.State)
		}},
		{b.partialDir, bUploads, func(*bbolt.Tx, []byte, []byte) bool { return true }},
	} {
		ents, err := os.ReadDir(d.dir)
		if err != nil {
			return fmt.Errorf("read spool: %w", err)
		}
		for _, e := range ents {
			keep := false
			_ = b.db.View(func(tx *bbolt.Tx) error {
				k := []byte(e.Name())
				v := tx.Bucket(d.bucket).Get(k)
				keep = v != nil && d.live(tx, k, v)
				return nil
			})
			if !keep {
				if err := os.Remove(filepath.Join(d.dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("clean spool: %w", err)
				}
			}
		}
	}
	return nil
}

// ---- signalling ----

// Wait implements store.Queue.
func (b *Backend) Wait(account string) <-chan struct{} {
	b.sigMu.Lock()
	defer b.sigMu.Unlock()
	ch, ok := b.sig[account]
	if !ok {
		ch = make(chan struct{})
		b.sig[account] = ch
	}
	return ch
}

func (b *Backend) notify(accounts ...string) {
	b.sigMu.Lock()
	defer b.sigMu.Unlock()
	for _, a := range accounts {
		if ch, ok := b.sig[a]; ok {
			close(ch)
			delete(b.sig, a)
		}
	}
}

// ---- encoding helpers ----

func u64(v uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], v)
	return k[:]
}

func timeKey(t time.Time, id string) []byte {
	n := t.UnixNano()
	if n < 0 {
		n = 0
	}
	return append(u64(uint64(n)), id...)
}

func readyKey(owner string, seq uint64) []byte {
	k := append([]byte(owner), 0)
	return append(k, u64(seq)...)
}

func countKey(state, typ string) []byte { return []byte(state + "\x00" + typ) }

func getRec(tx *bbolt.Tx, id string) (*record, error) {
	v := tx.Bucket(bItems).Get([]byte(id))
	if v == nil {
		if v = tx.Bucket(bNotices).Get([]byte(id)); v == nil {
			return nil, store.ErrNotFound
		}
	}
	return loadRec(tx, id, v)
}

// exists reports whether a message or notice has id: the two share one
// id space.
func exists(tx *bbolt.Tx, id string) bool {
	return tx.Bucket(bItems).Get([]byte(id)) != nil || tx.Bucket(bNotices).Get([]byte(id)) != nil
}

// loadRec decodes the items value v of id and, for a v2 record, its state.
func loadRec(tx *bbolt.Tx, id string, v []byte) (*record, error) {
	r, err := decodeRecord(v)
	if err != nil {
		return nil, fmt.Errorf("item %s: %w", id, err)
	}
	if r.split {
		sv := tx.Bucket(bStates).Get(u64(r.Seq))
		if sv == nil {
			return nil, fmt.Errorf("item %s: no state", id)
		}
		if err := decodeState(sv, r); err != nil {
			return nil, fmt.Errorf("item %s: %w", id, err)
		}
	}
	return r, nil
}

// putRec writes r as v2: its fixed part once (when r is new, or read from
// an older format), its state every time. A record without a sequence
// number (none is written today) stays whole, as v1: states are keyed by
// it.
//
// The fixed parts of messages and of notices are kept apart. Messages stay
// until purged, so the items bucket only grows at its end (ids are UUIDv7)
// and its leaves are filled; notices are deleted when acked, soon after
// they are made, and among the messages each such delete rewrote a leaf of
// its own.
func putRec(tx *bbolt.Tx, r *record) error {
	id := []byte(r.Routing.ID)
	if r.Seq == 0 {
		return tx.Bucket(bItems).Put(id, encodeRecord(r))
	}
	if !r.split {
		bk := tx.Bucket(bItems)
		if r.Kind == api.KindNotice {
			// An older gateway kept whole notices among the messages.
			if err := bk.Delete(id); err != nil {
				return err
			}
			bk = tx.Bucket(bNotices)
		}
		if err := bk.Put(id, encodeFixed(r)); err != nil {
			return err
		}
		r.split = true
	}
	return tx.Bucket(bStates).Put(u64(r.Seq), encodeState(r))
}

// delRec removes r's record.
func delRec(tx *bbolt.Tx, r *record) error {
	bk := bItems
	if r.split && r.Kind == api.KindNotice {
		bk = bNotices
	}
	if err := tx.Bucket(bk).Delete([]byte(r.Routing.ID)); err != nil {
		return err
	}
	if !r.split {
		return nil
	}
	return tx.Bucket(bStates).Delete(u64(r.Seq))
}

func bump(tx *bbolt.Tx, state, typ string, delta int64) error {
	bk := tx.Bucket(bCounts)
	k := countKey(state, typ)
	var n int64
	if v := bk.Get(k); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	n += delta
	if n <= 0 {
		return bk.Delete(k)
	}
	return bk.Put(k, u64(uint64(n)))
}

// setState moves a message record to state, keeping the indexes and counts
// right. It does not write the record.
func setState(tx *bbolt.Tx, r *record, state string, at time.Time, reason string) error {
	if r.Kind == api.KindMessage {
		if err := bump(tx, r.State, r.Routing.Type, -1); err != nil {
			return err
		}
		if err := bump(tx, state, r.Routing.Type, 1); err != nil {
			return err
		}
	}
	if r.State == api.StateLeased {
		if err := tx.Bucket(bLeases).Delete(timeKey(r.LeaseUntil, r.Routing.ID)); err != nil {
			return err
		}
		r.LeaseUntil = time.Time{}
	}
	if r.State == api.StateAccepted {
		if err := tx.Bucket(bReady).Delete(readyKey(r.Owner, r.Seq)); err != nil {
			return err
		}
	}
	if r.Kind == api.KindMessage && store.Terminal(state) {
		if err := tx.Bucket(bExpiry).Delete(timeKey(r.Routing.Expires, r.Routing.ID)); err != nil {
			return err
		}
		if err := tx.Bucket(bDone).Put(timeKey(at, r.Routing.ID), nil); err != nil {
			return err
		}
		if r.Inline {
			if err := deleteInline(tx, r); err != nil {
				return err
			}
		}
		r.TerminalAt = at
	}
	if r.Kind == api.KindMessage {
		r.History = append(r.History, api.StateChange{State: state, At: at, Reason: reason})
	}
	r.State = state
	return nil
}

// Inline payloads are keyed by the message's mailbox sequence number, not
// its id, so a commit's new payloads land together at the end of the
// bucket and those of delivered messages leave from near its start. Each
// is the one value of a bucket of its own under that number: bbolt splits
// a leaf only when it holds more than four values, so 10 KiB payloads side
// by side would share leaves, and a commit that appends or deletes one
// would rewrite its neighbours too (measured: 37 pages for a commit of 8
// payloads, 24 pages of them, instead of 26). Older databases hold the
// payload as a plain value under the sequence number (2026-12-01 to
// 2026-12-02) or under the id in bPayloads (before); all three are read
// and deleted.
var inlineKey = []byte("p")

// putInline stores r's inline payload.
func putInline(tx *bbolt.Tx, r *record, p []byte) error {
	bk, err := tx.Bucket(bInline).CreateBucket(u64(r.Seq))
	if err != nil {
		return err
	}
	return bk.Put(inlineKey, p)
}

// getInline returns r's inline payload (bytes valid in tx only), nil if
// there is none.
func getInline(tx *bbolt.Tx, r *record) []byte {
	in := tx.Bucket(bInline)
	if bk := in.Bucket(u64(r.Seq)); bk != nil {
		return bk.Get(inlineKey)
	}
	if v := in.Get(u64(r.Seq)); v != nil {
		return v
	}
	return tx.Bucket(bPayloads).Get([]byte(r.Routing.ID))
}

// deleteInline removes r's inline payload from wherever it is.
func deleteInline(tx *bbolt.Tx, r *record) error {
	in := tx.Bucket(bInline)
	if in.Bucket(u64(r.Seq)) != nil {
		return in.DeleteBucket(u64(r.Seq))
	}
	if err := in.Delete(u64(r.Seq)); err != nil {
		return err
	}
	return tx.Bucket(bPayloads).Delete([]byte(r.Routing.ID))
}

// enqueue puts a fresh record into its owner's mailbox.
func enqueue(tx *bbolt.Tx, r *record) error {
	seq, err := tx.Bucket(bReady).NextSequence()
	if err != nil {
		return err
	}
	r.Seq = seq
	if err := tx.Bucket(bReady).Put(readyKey(r.Owner, seq), []byte(r.Routing.ID)); err != nil {
		return err
	}
	if r.Kind == api.KindMessage {
		if err := tx.Bucket(bExpiry).Put(timeKey(r.Routing.Expires, r.Routing.ID), nil); err != nil {
			return err
		}
		if err := bump(tx, r.State, r.Routing.Type, 1); err != nil {
			return err
		}
	}
	return putRec(tx, r)
}

func addNotice(tx *bbolt.Tx, m *record, n *store.Notice, now time.Time) error {
	if n == nil {
		return nil
	}
	if exists(tx, n.ID) {
		return fmt.Errorf("notice id %s exists", n.ID)
	}
	r := &record{Item: store.NoticeItem(m.Item, *n, now)}
	return enqueue(tx, r)
}

// ---- audit journal ----

// journal commits c's audit entries in tx (see store.JournalFunc).
func (b *Backend) journal(tx *bbolt.Tx, c store.Change) error {
	if b.journalFn == nil {
		return nil
	}
	bk := tx.Bucket(bJournal)
	for _, e := range b.journalFn(c) {
		v, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode audit entry: %w", err)
		}
		seq, err := bk.NextSequence()
		if err != nil {
			return err
		}
		if err := bk.Put(u64(seq), v); err != nil {
			return err
		}
	}
	return nil
}

// journalMessage reports a change of message r (notices are not reported).
func (b *Backend) journalMessage(tx *bbolt.Tx, op store.ChangeOp, r *record, n *store.Notice, reason string) error {
	if r.Kind != api.KindMessage {
		return nil
	}
	return b.journal(tx, store.Change{Op: op, Item: r.Item, Notice: n, Reason: reason})
}

// Journal implements store.Store.
func (b *Backend) Journal(_ context.Context, max int) ([]store.JournalEntry, error) {
	var out []store.JournalEntry
	err := b.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bJournal).Cursor()
		for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("journal: bad key")
			}
			e := store.JournalEntry{Seq: binary.BigEndian.Uint64(k)}
			if err := json.Unmarshal(v, &e.AuditEntry); err != nil {
				return fmt.Errorf("journal entry %d: %w", e.Seq, err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// DropJournal implements store.Store.
func (b *Backend) DropJournal(ctx context.Context, through uint64) error {
	return b.db.Update(ctx, func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bJournal)
		c := bk.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= through; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		// Positions at or below through are taken (the audit log may
		// hold them even if this journal never did, e.g. after the store
		// was recreated): later entries get higher ones.
		if bk.Sequence() < through {
			return bk.SetSequence(through)
		}
		return nil
	})
}

// ---- catalog ----

// PutAccount implements store.Store.
func (b *Backend) PutAccount(ctx context.Context, a store.Account) error {
	v, err := json.Marshal(accountRec(a))
	if err != nil {
		return err
	}
	err = b.db.Update(ctx, func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bAccounts)
		var before *store.Account
		if old := bk.Get([]byte(a.ID)); old != nil && b.journalFn != nil {
			var rec accountRec
			if err := json.Unmarshal(old, &rec); err != nil {
				return fmt.Errorf("account %s: %w", a.ID, err)
			}
			before = (*store.Account)(&rec)
		}
		if err := bk.Put([]byte(a.ID), v); err != nil {
			return err
		}
		after := cloneAccount(a)
		return b.journal(tx, store.Change{Op: store.ChangeAccountPut, Before: before, After: &after})
	})
	// The cache entry is dropped, not replaced: the next read loads what
	// committed last, even if two writes of id finish out of order. On
	// failure nothing changed, and dropping costs one read.
	b.forgetAccount(a.ID)
	return err
}

// Account implements store.Store. It is served from memory after the first
// read of id.
func (b *Backend) Account(_ context.Context, id string) (store.Account, error) {
	b.acctMu.RLock()
	a, ok := b.acct[id]
	gen := b.acctGen
	b.acctMu.RUnlock()
	if ok {
		return cloneAccount(a), nil
	}
	var rec accountRec
	err := b.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bAccounts).Get([]byte(id))
		if v == nil {
			return store.ErrNotFound
		}
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		return store.Account{}, err
	}
	a = store.Account(rec)
	b.acctMu.Lock()
	if b.acctGen == gen { // no write since the read began
		b.acct[id] = a
	}
	b.acctMu.Unlock()
	return cloneAccount(a), nil
}

// forgetAccount drops id from the account cache.
func (b *Backend) forgetAccount(id string) {
	b.acctMu.Lock()
	delete(b.acct, id)
	b.acctGen++
	b.acctMu.Unlock()
}

// cloneAccount returns a copy of a cached account that a caller may modify
// without touching the cache: the Types and Certificates slices are fresh.
// The DER byte slices inside Certificates are shared with the cache, not
// copied: nothing modifies a certificate's bytes in place (callers parse
// them or replace the slice), and the cache's own copies were decoded from
// the database, never taken from a caller.
func cloneAccount(a store.Account) store.Account {
	a.Types = slices.Clone(a.Types)
	a.Certificates = slices.Clone(a.Certificates)
	return a
}

// Accounts implements store.Store.
func (b *Backend) Accounts(context.Context) ([]store.Account, error) {
	var out []store.Account
	err := b.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bAccounts).ForEach(func(_, v []byte) error {
			var a accountRec
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, store.Account(a))
			return nil
		})
	})
	return out, err
}

// DeleteAccount implements store.Store.
func (b *Backend) DeleteAccount(ctx context.Context, id string) error {
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bAccounts)
		old := bk.Get([]byte(id))
		if old == nil {
			return store.ErrNotFound
		}
		var before *store.Account
		if b.journalFn != nil { // as in PutAccount: decoded only to journal it
			var rec accountRec
			if err := json.Unmarshal(old, &rec); err != nil {
				return fmt.Errorf("account %s: %w", id, err)
			}
			before = (*store.Account)(&rec)
		}
		if err := bk.Delete([]byte(id)); err != nil {
			return err
		}
		return b.journal(tx, store.Change{Op: store.ChangeAccountGone, Before: before})
	})
	// Forget id whatever the outcome: on success it is gone, and on
	// failure the cache only loses an entry it can read again.
	b.forgetAccount(id)
	return err
}

// UseJTI implements store.Store.
func (b *Backend) UseJTI(ctx context.Context, jti string, exp, now time.Time) error {
	return b.db.Update(ctx, func(tx *bbolt.Tx) error {
		bj, be := tx.Bucket(bJTI), tx.Bucket(bJTIExp)
		// Purge a few expired entries on the way.
		c := be.Cursor()
		nowKey := u64(uint64(now.UnixNano()))
		var stale [][]byte
		for k, _ := c.First(); k != nil && len(stale) < 32 && bytes.Compare(k[:8], nowKey) < 0; k, _ = c.Next() {
			stale = append(stale, append([]byte(nil), k...))
		}
		for _, k := range stale {
			if err := be.Delete(k); err != nil {
				return err
			}
			if v := bj.Get(k[8:]); v != nil && bytes.Equal(v, k[:8]) {
				if err := bj.Delete(k[8:]); err != nil {
					return err
				}
			}
		}
		if v := bj.Get([]byte(jti)); v != nil && binary.BigEndian.Uint64(v) >= uint64(now.UnixNano()) {
			return store.ErrReplayed
		}
		ek := u64(uint64(exp.UnixNano()))
		if err := bj.Put([]byte(jti), ek); err != nil {
			return err
		}
		return be.Put(append(ek, jti...), nil)
	})
}

// ---- uploads ----

// StartUpload implements store.Store.
func (b *Backend) StartUpload(ctx context.Context, r api.Routing, now time.Time) (string, error) {
	v, err := json.Marshal(store.Upload{Routing: r, Created: now})
	if err != nil {
		return "", err
	}
	err = b.db.Update(ctx, func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bUploads)
		if old := bk.Get([]byte(r.ID)); old != nil {
			var u store.Upload
			if err := json.Unmarshal(old, &u); err != nil {
				return err
			}
			if !u.Routing.SameSubmit(r) {
				return store.ErrExists
			}
			return nil
		}
		return bk.Put([]byte(r.ID), v)
	})
	if err != nil {
		return "", err
	}
	return filepath.Join(b.partialDir, r.ID), nil
}

// Upload implements store.Store.
func (b *Backend) Upload(_ context.Context, id string) (store.Upload, string, error) {
	var u store.Upload
	err := b.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bUploads).Get([]byte(id))
		if v == nil {
			return store.ErrNotFound
		}
		return json.Unmarshal(v, &u)
	})
	return u, filepath.Join(b.partialDir, id), err
}

// StaleUploads implements store.Store. Partial uploads are few (only
// envelopes above the inline limit, while their bytes arrive), so it reads
// them all.
func (b *Backend) StaleUploads(_ context.Context, now, startedBefore time.Time, limit int) ([]string, error) {
	var ids []string
	err := b.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bUploads).Cursor()
		for k, v := c.First(); k != nil && len(ids) < limit; k, v = c.Next() {
			var u store.Upload
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("upload %q: %w", k, err)
			}
			if !u.Routing.Expires.After(now) || u.Created.Before(startedBefore) {
				ids = append(ids, string(k))
			}
		}
		return nil
	})
	return ids, err
}

// DropUpload implements store.Store.
func (b *Backend) DropUpload(ctx context.Context, id string) error {
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket(bUploads).Delete([]byte(id))
	})
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(b.partialDir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ---- messages ----

// Accept implements store.Store.
func (b *Backend) Accept(ctx context.Context, it store.Item, p store.Payload, n *store.Notice) (store.Item, error) {
	id := it.Routing.ID
	// A resubmit is answered from the stored record; a new id (the usual
	// case) costs only a key lookup here, no decode.
	var known bool
	_ = b.db.View(func(tx *bbolt.Tx) error {
		known = exists(tx, id)
		return nil
	})
	if known {
		existing, err := b.Item(ctx, id)
		if err != nil {
			return store.Item{}, err
		}
		return existing, store.ErrExists
	}
	var dst string
	if p.SpoolFile != "" {
		dst = filepath.Join(b.payloadDir, id)
		if err := os.Rename(p.SpoolFile, dst); err != nil {
			return store.Item{}, fmt.Errorf("move payload: %w", err)
		}
		if err := durable.SyncDir(b.payloadDir); err != nil {
			_ = os.Remove(dst)
			return store.Item{}, err
		}
	}
	var existing, stored *record
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		existing, stored = nil, nil
		if r, err := getRec(tx, id); err == nil {
			existing = r
			return store.ErrExists
		}
		r := &record{Item: it, Inline: p.SpoolFile == "", Spool: p.SpoolFile != ""}
		r.Kind = api.KindMessage
		r.Owner = it.Routing.To
		r.State = api.StateAccepted
		if len(r.History) == 0 {
			r.History = []api.StateChange{{State: api.StateAccepted, At: it.AcceptedAt}}
		}
		if err := tx.Bucket(bUploads).Delete([]byte(id)); err != nil {
			return err
		}
		if err := enqueue(tx, r); err != nil { // assigns r.Seq
			return err
		}
		stored = r
		if r.Inline {
			if err := putInline(tx, r, p.Inline); err != nil {
				return err
			}
		}
		if err := addNotice(tx, r, n, it.AcceptedAt); err != nil {
			return err
		}
		return b.journalMessage(tx, store.ChangeAccepted, r, n, "")
	})
	if err != nil {
		if dst != "" {
			_ = os.Remove(dst)
		}
		if existing != nil {
			return existing.Item, store.ErrExists
		}
		return store.Item{}, err
	}
	b.notify(it.Routing.To)
	if n != nil {
		b.notify(it.Routing.From)
	}
	return stored.Item, nil // built here, not read from the map: safe to keep
}

// Item implements store.Store.
func (b *Backend) Item(_ context.Context, id string) (store.Item, error) {
	var r *record
	err := b.db.View(func(tx *bbolt.Tx) error {
		var err error
		r, err = getRec(tx, id)
		return err
	})
	if err != nil {
		return store.Item{}, err
	}
	return r.Item, nil
}

type bytesPayload struct {
	*bytes.Reader
	b []byte
}

func (bytesPayload) Close() error { return nil }

// Bytes returns the whole payload (a copy made for this reader), so that a
// caller that wants it in memory need not copy it again.
func (p bytesPayload) Bytes() []byte { return p.b }

type filePayload struct {
	*os.File
	size int64
}

func (f filePayload) Size() int64 { return f.size }

// Payload implements store.Store.
func (b *Backend) Payload(_ context.Context, id string) (store.PayloadReader, error) {
	var (
		r      *record
		inline []byte
	)
	err := b.db.View(func(tx *bbolt.Tx) error {
		var err error
		if r, err = getRec(tx, id); err != nil {
			return err
		}
		if r.Kind != api.KindMessage || store.Terminal(r.State) {
			return store.ErrNotFound
		}
		if r.Inline {
			v := getInline(tx, r)
			if v == nil {
				return store.ErrNotFound // live and inline, but its payload is gone
			}
			inline = append([]byte{}, v...) // non-nil also when empty
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if inline != nil {
		return bytesPayload{Reader: bytes.NewReader(inline), b: inline}, nil
	}
	f, err := os.Open(filepath.Join(b.payloadDir, id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return filePayload{File: f, size: st.Size()}, nil
}

// Messages implements store.Store.
func (b *Backend) Messages(_ context.Context, f store.MessageFilter) ([]store.Item, error) {
	var out []store.Item
	err := b.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bItems).ForEach(func(k, v []byte) error {
			r, err := loadRec(tx, string(k), v)
			if err != nil {
				return err
			}
			if r.Kind != api.KindMessage ||
				(f.State != "" && r.State != f.State) ||
				(f.Type != "" && r.Routing.Type != f.Type) ||
				(f.Account != "" && r.Routing.From != f.Account && r.Routing.To != f.Account) ||
				(!f.OlderThan.IsZero() && !r.AcceptedAt.Before(f.OlderThan)) {
				return nil
			}
			out = append(out, r.Item)
			return nil
		})
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].AcceptedAt.Before(out[j].AcceptedAt) })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, err
}

// CountByState implements store.Store.
func (b *Backend) CountByState(context.Context) (map[string]map[string]int, error) {
	out := map[string]map[string]int{}
	err := b.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bCounts).ForEach(func(k, v []byte) error {
			st, typ, _ := bytes.Cut(k, []byte{0})
			if out[string(st)] == nil {
				out[string(st)] = map[string]int{}
			}
			out[string(st)][string(typ)] = int(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	return out, err
}

// Purge implements store.Store.
func (b *Backend) Purge(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	var n int
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		n = 0
		c := tx.Bucket(bDone).Cursor()
		end := u64(uint64(cutoff.UnixNano()))
		var keys [][]byte
		for k, _ := c.First(); k != nil && len(keys) < limit && bytes.Compare(k[:8], end) < 0; k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			id := k[8:]
			r, err := getRec(tx, string(id))
			if err == nil {
				if err := bump(tx, r.State, r.Routing.Type, -1); err != nil {
					return err
				}
				if err := delRec(tx, r); err != nil {
					return err
				}
			}
			if err := tx.Bucket(bDone).Delete(k); err != nil {
				return err
			}
			n++
		}
		if n == 0 {
			return nil
		}
		return b.journal(tx, store.Change{Op: store.ChangePurged, Count: n})
	})
	return n, err
}

// ---- queue ----

// Lease implements store.Queue.
//
// Pollers of one mailbox reserve items in memory before they queue their
// write, so they neither wait for each other's commits nor queue writes
// for nothing. A new item wakes every poller of its mailbox (an agent may
// run several): each reads the mailbox, skips the items that leases
// already queued will take, and queues a write only for what is left.
// Leases queued meanwhile share the next group commit, so a busy mailbox
// is served at several leases per commit instead of one.
//
// The reservation is a count, not a set of ids: each lease's transaction
// takes at most the count it reserved, from the front of the mailbox, and
// the transactions run one after another, so the leases in flight take
// exactly the first `reserved` items between them (fewer if some left,
// e.g. expired). What the transaction reads is the truth; the count only
// decides whether a poller writes at all.
func (b *Backend) Lease(ctx context.Context, account string, max int, now, until time.Time) ([]store.Item, error) {
	if max <= 0 {
		return nil, nil
	}
	ls := b.leaseState(account)
	ls.mu.Lock()
	prefix := append([]byte(account), 0)
	n, skipped := 0, 0
	_ = b.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bReady).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && n < max; k, _ = c.Next() {
			if skipped < ls.reserved {
				skipped++
				continue
			}
			n++
		}
		return nil
	})
	if n == 0 {
		// Most polls find an empty mailbox: no write. If the items seen
		// are all reserved, their leases may have committed just before
		// this read and not yet let go of their count: the next of them
		// to let go wakes the mailbox's pollers, so this one tries again.
		ls.retry = ls.retry || skipped > 0
		ls.mu.Unlock()
		return nil, nil
	}
	ls.reserved += n
	ls.mu.Unlock()
	defer func() {
		ls.mu.Lock()
		ls.reserved -= n
		wake := ls.retry
		ls.retry = false
		ls.mu.Unlock()
		if wake {
			b.notify(account)
		}
	}()
	var out []store.Item
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		out = out[:0]
		c := tx.Bucket(bReady).Cursor()
		var recs []*record
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(recs) < n; k, v = c.Next() {
			r, err := getRec(tx, string(v))
			if err != nil {
				return err
			}
			if r.Kind == api.KindMessage && !r.Routing.Expires.After(now) {
				// Past its expiry: never handed out. The sweeper
				// expires it (with the sender's notice) within a
				// sweep interval; the items behind it are taken.
				continue
			}
			recs = append(recs, r)
		}
		for _, r := range recs {
			if err := setState(tx, r, api.StateLeased, now, ""); err != nil {
				return err
			}
			r.Attempts++
			r.LeaseUntil = until
			if err := tx.Bucket(bLeases).Put(timeKey(until, r.Routing.ID), nil); err != nil {
				return err
			}
			if err := putRec(tx, r); err != nil {
				return err
			}
			if err := b.journalMessage(tx, store.ChangeLeased, r, nil, ""); err != nil {
				return err
			}
			out = append(out, r.Item)
		}
		return nil
	})
	if err != nil {
		// Pollers that skipped the items this lease reserved sleep until
		// the next wake-up: the items are still there, so wake them now.
		b.notify(account)
		return nil, err
	}
	return out, nil
}

// leaseReservation is one mailbox's count of items reserved by leases that
// are queued or committing (see Lease).
type leaseReservation struct {
	mu       sync.Mutex
	reserved int
	retry    bool // a poller found only reserved items (see Lease)
}

// leaseState returns account's reservation. They are kept for the accounts
// that ever leased: a few words each.
func (b *Backend) leaseState(account string) *leaseReservation {
	b.leaseMu.Lock()
	defer b.leaseMu.Unlock()
	ls, ok := b.leasing[account]
	if !ok {
		ls = &leaseReservation{}
		b.leasing[account] = ls
	}
	return ls
}

// finish is the common part of Ack and Reject.
func (b *Backend) finish(ctx context.Context, account, id string, now time.Time, state, code, reason string, n *store.Notice) (store.Item, error) {
	var (
		out     store.Item
		changed bool
		spool   bool
	)
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		changed, spool = false, false
		r, err := getRec(tx, id)
		if err != nil {
			return err
		}
		if r.Owner != account {
			return store.ErrNotFound
		}
		if r.Kind == api.KindNotice {
			if state != api.StateDelivered {
				return store.ErrState
			}
			if err := setState(tx, r, api.StateDelivered, now, ""); err != nil {
				return err
			}
			out, changed = r.Item, true
			return delRec(tx, r)
		}
		if store.Terminal(r.State) {
			if r.State == state {
				out = r.Item
				return nil
			}
			return store.ErrState
		}
		if err := setState(tx, r, state, now, reason); err != nil {
			return err
		}
		if err := addNotice(tx, r, n, now); err != nil {
			return err
		}
		out, changed, spool = r.Item, true, r.Spool
		if err := putRec(tx, r); err != nil {
			return err
		}
		op := store.ChangeDelivered
		if state == api.StateRejected {
			op = store.ChangeRejected
		}
		return b.journalMessage(tx, op, r, n, code)
	})
	if err != nil {
		return store.Item{}, err
	}
	if changed && out.Kind == api.KindMessage {
		b.afterTerminal(id, spool)
		if n != nil {
			b.notify(out.Routing.From)
		}
	}
	return out, nil
}

func (b *Backend) afterTerminal(id string, spool bool) {
	if spool {
		_ = os.Remove(filepath.Join(b.payloadDir, id))
	}
}

// Ack implements store.Queue.
func (b *Backend) Ack(ctx context.Context, account, id string, now time.Time, n *store.Notice) (store.Item, error) {
	return b.finish(ctx, account, id, now, api.StateDelivered, "", "", n)
}

// Reject implements store.Queue.
func (b *Backend) Reject(ctx context.Context, account, id string, now time.Time, reason, detail string, n *store.Notice) (store.Item, error) {
	code := reason
	if detail != "" {
		reason = reason + ": " + detail
	}
	return b.finish(ctx, account, id, now, api.StateRejected, code, reason, n)
}

// DueLeases implements store.Queue.
func (b *Backend) DueLeases(_ context.Context, now time.Time, limit int) ([]store.Item, error) {
	return b.due(bLeases, now, limit)
}

// DueExpiry implements store.Queue.
func (b *Backend) DueExpiry(_ context.Context, now time.Time, limit int) ([]store.Item, error) {
	return b.due(bExpiry, now, limit)
}

func (b *Backend) due(bucket []byte, now time.Time, limit int) ([]store.Item, error) {
	var out []store.Item
	end := u64(uint64(now.UnixNano()) + 1)
	err := b.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, _ := c.First(); k != nil && len(out) < limit && bytes.Compare(k[:8], end) < 0; k, _ = c.Next() {
			r, err := getRec(tx, string(k[8:]))
			if err != nil {
				return err
			}
			out = append(out, r.Item)
		}
		return nil
	})
	return out, err
}

// Release implements store.Queue.
func (b *Backend) Release(ctx context.Context, id string, leaseUntil, now time.Time) error {
	var owner string
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		r, err := getRec(tx, id)
		if err != nil {
			return err
		}
		if r.State != api.StateLeased || !r.LeaseUntil.Equal(leaseUntil) {
			return store.ErrStale
		}
		if err := setState(tx, r, api.StateAccepted, now, "lease_timeout"); err != nil {
			return err
		}
		if err := tx.Bucket(bReady).Put(readyKey(r.Owner, r.Seq), []byte(id)); err != nil {
			return err
		}
		owner = r.Owner
		if err := putRec(tx, r); err != nil {
			return err
		}
		return b.journalMessage(tx, store.ChangeReleased, r, nil, "")
	})
	if err == nil {
		b.notify(owner)
	}
	return err
}

// DeadLetter implements store.Queue.
func (b *Backend) DeadLetter(ctx context.Context, id string, leaseUntil, now time.Time, n *store.Notice) error {
	var (
		sender string
		spool  bool
	)
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		r, err := getRec(tx, id)
		if err != nil {
			return err
		}
		if r.Kind != api.KindMessage || r.State != api.StateLeased || !r.LeaseUntil.Equal(leaseUntil) {
			return store.ErrStale
		}
		if err := setState(tx, r, api.StateDeadLettered, now, "max_attempts"); err != nil {
			return err
		}
		if err := addNotice(tx, r, n, now); err != nil {
			return err
		}
		sender, spool = r.Routing.From, r.Spool
		if err := putRec(tx, r); err != nil {
			return err
		}
		return b.journalMessage(tx, store.ChangeDeadLettered, r, n, "")
	})
	if err == nil {
		b.afterTerminal(id, spool)
		b.notify(sender)
	}
	return err
}

// Expire implements store.Queue.
func (b *Backend) Expire(ctx context.Context, id string, now time.Time, n *store.Notice) error {
	var (
		sender string
		spool  bool
	)
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		r, err := getRec(tx, id)
		if err != nil {
			return err
		}
		if r.Kind != api.KindMessage || store.Terminal(r.State) {
			return store.ErrStale
		}
		if err := setState(tx, r, api.StateExpired, now, "expired"); err != nil {
			return err
		}
		if err := addNotice(tx, r, n, now); err != nil {
			return err
		}
		sender, spool = r.Routing.From, r.Spool
		if err := putRec(tx, r); err != nil {
			return err
		}
		return b.journalMessage(tx, store.ChangeExpired, r, n, "")
	})
	if err == nil {
		b.afterTerminal(id, spool)
		b.notify(sender)
	}
	return err
}

// Mailboxes implements store.Queue.
func (b *Backend) Mailboxes(context.Context) ([]store.MailboxStat, error) {
	stats := map[string]*store.MailboxStat{}
	err := b.db.View(func(tx *bbolt.Tx) error {
		add := func(id string) error {
			r, err := getRec(tx, id)
			if err != nil {
				return err
			}
			s := stats[r.Owner]
			if s == nil {
				s = &store.MailboxStat{Account: r.Owner}
				stats[r.Owner] = s
			}
			s.Depth++
			if s.Oldest.IsZero() || r.AcceptedAt.Before(s.Oldest) {
				s.Oldest = r.AcceptedAt
			}
			return nil
		}
		if err := tx.Bucket(bReady).ForEach(func(_, v []byte) error { return add(string(v)) }); err != nil {
			return err
		}
		return tx.Bucket(bLeases).ForEach(func(k, _ []byte) error { return add(string(k[8:])) })
	})
	out := make([]store.MailboxStat, 0, len(stats))
	for _, s := range stats {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Account < out[j].Account })
	return out, err
}
