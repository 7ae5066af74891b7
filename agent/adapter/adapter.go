// Package adapter is the contract between the agent and the code that
// connects it to a case system, a report producer or a register. The agent
// owns the contract; adapters implement it:
//
//   - every adapter is an Adapter: it has a Name and a Run loop, which gets a
//     Host (the agent) to send cases, follow state changes and give verdicts;
//   - an adapter that takes incoming messages also implements Receiver.
//
// Built-in adapters live in sub-packages (adapter/folder, adapter/webhook) and
// register a Factory under their kind in init, so that an agent config can
// name them. A registry panics on duplicate kinds.
package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/kurer/kurer/agent/localapi"
)

// Adapter is a connection to a case system.
type Adapter interface {
	// Name identifies the adapter instance in logs and metrics.
	Name() string
	// Run works until ctx ends (then it returns nil or ctx.Err()). An error
	// return stops the agent, and so does a panic, as an error (the agent
	// shuts down in order instead of dying mid-write).
	Run(ctx context.Context, h Host) error
}

// Receiver is an Adapter that takes incoming messages. The agent calls
// Deliver once per message, and again (same id) after a failure or a crash
// before the delivery was recorded: Deliver must be idempotent by d.ID.
// A nil return records the message as delivered; an error retries it later
// with backoff, and so does a panic in Deliver (the agent recovers it and
// logs its stack, not its value). To refuse a message for good, call
// Host.Rejected and return nil.
type Receiver interface {
	Adapter
	Deliver(ctx context.Context, h Host, d Delivery) error
}

// Receives is an optional interface of a Receiver whose configuration may
// take no incoming messages (a folder adapter with only an outbox): when
// Receives returns false the agent does not count it as the receiver, so
// another adapter can take the messages.
type Receives interface {
	Receives() bool
}

// IsReceiver reports whether a takes incoming messages.
func IsReceiver(a Adapter) (Receiver, bool) {
	r, ok := a.(Receiver)
	if !ok {
		return nil, false
	}
	if o, ok := a.(Receives); ok && !o.Receives() {
		return nil, false
	}
	return r, true
}

// Host is the agent as an adapter sees it.
type Host interface {
	// Send validates, seals and durably queues a case; the returned id is
	// the message id (c.ID when set, which makes the send idempotent).
	Send(ctx context.Context, c Case) (localapi.SendResponse, error)
	// Message returns a message's state, history and receipts.
	Message(ctx context.Context, id string) (localapi.MessageDetail, error)
	// Events long-polls state changes with Seq > after, waiting up to wait.
	Events(ctx context.Context, after uint64, wait time.Duration) (localapi.EventsResponse, error)
	// Processed marks an incoming message processed and sends the signed
	// behandlet receipt to its sender. Idempotent.
	Processed(ctx context.Context, id string) error
	// Rejected marks an incoming message rejected and sends the signed
	// avvist receipt with reasons. Idempotent.
	Rejected(ctx context.Context, id string, reasons []localapi.Reason) error
}

// Case is an outgoing case handed to Host.Send.
type Case struct {
	Type         string    // message type (required)
	To           string    // account id, "municipality:NNNN" or "org:NNNNNNNNN"
	ID           string    // optional client-chosen message id (UUID)
	Conversation string    // optional
	InReplyTo    string    // optional
	Expires      time.Time // optional; zero = the type's default lifetime
	Metadata     []byte    // melding.json, validated against the type's schema
	Files        []File    // payload files, read when the case is sealed
}

// File is one payload file of a Case, read from Path.
type File struct {
	Name      string // name in the envelope: relative, "/" separators
	MediaType string // optional; guessed from the name when empty
	Path      string // where the bytes are
}

// Delivery is one incoming message handed to a Receiver.
type Delivery struct {
	ID           string
	Type         string
	From         string
	To           string
	Conversation string
	InReplyTo    string
	Created      time.Time
	Expires      time.Time
	// Dir holds the payload files (read-only for the adapter), including
	// localapi.MetadataFile.
	Dir   string
	Files []localapi.File
	// Manifest and Signature are the envelope's META-INF/manifest.json and
	// META-INF/signature.p7s: the sender's signed statement of the content.
	Manifest  []byte
	Signature []byte
	// ReceiptID is the id of the signed mottatt receipt sent to the sender.
	ReceiptID string
}

// MessageInfo is what adapters tell a case system about a delivered
// message besides its files: routing, dates, the mottatt receipt's id and
// the file list (the folder adapter's message.json, the webhook's metadata
// part).
type MessageInfo struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	From         string          `json:"from"`
	To           string          `json:"to"`
	Conversation string          `json:"conversation,omitempty"`
	InReplyTo    string          `json:"in_reply_to,omitempty"`
	Created      time.Time       `json:"created"`
	Expires      time.Time       `json:"expires"`
	ReceiptID    string          `json:"receipt_id,omitempty"`
	Files        []localapi.File `json:"files"`
}

// Info is d's MessageInfo.
func (d Delivery) Info() MessageInfo {
	return MessageInfo{ID: d.ID, Type: d.Type, From: d.From, To: d.To, Conversation: d.Conversation,
		InReplyTo: d.InReplyTo, Created: d.Created, Expires: d.Expires, ReceiptID: d.ReceiptID, Files: d.Files}
}

// Factory builds an adapter named name; decode fills its config struct
// strictly (unknown fields are errors). log is the agent's logger for the
// adapter's own messages (never payloads or personal data).
type Factory func(name string, decode func(v any) error, log *slog.Logger) (Adapter, error)

var (
	regMu    sync.RWMutex
	registry = map[string]Factory{}
)

// Register makes a Factory available under kind. It panics if kind is empty,
// f is nil or kind is already registered.
func Register(kind string, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	if kind == "" || f == nil {
		panic("adapter: Register with empty kind or nil factory")
	}
	if _, dup := registry[kind]; dup {
		panic(fmt.Sprintf("adapter: kind %q registered twice", kind))
	}
	registry[kind] = f
}

// RegisterNew registers kind with a Factory that decodes an adapter's
// options strictly into a C and builds the adapter with newAdapter (the
// built-in adapters' New functions have this shape).
func RegisterNew[C any, A Adapter](kind string, newAdapter func(name string, c C, log *slog.Logger) (A, error)) {
	Register(kind, func(name string, decode func(v any) error, log *slog.Logger) (Adapter, error) {
		var c C
		if err := decode(&c); err != nil {
			return nil, fmt.Errorf("%s adapter options: %w", kind, err)
		}
		a, err := newAdapter(name, c, log)
		if err != nil {
			return nil, err
		}
		return a, nil
	})
}

// ErrUnknownKind is returned by New for an unregistered kind.
var ErrUnknownKind = errors.New("unknown adapter kind")

// New builds an adapter of kind.
// A nil log discards.
func New(kind, name string, decode func(v any) error, log *slog.Logger) (Adapter, error) {
	regMu.RLock()
	f, ok := registry[kind]
	regMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %v)", ErrUnknownKind, kind, Kinds())
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return f(name, decode, log)
}

// Kinds lists the registered kinds, sorted.
func Kinds() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]string, 0, len(registry))
	for k := range registry {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
