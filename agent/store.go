package agent

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/boltdb"
	"github.com/kurer/kurer/internal/durable"
)

// Buckets of the agent database.
var (
	bucketOut    = []byte("out")    // message id -> outRecord JSON
	bucketIn     = []byte("in")     // message id -> inRecord JSON
	bucketWork   = []byte("work")   // work key (kind byte + '/' + id) -> nothing
	bucketEvents = []byte("events") // sequence (8 bytes BE) -> localapi.Event JSON
)

// Work kinds kept in bucketWork, derived from the records after every
// mutation so that the index can never disagree with them.
const (
	workUpload  = 'u' // outgoing: upload to the gateway
	workAck     = 'a' // incoming: ack at the gateway
	workReject  = 'r' // incoming: reject at the gateway
	workDeliver = 'd' // incoming: hand to the adapter
	workReceipt = 'p' // incoming: application receipts to queue for the sender
)

// pendingReceipt is an application receipt owed to a message's sender.
type pendingReceipt struct {
	Kind    string            `json:"kind"`
	Reasons []localapi.Reason `json:"reasons,omitempty"`
}

// errNotFound is returned by the store for an unknown message id.
var errNotFound = errors.New("message not found")

// outRecord is one outgoing message (a case, or an application receipt this
// agent sends).
type outRecord struct {
	ID           string    `json:"id"`
	Type         string    `json:"type"`
	From         string    `json:"from"`
	To           string    `json:"to"`
	Conversation string    `json:"conversation,omitempty"`
	InReplyTo    string    `json:"in_reply_to,omitempty"`
	Created      time.Time `json:"created"`
	Expires      time.Time `json:"expires"`
	Size         int64     `json:"size"`
	Digest       string    `json:"digest"`
	// SendHash identifies the content of a local send, for idempotent
	// retries of the send with the same client-chosen id.
	SendHash string `json:"send_hash,omitempty"`
	// Receipt is set when this message is an application receipt.
	Receipt bool `json:"receipt,omitempty"`

	State    string                 `json:"state"`
	History  []localapi.StateChange `json:"history"`
	Receipts []localapi.Receipt     `json:"receipts,omitempty"`

	// Upload bookkeeping.
	Pending     bool      `json:"pending,omitempty"`
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitempty"`
	LastError   string    `json:"last_error,omitempty"` // a code, never a cause
}

// advance moves r to state if the state machine allows it, and records the
// change in the history either way (docs/states.md).
func (r *outRecord) advance(c localapi.StateChange) bool {
	if r.State == "" {
		r.State = c.State
		r.History = append(r.History, c)
		return true
	}
	if r.State == c.State {
		return false
	}
	if !canAdvanceOut(r.State, c.State) {
		c.Detail = "recorded; state not changed (was " + r.State + ")"
		if c.Reason == "" {
			c.Reason = ReasonLateEvent
		}
		r.History = append(r.History, c)
		return false
	}
	r.State = c.State
	r.History = append(r.History, c)
	if r.State != localapi.StateQueued {
		r.Pending = false // nothing left to upload once the gateway has it or it ended
	}
	return true
}

// hasReceipt reports whether a receipt with the same kind and signature is
// already kept, so redelivered notices are recorded once.
func (r *outRecord) hasReceipt(kind, signed string) bool {
	for _, x := range r.Receipts {
		if x.Kind == kind && x.Signed == signed {
			return true
		}
	}
	return false
}

// inRecord is one incoming message. Its id is kept for good (the tombstone
// that makes redeliveries idempotent), also when it was rejected.
type inRecord struct {
	ID           string            `json:"id"`
	Type         string            `json:"type"`
	From         string            `json:"from"`
	To           string            `json:"to"`
	Conversation string            `json:"conversation,omitempty"`
	InReplyTo    string            `json:"in_reply_to,omitempty"`
	Created      time.Time         `json:"created"`
	Expires      time.Time         `json:"expires"`
	Size         int64             `json:"size"`
	Files        []localapi.File   `json:"files,omitempty"`
	Receipt      bool              `json:"receipt,omitempty"` // an application receipt for us
	Reasons      []localapi.Reason `json:"reasons,omitempty"` // why it was rejected

	State    string                 `json:"state"`
	History  []localapi.StateChange `json:"history"`
	Receipts []localapi.Receipt     `json:"receipts,omitempty"` // the receipts we sent

	// Work still owed for this message.
	NeedAck      bool      `json:"need_ack,omitempty"`
	NeedReject   bool      `json:"need_reject,omitempty"`
	RejectCode   string    `json:"reject_code,omitempty"`
	NeedDeliver  bool      `json:"need_deliver,omitempty"`
	DeliverTries int       `json:"deliver_tries,omitempty"`
	NextDeliver  time.Time `json:"next_deliver,omitempty"`
	// PendingReceipts are owed to the sender; SentReceipts lists the kinds
	// already in the outbox.
	PendingReceipts []pendingReceipt `json:"pending_receipts,omitempty"`
	SentReceipts    []string         `json:"sent_receipts,omitempty"`
}

