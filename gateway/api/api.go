// Package api is the wire contract of the kurer gateway's HTTP API: paths,
// headers and JSON bodies shared by the gateway server (gateway/), its Go
// client (gateway/client) and the agents. The normative description for other
// languages is gateway/openapi.yaml, served by the gateway at /openapi.yaml.
//
// The gateway sees only what is here: ids, sender, receiver, type, expiry,
// size and digest. Envelope bytes are ciphertext it cannot open.
package api

import (
	"time"

	"github.com/kurer/kurer/internal/errs"
)

// Paths. {id} is a message id (UUID), {account} an account id (UUID).
const (
	// PathToken: POST, form grant_type=client_credentials,
	// client_assertion_type=AssertionType, client_assertion=<JWT>.
	// Answers TokenResponse.
	PathToken = "/v1/token"
	// PathJWKS: GET, the gateway's public signing keys (receipts, notices).
	PathJWKS = "/.well-known/jwks.json"
	// PathAccounts: GET ?municipality=NNNN|org=NNNNNNNNN [&type=T]: lookup for
	// agents; answers []Account. Requires an access token.
	PathAccounts = "/v1/accounts"
	// PathAccount: GET /v1/accounts/{account}: one Account.
	PathAccount = "/v1/accounts/"
	// PathMessages: PUT /v1/messages/{id}: submit (body = envelope bytes,
	// routing header in the headers below). HEAD /v1/messages/{id}: upload
	// offset of a partial upload (HeaderUploadOffset). GET
	// /v1/messages/{id}/status: MessageStatus, for sender or receiver.
	PathMessages = "/v1/messages/"
	// PathMailbox: GET /v1/mailbox?wait=30s&max=N: long-poll the caller's
	// mailbox; answers MailboxResponse (JSON, or multipart: see
	// MediaMultipart). GET /v1/mailbox/{id}/content: the
	// envelope bytes (Range supported). POST /v1/mailbox/{id}/ack: taken,
	// durably. POST /v1/mailbox/{id}/reject with RejectRequest.
	PathMailbox = "/v1/mailbox"
	// Operator endpoints (operator credential as Bearer token):
	// /v1/admin/accounts[/{account}[/certs[/{fingerprint}]]] and
	// GET /v1/admin/messages?state=&account=&type=&older_than=.
	PathAdmin = "/v1/admin/"

	PathHealth  = "/healthz"
	PathReady   = "/readyz"
	PathOpenAPI = "/openapi.yaml"
)

// AssertionType is the OAuth client_assertion_type of RFC 7523.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Routing header of a submit (PUT /v1/messages/{id}).
const (
	HeaderFrom    = "Kurer-From"    // sender account id
	HeaderTo      = "Kurer-To"      // receiver account id
	HeaderType    = "Kurer-Type"    // message type, e.g. no.kurer.barnevern.sak.overforing.v1
	HeaderExpires = "Kurer-Expires" // RFC 3339 UTC
	// HeaderDigest is RFC 9530 Content-Digest of the whole envelope:
	// "sha-256=:<base64>:". Content-Length is the total size.
	HeaderDigest = "Content-Digest"
	// HeaderConversation and HeaderInReplyTo are optional ids for threads
	// and receipts.
	HeaderConversation = "Kurer-Conversation"
	HeaderInReplyTo    = "Kurer-In-Reply-To"
	// HeaderUploadOffset answers HEAD on a partial upload: bytes durably
	// held. A resumed PUT then sends Content-Range: bytes OFF-END/TOTAL.
	HeaderUploadOffset = "Upload-Offset"
	// HeaderSize is the total envelope size when Content-Length is of a part.
	HeaderSize = "Kurer-Size"
	// HeaderMessageID names the message whose envelope a part of a
	// multipart poll answer carries.
	HeaderMessageID = "Kurer-Message-Id"
)

