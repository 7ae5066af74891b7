// Package localapi is the wire contract of the agent's local API, the one a
// case system, an external adapter or `kurer send` uses on the agent's host
// (127.0.0.1 or a unix socket, Bearer token). The agent serves it
// (agent/), Client (client.go) calls it. The normative description for other
// languages is agent/localapi/openapi.yaml, served at /openapi.yaml.
package localapi

import "time"

// Paths.
const (
	// PathMessages: POST multipart/form-data to send (fields below), answers
	// 202 SendResponse once the message is durably in the outbox.
	// GET ?direction=out|in&state=S&limit=N lists MessageSummary.
	PathMessages = "/v1/messages"
	// PathMessage: GET /v1/messages/{id}: MessageDetail (state history and
	// receipts). GET /v1/messages/{id}/files/{name}: a received file's bytes.
	// GET /v1/messages/{id}/manifest: the received manifest.json.
	// POST /v1/messages/{id}/processed, POST /v1/messages/{id}/rejected
	// (body RejectRequest): the receiving side's verdict, which sends the
	// signed behandlet/avvist receipt to the sender.
	PathMessage = "/v1/messages/"
	// PathEvents: GET ?after=SEQ&wait=30s: long-poll of state changes
	// (EventsResponse), for `kurer status --watch` and adapters.
	PathEvents = "/v1/events"
	// AfterLatest as the after of PathEvents starts at the newest event.
	AfterLatest = "latest"

	PathHealth  = "/healthz"
	PathReady   = "/readyz"
	PathOpenAPI = "/openapi.yaml"
)

// Multipart form fields of a send.
const (
	// FieldType: the message type (required).
	FieldType = "type"
	// FieldTo: the receiver: an account id (UUID), "municipality:NNNN" or
	// "org:NNNNNNNNN" (resolved through the gateway catalog with the type).
	FieldTo = "to"
	// FieldID: optional client-chosen message id (UUID) for idempotent
	// retries of the send itself; the same id with other content is refused.
	FieldID = "id"
	// FieldConversation, FieldInReplyTo: optional ids.
	FieldConversation = "conversation"
	FieldInReplyTo    = "in_reply_to"
	// FieldExpires: optional RFC 3339 expiry; default from the type.
	FieldExpires = "expires"
	// FieldMetadata: the business message JSON (validated against the type's
	// schema), carried in the envelope as MetadataFile.
	FieldMetadata = "metadata"
	// FieldFile: one part per payload file; the part's filename is its name
	// in the envelope (a relative path with / separators).
	FieldFile = "file"
)

// MetadataFile is the envelope file name of the business message JSON.
const MetadataFile = "melding.json"

// Directions.
const (
	DirectionOut = "out"
	DirectionIn  = "in"
)

// Outgoing states (docs/states.md): monotonic along
// queued -> sent -> delivered -> received -> processed, or a terminal
// rejected | expired | failed.
const (
	StateQueued    = "queued"
	StateSent      = "sent"
	StateDelivered = "delivered"
	StateReceived  = "received"
	StateProcessed = "processed"
	StateRejected  = "rejected"
	StateExpired   = "expired"
	StateFailed    = "failed"
)

// Incoming states.
const (
	InStored    = "stored"    // opened, verified, durably in the inbox
	InDelivered = "delivered" // handed to the adapter
	InProcessed = "processed" // the case system said so; behandlet receipt sent
	InRejected  = "rejected"  // refused; avvist receipt sent
)

// SendResponse answers an accepted send.
type SendResponse struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// StateChange is one step in a message's history.
type StateChange struct {
	State  string    `json:"state"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"` // a stable code
	Detail string    `json:"detail,omitempty"`
}

// Receipt is a gateway notice or an application receipt about a message.
type Receipt struct {
	// Kind: accepted|delivered|rejected|expired|failed (gateway) or
	// mottatt|avvist|behandlet (application receipt from the receiver).
	Kind string `json:"kind"`
	// At is when this agent received and verified the receipt (its own
	// clock); the issuer's claimed time is inside the signed receipt.
	At       time.Time `json:"at"`
	Issuer   string    `json:"issuer"`   // "gateway" or the receiver's account id
	Verified bool      `json:"verified"` // signature checked when it arrived
	// Signed is the receipt as received: a JWS for gateway notices, the
	// base64 of the receipt envelope's signature container for receipts.
	Signed string `json:"signed,omitempty"`
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// ID is the receipt envelope's message id (application receipts).
	ID string `json:"id,omitempty"`
	// Manifest is the base64 of the receipt envelope's signed
	// META-INF/manifest.json, so that Signed can be verified later
	// (application receipts).
	Manifest string `json:"manifest,omitempty"`
	// Reasons of an avvist receipt, with JSON paths for schema errors.
	Reasons []Reason `json:"reasons,omitempty"`
}

// MessageSummary is one row of a listing.
type MessageSummary struct {
	ID        string    `json:"id"`
	Direction string    `json:"direction"`
	Type      string    `json:"type"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	State     string    `json:"state"`
	Size      int64     `json:"size"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

// File describes a received payload file.
type File struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"` // hex
	MediaType string `json:"media_type,omitempty"`
}

// MessageDetail answers GET /v1/messages/{id}.
type MessageDetail struct {
	MessageSummary
	Conversation string        `json:"conversation,omitempty"`
	InReplyTo    string        `json:"in_reply_to,omitempty"`
	Expires      time.Time     `json:"expires"`
	History      []StateChange `json:"history"`
	Receipts     []Receipt     `json:"receipts"`
	Files        []File        `json:"files,omitempty"` // incoming only
	// Reasons why an incoming message was rejected.
	Reasons []Reason `json:"reasons,omitempty"`
}

// RejectRequest is the body of POST /v1/messages/{id}/rejected.
type RejectRequest struct {
	Reasons []Reason `json:"reasons"`
}

// Reason is one rejection reason: a stable code and, for schema errors, the
// JSON path.
type Reason struct {
	Code    string `json:"code"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message,omitempty"`
}

// Event is one state change, in order of Seq.
type Event struct {
	Seq       uint64    `json:"seq"`
	ID        string    `json:"id"`
	Direction string    `json:"direction"`
	State     string    `json:"state"`
	At        time.Time `json:"at"`
	Reason    string    `json:"reason,omitempty"`
}

// EventsResponse answers PathEvents.
type EventsResponse struct {
	Events []Event `json:"events"`
	Next   uint64  `json:"next"` // pass as after= next time
}

// ErrorBody is the JSON error body of the local API: the fields of every
// kurer error body (code, message, detail) and, for errs.SchemaInvalid,
// every schema error with its JSON path.
type ErrorBody struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Detail  string   `json:"detail,omitempty"`
	Errors  []Reason `json:"errors,omitempty"`
}
