package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/internal/audit"
)

// The audit trail of the gateway runs through the store's journal (a
// transactional outbox, see store.JournalFunc): every change commits with
// its audit entries, and a shipper moves them to the hash-chained audit
// log in batches, each record carrying its journal position in the
// attribute journalAttr. A crash between the two leaves entries in the
// journal that the log may already hold; at start the gateway reads the
// log's last journal position and drops what is at or below it, so each
// entry is recorded exactly once. See docs/decisions/2026-12-02-gateway-2000.md.

// journalAttr is the audit record attribute holding the journal position.
const journalAttr = "journal"

// shipBatch is the most journal entries one audit append carries.
const shipBatch = 1024

// defaultShipInterval is how often the shipper looks for new entries: under
// load one audit fsync per interval instead of one per request.
const defaultShipInterval = 20 * time.Millisecond

// AuditJournal is the gateway's audit vocabulary: the records each store
// change produces. A store backend handed to WithBackend must be opened
// with it as its JournalFunc.
func AuditJournal(c store.Change) []store.AuditEntry {
	it := c.Item
	id := it.Routing.ID
	withNotice := func(attrs map[string]string) map[string]string {
		if c.Notice != nil {
			attrs["notice"] = c.Notice.ID
		}
		return attrs
	}
	one := func(actor, action, subject string, attrs map[string]string) []store.AuditEntry {
		return []store.AuditEntry{{Actor: actor, Action: action, Subject: subject, Attrs: attrs}}
	}
	switch c.Op {
	case store.ChangeAccepted:
		return one(it.Routing.From, "message.accepted", id, withNotice(map[string]string{
			"to": it.Routing.To, "type": it.Routing.Type, "size": strconv.FormatInt(it.Routing.Size, 10), "digest": it.Routing.Digest}))
	case store.ChangeLeased:
		return one(it.Owner, "message.leased", id, map[string]string{"attempt": strconv.Itoa(it.Attempts)})
	case store.ChangeDelivered:
		return one(it.Owner, "message.delivered", id, withNotice(map[string]string{}))
	case store.ChangeRejected:
		return one(it.Owner, "message.rejected", id, withNotice(map[string]string{"reason": c.Reason}))
	case store.ChangeReleased:
		return one("gateway", "message.lease_expired", id, map[string]string{"attempt": strconv.Itoa(it.Attempts)})
	case store.ChangeDeadLettered:
		return one("gateway", "message.dead_lettered", id, withNotice(map[string]string{"attempts": strconv.Itoa(it.Attempts)}))
	case store.ChangeExpired:
		return one("gateway", "message.expired", id, withNotice(map[string]string{}))
	case store.ChangePurged:
		return one("gateway", "records.purged", "", map[string]string{"count": strconv.Itoa(c.Count)})
	case store.ChangeAccountGone:
		if c.Before == nil {
			return nil
		}
		return one("operator", "account.removed", c.Before.ID, nil)
	case store.ChangeAccountPut:
		return accountAudit(c.Before, c.After)
	}
	return nil
}

// accountAudit describes a catalog write: a new account, the certificates
// added and removed, and an update of anything else (also of nothing: the
// operator asked for it).
func accountAudit(before, after *store.Account) []store.AuditEntry {
	if after == nil {
		return nil
	}
	summary := func() map[string]string {
		return map[string]string{"org_number": after.OrgNumber, "types": strings.Join(after.Types, ",")}
	}
	if before == nil {
		return []store.AuditEntry{{Actor: "operator", Action: "account.created", Subject: after.ID, Attrs: summary()}}
	}
	var out []store.AuditEntry
	has := func(certs [][]byte, der []byte) bool {
		return slices.ContainsFunc(certs, func(d []byte) bool { return string(d) == string(der) })
	}
	for _, der := range after.Certificates {
		if !has(before.Certificates, der) {
			out = append(out, store.AuditEntry{Actor: "operator", Action: "account.cert_added", Subject: after.ID,
				Attrs: map[string]string{"fingerprint": derFingerprint(der)}})
		}
	}
	for _, der := range before.Certificates {
		if !has(after.Certificates, der) {
			out = append(out, store.AuditEntry{Actor: "operator", Action: "account.cert_removed", Subject: after.ID,
				Attrs: map[string]string{"fingerprint": derFingerprint(der)}})
		}
	}
	fieldsChanged := before.Name != after.Name || before.OrgNumber != after.OrgNumber ||
		before.Municipality != after.Municipality || before.Service != after.Service ||
		!slices.Equal(before.Types, after.Types)
	if fieldsChanged || len(out) == 0 {
		out = append(out, store.AuditEntry{Actor: "operator", Action: "account.updated", Subject: after.ID, Attrs: summary()})
	}
	return out
}