// Media types of the poll answer. A poll whose Accept names
// MediaMultipart (e.g. "multipart/mixed, application/json;q=0.5") is
// answered multipart/mixed (RFC 2046): first a MediaJSON part with the
// MailboxResponse, every Content left out, then one MediaOctetStream part
// per item that carries its envelope inline, in item order, with
// HeaderMessageID and HeaderDigest. Items without a part are downloaded.
// Any other poll is answered MediaJSON, inline envelopes in Content.
const (
	MediaJSON        = "application/json"
	MediaMultipart   = "multipart/mixed"
	MediaOctetStream = "application/octet-stream"
)

// TokenResponse answers PathToken (RFC 6749 shape).
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"` // "Bearer"
	ExpiresIn   int    `json:"expires_in"` // seconds
}

// Certificate is one of an account's certificates.
type Certificate struct {
	PEM         string    `json:"pem"`
	Fingerprint string    `json:"fingerprint"` // hex SHA-256 of DER
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
}

// Account is an addressable mailbox in the catalog.
type Account struct {
	ID           string        `json:"id"`
	Name         string        `json:"name"`
	OrgNumber    string        `json:"org_number"`             // 9 digits, mod-11
	Municipality string        `json:"municipality,omitempty"` // 4 digits
	Service      string        `json:"service,omitempty"`      // e.g. "barneverntjenesten"
	Types        []string      `json:"types"`                  // message types it receives
	Certificates []Certificate `json:"certificates"`
}

// Routing is the routing header of one message.
type Routing struct {
	ID           string    `json:"id"`
	From         string    `json:"from"`
	To           string    `json:"to"`
	Type         string    `json:"type"`
	Expires      time.Time `json:"expires"`
	Size         int64     `json:"size"`
	Digest       string    `json:"digest"` // "sha-256=:<base64>:"
	Conversation string    `json:"conversation,omitempty"`
	InReplyTo    string    `json:"in_reply_to,omitempty"`
}

// SameSubmit reports whether o repeats the submit r: every routing field
// equal. Submit is idempotent only for such a repeat; the same bytes with
// another receiver, type, expiry or reference are a conflict, not the
// first submit's answer (which would tell the sender that a message it
// never sent was accepted).
func (r Routing) SameSubmit(o Routing) bool {
	return r.ID == o.ID && r.From == o.From && r.To == o.To && r.Type == o.Type &&
		r.Expires.Equal(o.Expires) && r.Size == o.Size && r.Digest == o.Digest &&
		r.Conversation == o.Conversation && r.InReplyTo == o.InReplyTo
}

// SubmitResponse answers an accepted submit (201 first time, 200 for an
// idempotent repeat with the same digest).
type SubmitResponse struct {
	ID      string `json:"id"`
	State   string `json:"state"`   // "accepted"
	Receipt string `json:"receipt"` // gateway-signed JWS, claims = NoticeClaims
}

// Item kinds in a mailbox.
const (
	KindMessage = "message" // an envelope to download from .../content
	KindNotice  = "notice"  // a gateway notice; Notice holds the JWS
)

// MailboxItem is one delivery offered to the mailbox owner. It stays leased to
// the caller until acked or rejected; unacked, it is offered again after the
// lease ends.
type MailboxItem struct {
	Kind    string  `json:"kind"`
	Routing Routing `json:"routing"`
	Attempt int     `json:"attempt"`
	// LeaseUntil: ack before this time, or the item is offered again.
	LeaseUntil time.Time `json:"lease_until"`
	// Notice is set for KindNotice: a gateway-signed JWS with NoticeClaims.
	Notice string `json:"notice,omitempty"`
	// Content is the envelope itself when the poll asked for small ones
	// inline (?inline=BYTES) and this one fits; otherwise download it.
	// Base64 in a JSON answer; in a multipart answer it is left out here
	// and comes raw in its own part. Check it against Routing.Digest like
	// a download.
	Content []byte `json:"content,omitempty"`
}

// MailboxResponse answers a long poll. Items is empty when the wait ended.
type MailboxResponse struct {
	Items []MailboxItem `json:"items"`
}

