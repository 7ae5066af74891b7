// Package errs is kurer's catalogue of public error codes. At every trust
// boundary (HTTP APIs, receipts, CLI exit) an internal cause is kept apart from
// the public face: a stable Code, an HTTP status, and a fixed message that
// reveals nothing of internals. Internal causes are logged, never sent.
package errs

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
)

// Code is a stable, documented error code. Codes never change meaning; new
// ones are added at the end of their group.
type Code string

// The catalogue. docs/errors.md lists them for integrators.
const (
	// Request shape.
	BadRequest       Code = "bad_request"
	MalformedJSON    Code = "malformed_json"
	TooLarge         Code = "too_large"
	DigestMismatch   Code = "digest_mismatch"
	SizeMismatch     Code = "size_mismatch"
	InvalidHeader    Code = "invalid_routing_header"
	NotFound         Code = "not_found"
	MethodNotAllowed Code = "method_not_allowed"
	// RangeNotSatisfiable: a download's Range header is malformed or lies
	// wholly beyond the end (Content-Range: bytes */SIZE says the size).
	RangeNotSatisfiable Code = "range_not_satisfiable"
	// PreconditionFailed: a download's If-Match (or If-Unmodified-Since)
	// does not hold for the envelope.
	PreconditionFailed Code = "precondition_failed"

	// Authentication and authorisation.
	Unauthenticated  Code = "unauthenticated"
	InvalidAssertion Code = "invalid_client_assertion"
	ReplayedJTI      Code = "replayed_assertion"
	TokenExpired     Code = "token_expired"
	Forbidden        Code = "forbidden"
	OperatorOnly     Code = "operator_role_required"

	// Routing and delivery.
	UnknownReceiver Code = "unknown_receiver"
	UnknownSender   Code = "unknown_sender"
	UnknownType     Code = "unknown_message_type"
	TypeNotAccepted Code = "type_not_accepted_by_receiver"
	Expired         Code = "expired"
	Conflict        Code = "id_conflict"
	NotDeliverable  Code = "not_deliverable"
	// UploadOffset: a resumed upload's Content-Range does not start where
	// the gateway's partial upload ends (Upload-Offset says where).
	UploadOffset Code = "upload_offset_mismatch"
	// AmbiguousReceiver: a receiver given by municipality or org number
	// is answered by more than one account for the type; the sender must
	// give the account id.
	AmbiguousReceiver Code = "ambiguous_receiver"
	// CatalogConflict: an account would make a (municipality, type) or
	// (org number, type) pair answer to more than one account.
	CatalogConflict Code = "catalog_conflict"

	// Envelope opening (one uniform class to outsiders).
	InvalidEnvelope Code = "invalid_envelope"
	SchemaInvalid   Code = "schema_invalid"
	WrongReceiver   Code = "wrong_receiver"

	// Server side.
	Unavailable Code = "unavailable"
	Internal    Code = "internal_error"
)