// derFingerprint is pki.Fingerprint of a certificate's DER bytes.
func derFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// resumeJournal makes the journal agree with the audit log after a start:
// entries the log already holds (shipped, then a crash before they were
// dropped) are dropped, and what is left is shipped before the gateway
// serves. A store that cannot drop them is an error (the gateway would
// record them twice); a log that cannot take the rest now is logged, and
// the shipper keeps trying, as it does while the gateway runs.
func (s *Server) resumeJournal(ctx context.Context) error {
	tail, err := s.audit.Tail(16)
	if err != nil {
		return err
	}
	for i := len(tail) - 1; i >= 0; i-- {
		v, ok := tail[i].Attrs[journalAttr]
		if !ok {
			continue // e.g. audit.repaired, written by the log itself
		}
		seq, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return errors.New("audit log: last journal position is not a number")
		}
		if err := s.st.DropJournal(ctx, seq); err != nil {
			return err
		}
		break
	}
	if err := s.shipAudit(ctx); err != nil {
		s.met.auditErrors.Inc()
		s.log.Error("audit shipping failed at start; entries stay in the journal", "err", err)
	}
	return nil
}

// shipper moves journal entries to the audit log every defaultShipInterval
// until ctx ends; Close ships what the last requests committed.
func (s *Server) shipper(ctx context.Context) {
	t := time.NewTicker(defaultShipInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.shipAudit(ctx); err != nil && ctx.Err() == nil {
			s.met.auditErrors.Inc()
			s.log.Error("audit shipping failed; entries stay in the journal", "err", err)
		}
	}
}

// shipAudit appends every journal entry to the audit log (one write and
// fsync per shipBatch entries) and drops it from the journal. One caller
// at a time: two would append the same entries twice.
func (s *Server) shipAudit(ctx context.Context) error {
	s.shipMu.Lock()
	defer s.shipMu.Unlock()
	for {
		ents, err := s.st.Journal(ctx, shipBatch)
		if err != nil {
			return err
		}
		if len(ents) == 0 {
			s.met.auditCurrent.SetToCurrentTime()
			return nil
		}
		batch := make([]audit.Entry, len(ents))
		for i, e := range ents {
			// The entries are this call's own copies: their attrs take
			// the position in place (AppendBatch copies them again).
			attrs := e.Attrs
			if attrs == nil {
				attrs = make(map[string]string, 1)
			}
			attrs[journalAttr] = strconv.FormatUint(e.Seq, 10)
			batch[i] = audit.Entry{Actor: e.Actor, Action: e.Action, Subject: e.Subject, Attrs: attrs}
		}
		for {
			_, err = s.audit.AppendBatch(context.WithoutCancel(ctx), batch)
			var bad *audit.EntryError
			if !errors.As(err, &bad) {
				break
			}
			// An entry the log cannot take (it never should) must not
			// hold up the rest: it is recorded as unrecordable, with its
			// position, and the error logged.
			s.log.Error("audit entry unrecordable", "action", batch[bad.Index].Action, "err", bad.Err)
			batch[bad.Index] = audit.Entry{Actor: "gateway", Action: "audit.unrecordable",
				Attrs: map[string]string{journalAttr: strconv.FormatUint(ents[bad.Index].Seq, 10)}}
		}
		if err != nil {
			return err
		}
		if err := s.st.DropJournal(context.WithoutCancel(ctx), ents[len(ents)-1].Seq); err != nil {
			return err
		}
		s.met.auditShipped.Add(float64(len(ents)))
		if len(ents) < shipBatch {
			s.met.auditCurrent.SetToCurrentTime()
			return nil
		}
	}
}

// FlushAudit ships what the journal holds to the audit log now (tests and
// tools that read the log while the gateway runs).
func (s *Server) FlushAudit(ctx context.Context) error { return s.shipAudit(ctx) }