// MaxAckBatch bounds the ids of one POST /v1/mailbox/ack.
const MaxAckBatch = 256

// AckRequest is the body of POST /v1/mailbox/ack: several items acked at
// once (at most MaxAckBatch ids, each once).
type AckRequest struct {
	IDs []string `json:"ids"`
}

// AckResponse answers POST /v1/mailbox/ack: the ids that were not acked,
// each with its error code (e.g. not_found); every other id is acked.
type AckResponse struct {
	Failed []AckFailure `json:"failed"`
}

// AckFailure is one id of an AckRequest that was not acked.
type AckFailure struct {
	ID   string    `json:"id"`
	Code errs.Code `json:"code"`
}

// RejectRequest is the body of POST /v1/mailbox/{id}/reject.
type RejectRequest struct {
	Reason string `json:"reason"` // a code, e.g. errs.InvalidEnvelope
	Detail string `json:"detail,omitempty"`
}

// Gateway notice events (NoticeClaims.Event).
const (
	EventAccepted  = "accepted"
	EventDelivered = "delivered"
	EventRejected  = "rejected"
	EventExpired   = "expired"
	EventFailed    = "failed"
)

// NoticeClaims are the JWS payload of a gateway receipt or notice. The JWS
// is signed with a key from the gateway's JWKS (kid in the protected header).
type NoticeClaims struct {
	Issuer    string    `json:"iss"`          // gateway id
	ID        string    `json:"jti"`          // notice id (UUID)
	IssuedAt  int64     `json:"iat"`          // unix seconds
	Event     string    `json:"event"`        // Event* above
	MessageID string    `json:"message_id"`   // the message it is about
	From      string    `json:"from"`         // sender of that message
	To        string    `json:"to"`           // receiver of that message
	Type      string    `json:"message_type"` // its type
	Digest    string    `json:"digest"`       // its ciphertext digest
	Reason    string    `json:"reason,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	At        time.Time `json:"at"`
}

// Gateway-side message states in MessageStatus.
const (
	StateAccepted     = "accepted"
	StateLeased       = "leased"
	StateDelivered    = "delivered"
	StateRejected     = "rejected"
	StateExpired      = "expired"
	StateDeadLettered = "dead_lettered"
)

// StateChange is one step of a message's history at the gateway.
type StateChange struct {
	State  string    `json:"state"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// MaxMessagesListed is the most messages one operator list answer
// (GET /v1/admin/messages) holds, oldest first; a full answer may have left
// some out.
const MaxMessagesListed = 1000

// MessageStatus answers GET /v1/messages/{id}/status and the operator list.
type MessageStatus struct {
	Routing  Routing       `json:"routing"`
	State    string        `json:"state"`
	Attempts int           `json:"attempts"`
	History  []StateChange `json:"history"`
}

// AccountRequest is the body of POST /v1/admin/accounts (create; ID is
// optional, a UUID is made when empty) and PUT /v1/admin/accounts/{account}
// (update of the descriptive fields; Certificates must be empty there, use
// the certs endpoints).
type AccountRequest struct {
	ID           string   `json:"id,omitempty"`
	Name         string   `json:"name"`
	OrgNumber    string   `json:"org_number"`
	Municipality string   `json:"municipality,omitempty"`
	Service      string   `json:"service,omitempty"`
	Types        []string `json:"types"`
	Certificates []string `json:"certificates,omitempty"` // PEM, one certificate each
}

// CertificateRequest is the body of POST /v1/admin/accounts/{account}/certs.
type CertificateRequest struct {
	PEM string `json:"pem"`
}

// Notice items: a MailboxItem of KindNotice has Routing.ID = the notice id
// (NoticeClaims.ID, the id to ack), Routing.InReplyTo = the message it is
// about, and From/To/Type/Digest/Expires copied from that message.

// PathAdminAccounts and PathAdminMessages are the operator endpoints under
// PathAdmin.
const (
	PathAdminAccounts = "/v1/admin/accounts"
	PathAdminMessages = "/v1/admin/messages"
)