var catalogue = map[Code]struct {
	status int
	msg    string
}{
	BadRequest:          {http.StatusBadRequest, "the request is not valid"},
	MalformedJSON:       {http.StatusBadRequest, "the request body is not valid JSON for this endpoint"},
	TooLarge:            {http.StatusRequestEntityTooLarge, "the request is larger than allowed"},
	DigestMismatch:      {http.StatusBadRequest, "the body does not match the declared digest"},
	SizeMismatch:        {http.StatusBadRequest, "the body does not match the declared size"},
	InvalidHeader:       {http.StatusBadRequest, "the routing header is missing or invalid"},
	NotFound:            {http.StatusNotFound, "not found"},
	MethodNotAllowed:    {http.StatusMethodNotAllowed, "method not allowed"},
	RangeNotSatisfiable: {http.StatusRequestedRangeNotSatisfiable, "the requested range cannot be served"},
	PreconditionFailed:  {http.StatusPreconditionFailed, "a precondition of the request does not hold"},
	Unauthenticated:     {http.StatusUnauthorized, "authentication required"},
	InvalidAssertion:    {http.StatusUnauthorized, "the client assertion was not accepted"},
	ReplayedJTI:         {http.StatusUnauthorized, "the client assertion was already used"},
	TokenExpired:        {http.StatusUnauthorized, "the access token has expired"},
	Forbidden:           {http.StatusForbidden, "not allowed for this account"},
	OperatorOnly:        {http.StatusForbidden, "this endpoint requires the operator role"},
	UnknownReceiver:     {http.StatusUnprocessableEntity, "the receiver is not a known account"},
	UnknownSender:       {http.StatusUnprocessableEntity, "the sender is not a known account"},
	UnknownType:         {http.StatusUnprocessableEntity, "the message type is not known"},
	TypeNotAccepted:     {http.StatusUnprocessableEntity, "the receiver does not accept this message type"},
	Expired:             {http.StatusUnprocessableEntity, "the message has expired"},
	Conflict:            {http.StatusConflict, "a message with this id and other content exists"},
	NotDeliverable:      {http.StatusConflict, "the message cannot be delivered in its current state"},
	UploadOffset:        {http.StatusConflict, "the upload does not continue where the stored part ends"},
	AmbiguousReceiver:   {http.StatusUnprocessableEntity, "more than one account answers to this receiver; give the account id"},
	CatalogConflict:     {http.StatusConflict, "another account already receives this type for the same municipality or organisation number"},
	InvalidEnvelope:     {http.StatusUnprocessableEntity, "the envelope could not be opened and verified"},
	SchemaInvalid:       {http.StatusUnprocessableEntity, "the message content does not match its schema"},
	WrongReceiver:       {http.StatusUnprocessableEntity, "the message is not addressed to this account"},
	Unavailable:         {http.StatusServiceUnavailable, "the service is temporarily unavailable"},
	Internal:            {http.StatusInternalServerError, "internal error"},
}

// Status is the HTTP status for c (500 for an unknown code).
func (c Code) Status() int {
	if e, ok := catalogue[c]; ok {
		return e.status
	}
	return http.StatusInternalServerError
}

// Message is the fixed public message for c.
func (c Code) Message() string {
	if e, ok := catalogue[c]; ok {
		return e.msg
	}
	return catalogue[Internal].msg
}

// Codes lists every code in the catalogue, sorted.
func Codes() []Code {
	out := make([]Code, 0, len(catalogue))
	for c := range catalogue {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// Error carries a public Code, an optional public Detail safe to show to the
// caller (e.g. a JSON path of a schema error), and the internal Cause, which
// is for logs only.
type Error struct {
	Code   Code
	Detail string
	Cause  error
}

func (e *Error) Error() string {
	s := string(e.Code)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Cause }

// New returns an *Error with code c wrapping cause (may be nil).
func New(c Code, cause error) *Error { return &Error{Code: c, Cause: cause} }

// Newf returns an *Error with a public detail.
func Newf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Detail: fmt.Sprintf(format, args...)}
}

// CodeOf extracts the public code of err: the Code of the first *Error in
// its chain, or Internal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// Body is the JSON error body of every kurer HTTP API.
type Body struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Detail  string `json:"detail,omitempty"`
}

// Write sends err as a JSON error body with the status of its code. Only the
// code, its fixed message and the public detail are written; the cause is not.
func Write(w http.ResponseWriter, err error) {
	b := Body{Code: Internal}
	var e *Error
	if errors.As(err, &e) {
		b.Code, b.Detail = e.Code, e.Detail
	}
	b.Message = b.Code.Message()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(b.Code.Status())
	_ = json.NewEncoder(w).Encode(b)
}

// FromResponse decodes an error body read from an HTTP response into an
// *Error (a client-side helper). status is used when the body is not ours.
func FromResponse(status int, body []byte) *Error {
	var b Body
	if err := json.Unmarshal(body, &b); err != nil || b.Code == "" {
		return &Error{Code: statusCode(status), Detail: fmt.Sprintf("HTTP %d", status)}
	}
	return &Error{Code: b.Code, Detail: b.Detail}
}

func statusCode(status int) Code {
	switch status {
	case http.StatusUnauthorized:
		return Unauthenticated
	case http.StatusForbidden:
		return Forbidden
	case http.StatusNotFound:
		return NotFound
	case http.StatusMethodNotAllowed:
		return MethodNotAllowed
	case http.StatusRequestEntityTooLarge:
		return TooLarge
	case http.StatusRequestedRangeNotSatisfiable:
		return RangeNotSatisfiable
	case http.StatusPreconditionFailed:
		return PreconditionFailed
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return Unavailable
	}
	if status >= 400 && status < 500 {
		return BadRequest
	}
	return Internal
}
