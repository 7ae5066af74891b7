package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/durable"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/schemas"
)

// receiptNamespace makes receipt ids deterministic: the receipt of kind K for
// message M always has the same id, so that queueing it again after a crash
// is a no-op in the outbox and at the gateway.
var receiptNamespace = uuid.MustParse("6f1c7c1e-5a43-4d6e-9a53-0d3c1a2b7e10")

func receiptID(messageID, kind string) string {
	return uuid.NewSHA1(receiptNamespace, []byte(messageID+"/"+kind)).String()
}

func receiptType(kind string) string {
	switch kind {
	case KindMottatt:
		return schemas.TypeMottatt
	case KindAvvist:
		return schemas.TypeAvvist
	case KindBehandlet:
		return schemas.TypeBehandlet
	}
	return ""
}

func receiptKind(msgType string) string {
	switch msgType {
	case schemas.TypeMottatt:
		return KindMottatt
	case schemas.TypeAvvist:
		return KindAvvist
	case schemas.TypeBehandlet:
		return KindBehandlet
	}
	return ""
}

// sendReceipts queues the application receipts an incoming message owes its
// sender, each under its deterministic id.
func (a *Agent) sendReceipts(ctx context.Context, id string) error {
	rec, err := a.store.getIn(id)
	if err != nil {
		return err
	}
	if rec.NeedAck {
		return nil // the gateway's ack comes first
	}
	for _, p := range rec.PendingReceipts {
		rid := receiptID(rec.ID, p.Kind)
		melding, err := receiptMelding(p, rec, a.now())
		if err != nil {
			return err
		}
		_, serr := a.send(ctx, adapter.Case{
			Type: receiptType(p.Kind), To: rec.From, ID: rid,
			Conversation: rec.Conversation, InReplyTo: rec.ID, Metadata: melding,
		}, true)
		if serr != nil {
			if errors.Is(serr, ErrHalted) || a.halted.Load() {
				return ErrHalted
			}
			code := errs.CodeOf(serr)
			if code == errs.Unavailable || code == errs.Internal {
				return serr
			}
			// The sender cannot be answered (unknown, no certificate): say
			// so in the audit log and the history; never drop it silently.
			a.log.Warn("receipt cannot be sent", "id", id, "kind", p.Kind, "code", code)
			a.record(ctx, "receipt.unsendable", id, map[string]string{"kind": p.Kind, "code": string(code)})
		} else if err := a.step(StepReceiptQueued, rid); err != nil {
			return err
		}
		now := a.now().UTC()
		kind, sent := p.Kind, serr == nil
		_, err = a.store.updateIn(ctx, id, func(r *inRecord) error {
			r.PendingReceipts = slices.DeleteFunc(r.PendingReceipts, func(x pendingReceipt) bool { return x.Kind == kind })
			if sent && !r.receiptSent(kind) {
				r.SentReceipts = append(r.SentReceipts, kind)
				r.Receipts = append(r.Receipts, localapi.Receipt{Kind: kind, At: now, Issuer: a.account, Verified: true, ID: rid})
			} else if !sent {
				r.History = append(r.History, localapi.StateChange{State: r.State, At: now, Reason: ReasonReceiptUnsendable, Detail: kind})
			}
			return nil
		})
		if err != nil {
			return err
		}
		if sent {
			a.record(ctx, "receipt.queued", id, map[string]string{"kind": kind, "receipt": rid})
		}
	}
	return nil
}

// receiptMelding builds the receipt's melding.json.
func receiptMelding(p pendingReceipt, rec *inRecord, now time.Time) ([]byte, error) {
	switch p.Kind {
	case KindMottatt:
		return json.Marshal(schemas.NewMottatt(rec.ID, rec.Type, now))
	case KindBehandlet:
		return json.Marshal(schemas.NewBehandlet(rec.ID, rec.Type, now, ""))
	case KindAvvist:
		reasons := make([]schemas.Reason, 0, len(p.Reasons))
		for _, r := range p.Reasons {
			reasons = append(reasons, schemas.Reason{Code: r.Code, Path: r.Path, Message: r.Message})
		}
		if len(reasons) == 0 {
			reasons = append(reasons, schemas.Reason{Code: ReasonReceiverRejected})
		}
		return json.Marshal(schemas.NewAvvist(rec.ID, rec.Type, now, reasons))
	}
	return nil, fmt.Errorf("unknown receipt kind %q", p.Kind)
}

