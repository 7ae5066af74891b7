package schemas

import "time"

// Receipt type names (application receipts from the receiving agent).
const (
	TypeMottatt   = "no.kurer.kvittering.mottatt.v1"
	TypeAvvist    = "no.kurer.kvittering.avvist.v1"
	TypeBehandlet = "no.kurer.kvittering.behandlet.v1"
)

// Business message type names.
const (
	TypeSakOverforing            = "no.kurer.barnevern.sak.overforing.v1"
	TypeDokumentasjonForesporsel = "no.kurer.barnevern.dokumentasjon.foresporsel.v1"
	TypeDokumentasjonSvar        = "no.kurer.barnevern.dokumentasjon.svar.v1"
	TypeBekymringsmelding        = "no.kurer.barnevern.bekymringsmelding.v1"
	TypeRapportering             = "no.kurer.barnevern.rapportering.v1"
)

// Mottatt is the melding.json of a no.kurer.kvittering.mottatt.v1 receipt:
// the receiving agent opened, verified and durably stored the message.
type Mottatt struct {
	MessageID   string    `json:"melding_id"`
	MessageType string    `json:"meldingstype"`
	At          time.Time `json:"tidspunkt"`
}

// Reason is one cause of a rejection: a stable code, for schema errors the
// JSON pointer into the rejected melding.json, and a human-readable text
// that never contains the rejected values.
type Reason struct {
	Code    string `json:"kode"`
	Path    string `json:"sti,omitempty"`
	Message string `json:"melding,omitempty"`
}

// Avvist is the melding.json of a no.kurer.kvittering.avvist.v1 receipt: the
// receiver refused the message (envelope, schema or case-system reasons).
type Avvist struct {
	MessageID   string    `json:"melding_id"`
	MessageType string    `json:"meldingstype"`
	At          time.Time `json:"tidspunkt"`
	Reasons     []Reason  `json:"arsaker"`
}

// Behandlet is the melding.json of a no.kurer.kvittering.behandlet.v1
// receipt: the receiving case system has taken the message into a case.
type Behandlet struct {
	MessageID   string    `json:"melding_id"`
	MessageType string    `json:"meldingstype"`
	At          time.Time `json:"tidspunkt"`
	// CaseNumber is the receiver's case number (saksnummer), if it has one.
	CaseNumber string `json:"saksnummer,omitempty"`
	// Comment is an optional free text from the case system.
	Comment string `json:"kommentar,omitempty"`
}

// NewMottatt returns a mottatt receipt for the message; at is truncated to
// whole seconds in UTC.
func NewMottatt(messageID, messageType string, at time.Time) Mottatt {
	return Mottatt{MessageID: messageID, MessageType: messageType, At: receiptTime(at)}
}

// NewAvvist returns an avvist receipt for the message with the reasons (at
// least one is required by the schema).
func NewAvvist(messageID, messageType string, at time.Time, reasons []Reason) Avvist {
	r := make([]Reason, len(reasons))
	copy(r, reasons)
	return Avvist{MessageID: messageID, MessageType: messageType, At: receiptTime(at), Reasons: r}
}

// NewBehandlet returns a behandlet receipt for the message; caseNumber may
// be empty.
func NewBehandlet(messageID, messageType string, at time.Time, caseNumber string) Behandlet {
	return Behandlet{MessageID: messageID, MessageType: messageType, At: receiptTime(at), CaseNumber: caseNumber}
}

func receiptTime(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }
