package schemas

import (
	"errors"
	"strings"
)

// ErrUnknownType is wrapped by the error Validate returns for a type the
// registry does not know.
var ErrUnknownType = errors.New("unknown message type")

// Stable FieldError codes. They travel in avvist receipts
// (no.kurer.kvittering.avvist.v1) and never change meaning; new ones are
// added, none is renamed. docs/message-types.md lists them.
const (
	// Limits and syntax, checked before the JSON parser builds a value.
	CodeTooLarge      = "too_large"       // melding.json is larger than MaxMeldingSize
	CodeTooDeep       = "too_deep"        // JSON nesting deeper than MaxDepth
	CodeEncoding      = "encoding"        // not valid UTF-8
	CodeSyntax        = "syntax"          // not one well-formed JSON value
	CodeDuplicateKey  = "duplicate_key"   // the same member name twice in one object
	CodeTooManyErrors = "too_many_errors" // the last error when more than MaxErrors were found

	// JSON Schema keywords.
	CodeRequired           = "required"
	CodeType               = "type"
	CodeAdditionalProperty = "additional_property"
	CodeEnum               = "enum"
	CodeConst              = "const"
	CodePattern            = "pattern"
	CodeFormat             = "format"
	CodeMinLength          = "min_length"
	CodeMaxLength          = "max_length"
	CodeMinItems           = "min_items"
	CodeMaxItems           = "max_items"
	CodeUniqueItems        = "unique_items"
	CodeMinimum            = "minimum"
	CodeMaximum            = "maximum"
	CodeOneOf              = "one_of"
	CodeAnyOf              = "any_of"
	CodeNot                = "not"
	CodeNotAllowed         = "not_allowed" // a field the other fields forbid (e.g. navn of an anonymous reporter)
	CodeSchema             = "schema"      // any other keyword

	// Checks done in Go after the schema.
	CodeChecksum         = "checksum"         // mod-11 control digit of a fødselsnummer, D-number or org number
	CodeImplausibleDate  = "implausible_date" // the date inside a fødselsnummer is not a calendar date
	CodeBirthDate        = "birth_date"       // fodselsdato does not match the fødselsnummer
	CodeDocumentMissing  = "document_missing" // a listed document's file is not in the envelope
	CodeFileUnlisted     = "file_unlisted"    // an envelope file is not in the document list
	CodeDuplicateFile    = "duplicate_file"   // two list entries name the same file
	CodeRequiredFile     = "required_file_missing"
	CodePayloadMissing   = "payload_missing"   // the type requires at least one payload file
	CodeAnswerReference  = "answer_reference"  // a reference to another message or request item is wrong
	CodeRange            = "range"             // a from/to pair is reversed, or a date is outside its period
	CodeSameMunicipality = "same_municipality" // sender and receiver municipality are the same
	CodeDuplicateID      = "duplicate_id"      // an id used twice in one list
	CodeEmptyAnswer      = "empty_answer"      // a svar with neither documents nor ikke_levert
)

// FieldError is one validation error at a JSON pointer into melding.json
// ("" is the whole document).
type FieldError struct {
	Path    string `json:"path"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// String formats the error as "PATH: message"; the root is shown as "/".
func (e FieldError) String() string {
	p := e.Path
	if p == "" {
		p = "/"
	}
	return p + ": " + e.Message
}

// ValidationError is a message that does not meet its type's schema or the
// checks after it. Messages never echo the offending values, so the error
// may be logged and sent in a receipt without leaking personal data.
type ValidationError struct {
	Type   string
	Errors []FieldError
}

// Error returns one line per error, "PATH: message".
func (e *ValidationError) Error() string {
	var b strings.Builder
	for i, fe := range e.Errors {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(fe.String())
	}
	return b.String()
}

// Reasons converts the errors into avvist receipt reasons.
func (e *ValidationError) Reasons() []Reason {
	out := make([]Reason, len(e.Errors))
	for i, fe := range e.Errors {
		out[i] = Reason{Code: fe.Code, Path: fe.Path, Message: fe.Message}
	}
	return out
}
