// Package store is the contract between the kurer gateway and its storage:
// the Store (system of record: catalog, replay cache, message records,
// payloads) and the Queue (mailboxes: leases, acks, redelivery, expiry). The
// embedded default implements both on one bbolt file plus spool files
// (gateway/store/bolt); storetest is the conformance suite every backend runs.
//
// The interfaces are shaped so that other backends fit: a PostgreSQL Store and
// a RabbitMQ Queue would make Accept and the terminal transitions use a
// transactional outbox so that "record + queue entry" stays atomic. The
// gateway relies only on what is written here:
//
//   - Every state change is atomic: the message record, its mailbox position
//     and the notice it produces for the sender commit together or not at all.
//   - A method returns only once its change is durable (fsynced).
//   - States move forward only (accepted <-> leased, then one terminal state).
//   - Every change of the system of record commits with its audit entries:
//     the backend reports it as a Change to its JournalFunc inside the
//     change's transaction and keeps what that returns in its audit journal
//     (a transactional outbox), from which the gateway ships the entries to
//     the hash-chained audit log. No change is durable without its audit
//     entries, and no entry exists for a change that did not commit.
//
// Notices are signed by the gateway before a transition is attempted and
// handed in; a Queue never signs anything. If the transition's precondition
// no longer holds, the notice is discarded with the transition.
package store

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/kurer/kurer/gateway/api"
)

// Errors every backend returns (wrapped or not; test with errors.Is).
var (
	// ErrNotFound: no such account, message, upload or mailbox item (for
	// this caller).
	ErrNotFound = errors.New("not found")
	// ErrExists: Accept of an id that is already recorded; the existing
	// record is returned with it.
	ErrExists = errors.New("already exists")
	// ErrReplayed: a client assertion id seen before.
	ErrReplayed = errors.New("assertion id already used")
	// ErrState: the item is not in a state that allows the transition
	// (e.g. ack of an expired message).
	ErrState = errors.New("not allowed in the current state")
	// ErrStale: a sweep transition lost a race (the lease was acked or
	// renewed meanwhile); nothing changed.
	ErrStale = errors.New("stale transition")
	// ErrClosed: the backend is closed.
	ErrClosed = errors.New("store closed")
)

// Account is a catalog entry as stored (certificates as DER).
type Account struct {
	ID           string
	Name         string
	OrgNumber    string
	Municipality string
	Service      string
	Types        []string
	Certificates [][]byte // DER, in the order added
	Created      time.Time
	Updated      time.Time
}

// Item is one mailbox item: a message (Kind api.KindMessage) in its
// receiver's mailbox, or a notice (api.KindNotice) in a sender's mailbox.
type Item struct {
	Kind    string
	Routing api.Routing
	// Owner is the mailbox the item sits in: the receiver of a message, the
	// sender of the message a notice is about.
	Owner string
	// State is an api.State* value. Notices use StateAccepted and
	// StateLeased only; an acked notice is deleted.
	State    string
	Attempts int
	// LeaseUntil is set while State is StateLeased.
	LeaseUntil time.Time
	History    []api.StateChange
	// Receipt is the gateway-signed accepted receipt of a message, or the
	// notice JWS of a notice.
	Receipt    string
	AcceptedAt time.Time
	// TerminalAt is when a message reached a terminal state.
	TerminalAt time.Time
}

// Terminal reports whether a message state is final.
func Terminal(state string) bool {
	switch state {
	case api.StateDelivered, api.StateRejected, api.StateExpired, api.StateDeadLettered:
		return true
	}
	return false
}

// NoticeItem builds the mailbox item of notice n about message m: it sits in
// m's sender's mailbox; its Routing is m's with ID = the notice id and
// InReplyTo = m's id.
func NoticeItem(m Item, n Notice, now time.Time) Item {
	r := m.Routing
	r.InReplyTo = m.Routing.ID
	r.ID = n.ID
	r.Size = 0
	return Item{
		Kind:       api.KindNotice,
		Routing:    r,
		Owner:      m.Routing.From,
		State:      api.StateAccepted,
		Receipt:    n.JWS,
		AcceptedAt: now,
		History:    []api.StateChange{{State: api.StateAccepted, At: now}},
	}
}