func (r *inRecord) advance(c localapi.StateChange) bool {
	if r.State == "" {
		r.State = c.State
		r.History = append(r.History, c)
		return true
	}
	if r.State == c.State || !canAdvanceIn(r.State, c.State) {
		return false
	}
	r.State = c.State
	r.History = append(r.History, c)
	if r.State == localapi.InProcessed || r.State == localapi.InRejected {
		r.NeedDeliver = false
	}
	return true
}

func (r *inRecord) receiptSent(kind string) bool {
	for _, k := range r.SentReceipts {
		if k == kind {
			return true
		}
	}
	return false
}

// store keeps the agent's records in bbolt (one group-committing writer,
// fsynced before an update returns) and its payloads in spool directories
// under the data dir.
type store struct {
	db  *boltdb.DB
	dir string

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when an event is appended
}

// Directories under the data dir.
const (
	dirOutbox   = "outbox"   // sealed envelopes waiting for or after upload: ID.env
	dirSpool    = "spool"    // downloads in progress: ID.part; send staging
	dirInbox    = "inbox"    // opened messages: ID/payload/..., ID/manifest.json, ID/signature.p7s
	dirReceipts = "receipts" // receipts received for outgoing messages: ID/manifest.json, ID/signature.p7s
)

func openStore(dataDir string) (*store, error) {
	for _, d := range []string{dataDir, filepath.Join(dataDir, dirOutbox), filepath.Join(dataDir, dirSpool),
		filepath.Join(dataDir, dirInbox), filepath.Join(dataDir, dirReceipts)} {
		if err := durable.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
	}
	db, err := boltdb.Open(filepath.Join(dataDir, "agent.db"), boltdb.Options{
		Buckets: []string{string(bucketOut), string(bucketIn), string(bucketWork), string(bucketEvents)},
	})
	if err != nil {
		return nil, err
	}
	return &store{db: db, dir: dataDir, changed: make(chan struct{})}, nil
}

func (s *store) Close() error { return s.db.Close() }

func (s *store) path(parts ...string) string {
	return filepath.Join(append([]string{s.dir}, parts...)...)
}

// notify wakes every waiter of changes.
func (s *store) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// watch returns a channel closed at the next appended event.
func (s *store) watch() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func workKey(kind byte, id string) []byte { return append([]byte{kind, '/'}, id...) }

func setWork(tx *bolt.Tx, kind byte, id string, on bool) error {
	b := tx.Bucket(bucketWork)
	if on {
		return b.Put(workKey(kind, id), nil)
	}
	return b.Delete(workKey(kind, id))
}

func appendEvent(tx *bolt.Tx, ev localapi.Event) error {
	b := tx.Bucket(bucketEvents)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	ev.Seq = seq
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return b.Put(k[:], data)
}

func getJSON(tx *bolt.Tx, bucket []byte, id string, v any) (bool, error) {
	data := tx.Bucket(bucket).Get([]byte(id))
	if data == nil {
		return false, nil
	}
	return true, json.Unmarshal(data, v)
}

func putJSON(tx *bolt.Tx, bucket []byte, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(id), data)
}

func putOut(tx *bolt.Tx, r *outRecord, prevState string) error {
	if err := putJSON(tx, bucketOut, r.ID, r); err != nil {
		return err
	}
	if err := setWork(tx, workUpload, r.ID, r.Pending); err != nil {
		return err
	}
	if r.State != prevState {
		last := r.History[len(r.History)-1]
		return appendEvent(tx, localapi.Event{ID: r.ID, Direction: localapi.DirectionOut, State: r.State, At: last.At, Reason: last.Reason})
	}
	return nil
}

func putIn(tx *bolt.Tx, r *inRecord, prevState string) error {
	if err := putJSON(tx, bucketIn, r.ID, r); err != nil {
		return err
	}
	for _, w := range []struct {
		k  byte
		on bool
	}{{workAck, r.NeedAck}, {workReject, r.NeedReject}, {workDeliver, r.NeedDeliver}, {workReceipt, len(r.PendingReceipts) > 0}} {
		if err := setWork(tx, w.k, r.ID, w.on); err != nil {
			return err
		}
	}
	if r.State != prevState {
		last := r.History[len(r.History)-1]
		return appendEvent(tx, localapi.Event{ID: r.ID, Direction: localapi.DirectionIn, State: r.State, At: last.At, Reason: last.Reason})
	}
	return nil
}

// insertOut stores a new outgoing record unless one with its id exists; it
// returns the existing one in that case (and stores nothing).
func (s *store) insertOut(ctx context.Context, r *outRecord) (existing *outRecord, err error) {
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		existing = nil
		var cur outRecord
		ok, err := getJSON(tx, bucketOut, r.ID, &cur)
		if err != nil {
			return err
		}
		if ok {
			existing = &cur
			return nil
		}
		return putOut(tx, r, "")
	})
	if err == nil && existing == nil {
		s.notify()
	}
	return existing, err
}

