package agent

import (
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/gateway/api"
)

// Reason codes recorded with state changes and sent in avvist receipts
// (docs/states.md). They are stable: new ones are added, none change meaning.
const (
	ReasonBadSignature      = "bad_signature"      // signature, chain or signer check failed
	ReasonInvalidEnvelope   = "invalid_envelope"   // could not be decrypted or parsed
	ReasonWrongReceiver     = "wrong_receiver"     // manifest/routing not addressed to this account
	ReasonBindingMismatch   = "binding_mismatch"   // manifest disagrees with the routing header
	ReasonSchemaInvalid     = "schema_invalid"     // melding.json does not match its schema
	ReasonUnknownSender     = "unknown_sender"     // sender not in the catalog
	ReasonMaxAttempts       = "max_attempts"       // upload retries exhausted
	ReasonExpiredLocally    = "expired_in_outbox"  // expired before the gateway accepted it
	ReasonGatewayRefused    = "gateway_refused"    // the gateway refused the upload for good
	ReasonReceiverRejected  = "receiver_rejected"  // avvist receipt without a more precise code
	ReasonCaseSystem        = "case_system"        // the case system refused (webhook 4xx, local API)
	ReasonLateEvent         = "late_event"         // recorded in history; state not changed
	ReasonReceiptUnsendable = "receipt_unsendable" // a receipt could not be sealed for the sender
)

// outRank orders the outgoing states; a change is applied only when it moves
// forward (see canAdvanceOut).
var outRank = map[string]int{
	localapi.StateQueued:    0,
	localapi.StateSent:      1,
	localapi.StateDelivered: 2,
	localapi.StateReceived:  3,
	localapi.StateProcessed: 4,
	localapi.StateRejected:  4,
	localapi.StateExpired:   4,
	localapi.StateFailed:    4,
}

// terminalOut reports whether s is a terminal outgoing state.
func terminalOut(s string) bool { return outRank[s] == 4 }

// canAdvanceOut reports whether an outgoing message in state cur may move to
// next. Terminal states never move. expired and failed apply only before the
// receiver has the message (queued, sent): once delivered, a case file is the
// receiver's and only the receiver's verdict (processed, rejected) counts.
func canAdvanceOut(cur, next string) bool {
	if terminalOut(cur) {
		return false
	}
	switch next {
	case localapi.StateExpired, localapi.StateFailed:
		return outRank[cur] < outRank[localapi.StateDelivered]
	}
	return outRank[next] > outRank[cur]
}

// inRank orders the incoming states.
var inRank = map[string]int{
	localapi.InStored:    0,
	localapi.InDelivered: 1,
	localapi.InProcessed: 2,
	localapi.InRejected:  2,
}

func canAdvanceIn(cur, next string) bool {
	if inRank[cur] == 2 {
		return false
	}
	return inRank[next] > inRank[cur]
}

// noticeState maps a gateway notice event to the outgoing state it feeds.
func noticeState(event string) (string, bool) {
	switch event {
	case api.EventAccepted:
		return localapi.StateSent, true
	case api.EventDelivered:
		return localapi.StateDelivered, true
	case api.EventRejected:
		return localapi.StateRejected, true
	case api.EventExpired:
		return localapi.StateExpired, true
	case api.EventFailed:
		return localapi.StateFailed, true
	}
	return "", false
}

// Receipt kinds of application receipts.
const (
	KindMottatt   = "mottatt"
	KindAvvist    = "avvist"
	KindBehandlet = "behandlet"
)

// receiptState maps an application receipt kind to the outgoing state.
func receiptState(kind string) (string, bool) {
	switch kind {
	case KindMottatt:
		return localapi.StateReceived, true
	case KindBehandlet:
		return localapi.StateProcessed, true
	case KindAvvist:
		return localapi.StateRejected, true
	}
	return "", false
}