// Notice is a gateway notice to put into a sender's mailbox as part of a
// transition. ID is the notice id (NoticeClaims.ID) and becomes the mailbox
// item id; JWS is the signed notice.
type Notice struct {
	ID  string
	JWS string
}

// Payload is the ciphertext handed to Accept: either Inline bytes (small
// envelopes, kept inside the database) or a SpoolFile that the backend takes
// ownership of (moved into its storage) once the accept commits.
type Payload struct {
	Inline    []byte
	SpoolFile string
}

// PayloadReader reads a stored ciphertext.
type PayloadReader interface {
	io.ReadSeekCloser
	Size() int64
}

// Upload is the state of a partial (resumable) upload.
type Upload struct {
	Routing api.Routing
	Created time.Time
}

// MessageFilter selects messages for the operator list. Zero fields match
// everything.
type MessageFilter struct {
	State   string
	Account string // sender or receiver
	Type    string
	// OlderThan: accepted before this time.
	OlderThan time.Time
	Limit     int
}

// MailboxStat describes one account's mailbox for metrics.
type MailboxStat struct {
	Account string
	Depth   int       // items accepted or leased
	Oldest  time.Time // acceptance time of the oldest such item
}

// ChangeOp names a kind of committed change.
type ChangeOp string

// The changes a backend reports to its JournalFunc.
const (
	ChangeAccepted     ChangeOp = "accepted"      // Accept stored a new message
	ChangeLeased       ChangeOp = "leased"        // Lease took a message (one change each)
	ChangeDelivered    ChangeOp = "delivered"     // Ack moved a message to delivered
	ChangeRejected     ChangeOp = "rejected"      // Reject moved a message to rejected
	ChangeReleased     ChangeOp = "released"      // Release put a message back after its lease ended
	ChangeDeadLettered ChangeOp = "dead_lettered" // DeadLetter
	ChangeExpired      ChangeOp = "expired"       // Expire
	ChangeAccountPut   ChangeOp = "account_put"   // PutAccount
	ChangeAccountGone  ChangeOp = "account_gone"  // DeleteAccount
	ChangePurged       ChangeOp = "purged"        // Purge removed records
)

// Change describes one committed change. Message changes set Item (the
// message after the change) and, when the change put one into the
// sender's mailbox, Notice; ChangeRejected sets Reason (the code, without
// the detail). Catalog changes set Before (nil for a new account) and After
// (nil once removed). ChangePurged sets Count. Acks of notices, uploads and
// assertion ids are not reported: they are not state changes of a message
// or of the catalog.
type Change struct {
	Op            ChangeOp
	Item          Item
	Notice        *Notice
	Reason        string
	Before, After *Account
	Count         int
}

// AuditEntry is one audit record as the journal keeps it; the audit log
// adds its sequence number, time and hash chain when it is shipped there.
type AuditEntry struct {
	Actor, Action, Subject string
	Attrs                  map[string]string
}

// JournalFunc names the audit entries of a change. A backend calls it
// inside the change's transaction and commits what it returns together
// with the change. It must be quick, deterministic and must not call the
// backend; a backend opened without one keeps no journal.
type JournalFunc func(Change) []AuditEntry

// JournalEntry is an audit entry waiting in the journal. Seq orders the
// entries in commit order; it only grows, also across drops and reopens.
type JournalEntry struct {
	Seq uint64
	AuditEntry
}

// Store is the system of record.
type Store interface {
	// PutAccount creates or replaces an account.
	PutAccount(ctx context.Context, a Account) error
	// Account returns one account or ErrNotFound.
	Account(ctx context.Context, id string) (Account, error)
	// Accounts lists every account, ordered by id.
	Accounts(ctx context.Context) ([]Account, error)
	// DeleteAccount removes an account (ErrNotFound if absent). Messages
	// in flight are not touched.
	DeleteAccount(ctx context.Context, id string) error

	// UseJTI records a client assertion id until exp; ErrReplayed if it is
	// recorded and not yet past its exp. Entries past exp may be purged.
	UseJTI(ctx context.Context, jti string, exp, now time.Time) error

	// StartUpload records a partial upload's routing header (idempotent for
	// the same id and routing). PartialPath is where the bytes go.
	StartUpload(ctx context.Context, r api.Routing, now time.Time) (partialPath string, err error)
	// Upload returns a partial upload or ErrNotFound.
	Upload(ctx context.Context, id string) (Upload, string, error)
	// DropUpload forgets a partial upload and removes its bytes.
	DropUpload(ctx context.Context, id string) error
	// StaleUploads lists the ids of partial uploads that can never be
	// completed or were abandoned: their routing expired at or before now,
	// or they were started before startedBefore; at most limit.
	StaleUploads(ctx context.Context, now, startedBefore time.Time, limit int) ([]string, error)

	// Accept records a message in state accepted and puts it into its
	// receiver's mailbox, atomically and durably, with its accepted
	// receipt, and n (the accepted notice; nil for none) into its
	// sender's mailbox in the same transaction. If the id exists, it
	// returns the existing item and ErrExists and takes nothing (the
	// caller removes its spool file).
	Accept(ctx context.Context, it Item, p Payload, n *Notice) (Item, error)
	// Item returns a message or notice by id.
	Item(ctx context.Context, id string) (Item, error)
	// Payload opens a message's ciphertext (ErrNotFound once deleted).
	Payload(ctx context.Context, id string) (PayloadReader, error)
	// Messages lists messages (not notices) matching f, oldest first.
	Messages(ctx context.Context, f MessageFilter) ([]Item, error)
	// CountByState returns live counts of messages per state and type:
	// map[state]map[type]count.
	CountByState(ctx context.Context) (map[string]map[string]int, error)
	// Purge removes the records of messages terminal before cutoff, up to
	// limit; it returns how many it removed.
	Purge(ctx context.Context, cutoff time.Time, limit int) (int, error)

	// Journal returns up to max audit journal entries, oldest first, as
	// copies the caller may change.
	Journal(ctx context.Context, max int) ([]JournalEntry, error)
	// DropJournal removes the journal's entries up to and including
	// through, once they are shipped; entries committed later get
	// positions above through.
	DropJournal(ctx context.Context, through uint64) error

	Close() error
}

// Queue is the mailbox side.
type Queue interface {
	// Lease takes up to max items in order from account's mailbox, marks
	// them leased until until, counts an attempt, and returns them.
	Lease(ctx context.Context, account string, max int, now, until time.Time) ([]Item, error)
	// Ack completes an item of account's mailbox. A message goes to
	// delivered (n is the delivered notice for the sender) and its payload
	// is deleted; a notice is deleted (n is nil). An ack of a message
	// already delivered returns it with no change. ErrState for other
	// terminal states; ErrNotFound if account does not own id.
	Ack(ctx context.Context, account, id string, now time.Time, n *Notice) (Item, error)
	// Reject moves a message to rejected with reason and detail, with n
	// (the rejected notice) for the sender; payload deleted.
	Reject(ctx context.Context, account, id string, now time.Time, reason, detail string, n *Notice) (Item, error)
	// DueLeases lists items whose lease ended at or before now.
	DueLeases(ctx context.Context, now time.Time, limit int) ([]Item, error)
	// Release puts a leased item back into its mailbox (same position) if
	// it is still leased until leaseUntil; ErrStale otherwise.
	Release(ctx context.Context, id string, leaseUntil, now time.Time) error
	// DeadLetter moves a message still leased until leaseUntil to
	// dead_lettered with n (the failed notice); ErrStale otherwise.
	DeadLetter(ctx context.Context, id string, leaseUntil, now time.Time, n *Notice) error
	// DueExpiry lists non-terminal messages whose expiry is at or before
	// now, wherever they sit in their mailbox.
	DueExpiry(ctx context.Context, now time.Time, limit int) ([]Item, error)
	// Expire moves a non-terminal message to expired with n (the expired
	// notice); ErrStale if it is terminal already.
	Expire(ctx context.Context, id string, now time.Time, n *Notice) error
	// Mailboxes describes every non-empty mailbox.
	Mailboxes(ctx context.Context) ([]MailboxStat, error)
	// Wait returns a channel closed when account's mailbox may have new
	// visible items. Take it before Lease to not miss a wake-up.
	Wait(account string) <-chan struct{}
}