// updateOut runs fn on the record with id and stores the result; an event is
// appended when the state changed. fn returning errSkip stores nothing.
func (s *store) updateOut(ctx context.Context, id string, fn func(r *outRecord) error) (*outRecord, error) {
	var out *outRecord
	changed := false
	err := s.db.Update(ctx, func(tx *bolt.Tx) error {
		var r outRecord
		ok, err := getJSON(tx, bucketOut, id, &r)
		if err != nil {
			return err
		}
		if !ok {
			return errNotFound
		}
		prev := r.State
		if err := fn(&r); err != nil {
			return err
		}
		out, changed = &r, r.State != prev
		return putOut(tx, &r, prev)
	})
	if errors.Is(err, errSkip) {
		return out, nil
	}
	if err == nil && changed {
		s.notify()
	}
	return out, err
}

// errSkip makes an update function store nothing, without an error.
var errSkip = errors.New("skip")

// insertIn stores a new incoming record unless its id is known; it returns
// the existing record in that case.
func (s *store) insertIn(ctx context.Context, r *inRecord) (existing *inRecord, err error) {
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		existing = nil
		var cur inRecord
		ok, err := getJSON(tx, bucketIn, r.ID, &cur)
		if err != nil {
			return err
		}
		if ok {
			existing = &cur
			return nil
		}
		return putIn(tx, r, "")
	})
	if err == nil && existing == nil {
		s.notify()
	}
	return existing, err
}

func (s *store) updateIn(ctx context.Context, id string, fn func(r *inRecord) error) (*inRecord, error) {
	var out *inRecord
	changed := false
	err := s.db.Update(ctx, func(tx *bolt.Tx) error {
		var r inRecord
		ok, err := getJSON(tx, bucketIn, id, &r)
		if err != nil {
			return err
		}
		if !ok {
			return errNotFound
		}
		prev := r.State
		if err := fn(&r); err != nil {
			return err
		}
		out, changed = &r, r.State != prev
		return putIn(tx, &r, prev)
	})
	if errors.Is(err, errSkip) {
		return out, nil
	}
	if err == nil && changed {
		s.notify()
	}
	return out, err
}

func (s *store) getOut(id string) (*outRecord, error) {
	var r outRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx, bucketOut, id, &r)
		if err == nil && !ok {
			err = errNotFound
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (s *store) getIn(id string) (*inRecord, error) {
	var r inRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx, bucketIn, id, &r)
		if err == nil && !ok {
			err = errNotFound
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// work lists the ids with pending work of kind.
func (s *store) work(kind byte) ([]string, error) {
	var ids []string
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketWork).Cursor()
		prefix := []byte{kind, '/'}
		for k, _ := c.Seek(prefix); k != nil && len(k) >= 2 && k[0] == kind && k[1] == '/'; k, _ = c.Next() {
			ids = append(ids, string(k[2:]))
		}
		return nil
	})
	return ids, err
}

// listOut returns outgoing records in state (any when empty), oldest first,
// at most limit (all when <= 0). Application receipts are included only
// when withReceipts is set.
func (s *store) listOut(state string, limit int, withReceipts bool) ([]*outRecord, error) {
	var out []*outRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOut).ForEach(func(_, v []byte) error {
			var r outRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if (state == "" || r.State == state) && (withReceipts || !r.Receipt) {
				out = append(out, &r)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, err
}

// listIn is listOut for incoming messages (receipts for us excluded unless
// withReceipts).
func (s *store) listIn(state string, limit int, withReceipts bool) ([]*inRecord, error) {
	var out []*inRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIn).ForEach(func(_, v []byte) error {
			var r inRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if (state == "" || r.State == state) && (withReceipts || !r.Receipt) {
				out = append(out, &r)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, err
}

// events returns up to limit events with Seq > after, and the next cursor.
func (s *store) events(after uint64, limit int) ([]localapi.Event, uint64, error) {
	var out []localapi.Event
	next := after
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], after+1)
		for key, v := c.Seek(k[:]); key != nil && len(out) < limit; key, v = c.Next() {
			var ev localapi.Event
			if err := json.Unmarshal(v, &ev); err != nil {
				return err
			}
			out = append(out, ev)
			next = ev.Seq
		}
		return nil
	})
	return out, next, err
}

// lastEvent returns the newest event's sequence number (0: none yet).
func (s *store) lastEvent() (uint64, error) {
	var last uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketEvents).Cursor().Last(); len(k) == 8 {
			last = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return last, err
}

// counts returns the number of records per direction and state.
func (s *store) counts() (map[[2]string]int, error) {
	out := map[[2]string]int{}
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, d := range []struct {
			b   []byte
			dir string
		}{{bucketOut, localapi.DirectionOut}, {bucketIn, localapi.DirectionIn}} {
			err := tx.Bucket(d.b).ForEach(func(_, v []byte) error {
				var r struct {
					State string `json:"state"`
				}
				if err := json.Unmarshal(v, &r); err != nil {
					return err
				}
				out[[2]string{d.dir, r.State}]++
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// syncTree fsyncs every file and directory under root (used before an inbox
// record promises the payload durable).
func syncTree(root string) error {
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}