// receiptBody is what the agent reads from any receipt's melding.json.
type receiptBody struct {
	MessageID   string           `json:"melding_id"`
	MessageType string           `json:"meldingstype"`
	At          time.Time        `json:"tidspunkt"`
	Reasons     []schemas.Reason `json:"arsaker"`
}

// takeReceipt applies a verified application receipt to the outgoing
// message it answers, keeps its signed manifest and signature, and records
// its id (so a redelivery is acked without work). No receipt is sent for a
// receipt.
func (a *Agent) takeReceipt(ctx context.Context, r api.Routing, opened *envelope.Opened, melding []byte) error {
	kind := receiptKind(r.Type)
	var body receiptBody
	dec := json.NewDecoder(bytes.NewReader(melding))
	if err := dec.Decode(&body); err != nil || kind == "" {
		return a.refuse(ctx, r, opened.Manifest, errs.SchemaInvalid, []localapi.Reason{{Code: ReasonSchemaInvalid}})
	}
	orig := opened.Manifest.InReplyTo
	out, err := a.store.getOut(orig)
	if orig == "" || body.MessageID != orig || err != nil || out.To != r.From || out.Receipt {
		a.log.Warn("receipt for no message this agent sent to its issuer", "receipt", r.ID, "from", r.From)
		return a.refuse(ctx, r, opened.Manifest, errs.NotDeliverable, []localapi.Reason{{Code: ReasonBindingMismatch, Message: "in_reply_to names no message sent to this issuer"}})
	}
	dir := a.store.path(dirReceipts, r.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := durable.WriteFile(filepath.Join(dir, "manifest.json"), opened.ManifestBytes, 0o600); err != nil {
		return err
	}
	if err := durable.WriteFile(filepath.Join(dir, "signature.p7s"), opened.Signature, 0o600); err != nil {
		return err
	}
	if err := durable.SyncDir(dir); err != nil {
		return err
	}
	state, _ := receiptState(kind)
	reason, detail := "", ""
	if kind == KindAvvist {
		reason = ReasonReceiverRejected
		var parts []string
		for i, x := range body.Reasons {
			if i == 0 && x.Code != "" {
				reason = x.Code
			}
			p := x.Code
			if x.Path != "" {
				p += " at " + x.Path
			}
			parts = append(parts, p)
		}
		detail = strings.Join(parts, "; ")
	}
	reasons := make([]localapi.Reason, 0, len(body.Reasons))
	for _, x := range body.Reasons {
		reasons = append(reasons, localapi.Reason{Code: x.Code, Path: x.Path, Message: x.Message})
	}
	// At is when this agent received and verified the receipt, on its own
	// clock; the issuer's claimed time stays inside the signed receipt
	// (Signed, Manifest), which is kept for later verification.
	at := a.now().UTC()
	if err := a.applyOut(ctx, orig, state, localapi.Receipt{
		Kind: kind, ID: r.ID, At: at, Issuer: r.From, Verified: true,
		Signed:   base64.StdEncoding.EncodeToString(opened.Signature),
		Manifest: base64.StdEncoding.EncodeToString(opened.ManifestBytes),
		Reason:   reason, Detail: detail, Reasons: reasons,
	}); err != nil {
		return err
	}
	now := a.now().UTC()
	rec := &inRecord{
		ID: r.ID, Type: r.Type, From: r.From, To: r.To, InReplyTo: orig, Conversation: opened.Manifest.Conversation,
		Created: opened.Manifest.Created, Expires: opened.Manifest.Expires, Size: r.Size, Receipt: true, NeedAck: true,
	}
	rec.advance(localapi.StateChange{State: localapi.InProcessed, At: now, Detail: "receipt " + kind + " for " + orig})
	if _, err := a.store.insertIn(ctx, rec); err != nil {
		return err
	}
	a.record(ctx, "receipt.received", orig, map[string]string{"kind": kind, "receipt": r.ID, "from": r.From})
	wake(a.wakeWork)
	return nil
}

// VerifyReceipt checks a kept application receipt (Receipt.Manifest and
// Receipt.Signed) against roots at time at and returns the signer. Gateway
// notices are JWS and verified with the gateway's keys instead.
func VerifyReceipt(r localapi.Receipt, roots *x509.CertPool, at time.Time) (*x509.Certificate, error) {
	manifest, err := base64.StdEncoding.DecodeString(r.Manifest)
	if err != nil || len(manifest) == 0 {
		return nil, errors.New("receipt has no manifest")
	}
	sig, err := base64.StdEncoding.DecodeString(r.Signed)
	if err != nil || len(sig) == 0 {
		return nil, errors.New("receipt has no signature")
	}
	return envelope.VerifySignature(manifest, sig, roots, at)
}

// --- verdicts ---

// Processed marks an incoming message processed and queues the behandlet
// receipt. Idempotent; refused (errs.NotDeliverable) after a rejection.
func (a *Agent) Processed(ctx context.Context, id string) error {
	return a.verdict(ctx, id, localapi.InProcessed, pendingReceipt{Kind: KindBehandlet})
}

// Rejected marks an incoming message rejected and queues the avvist receipt
// with reasons. Idempotent; refused (errs.NotDeliverable) after processed.
func (a *Agent) Rejected(ctx context.Context, id string, reasons []localapi.Reason) error {
	if len(reasons) == 0 {
		reasons = []localapi.Reason{{Code: ReasonCaseSystem}}
	}
	for _, r := range reasons {
		if r.Code == "" || len(r.Code) > 64 || len(r.Path) > 1024 || len(r.Message) > 1024 {
			return errs.Newf(errs.BadRequest, "each reason needs a code (<= 64 bytes); path and message <= 1024 bytes")
		}
	}
	return a.verdict(ctx, id, localapi.InRejected, pendingReceipt{Kind: KindAvvist, Reasons: reasons})
}

func (a *Agent) verdict(ctx context.Context, id, state string, p pendingReceipt) error {
	if a.halted.Load() {
		return errs.New(errs.Unavailable, ErrHalted)
	}
	now := a.now().UTC()
	reason := ""
	if state == localapi.InRejected {
		reason = p.Reasons[0].Code
	}
	rec, err := a.store.updateIn(ctx, id, func(r *inRecord) error {
		if r.Receipt {
			return errs.Newf(errs.NotFound, "no such message")
		}
		if r.State == state {
			return errSkip // idempotent
		}
		if !canAdvanceIn(r.State, state) {
			return errs.Newf(errs.NotDeliverable, "the message is already %s", r.State)
		}
		r.advance(localapi.StateChange{State: state, At: now, Reason: reason})
		if state == localapi.InRejected {
			r.Reasons = p.Reasons // kept for the receiver's own view; the avvist carries them to the sender
		}
		r.NeedDeliver = false
		if !r.receiptSent(p.Kind) {
			r.PendingReceipts = append(r.PendingReceipts, p)
		}
		return nil
	})
	if errors.Is(err, errNotFound) {
		return errs.Newf(errs.NotFound, "no such message")
	}
	if err != nil {
		return err
	}
	if rec != nil && rec.State == state {
		a.metrics.inState(rec)
		a.record(ctx, "message."+state, id, map[string]string{"reason": reason})
		a.log.Info("incoming verdict", "id", id, "state", state, "reason", reason)
	}
	wake(a.wakeWork)
	return nil
}

// validationError turns a schema failure into a ValidationError with every
// path.
func validationError(err error) error {
	reasons := reasonsOf(err)
	if len(reasons) == 0 {
		return errs.New(errs.SchemaInvalid, err)
	}
	return &ValidationError{Reasons: reasons, Cause: err}
}

func reasonsOf(err error) []localapi.Reason {
	var ve *schemas.ValidationError
	if errors.As(err, &ve) {
		out := make([]localapi.Reason, 0, len(ve.Errors))
		for _, fe := range ve.Errors {
			out = append(out, localapi.Reason{Code: fe.Code, Path: fe.Path, Message: fe.Message})
		}
		return out
	}
	if errors.Is(err, schemas.ErrUnknownType) {
		return []localapi.Reason{{Code: string(errs.UnknownType)}}
	}
	return []localapi.Reason{{Code: ReasonSchemaInvalid}}
}
