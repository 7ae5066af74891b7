package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/durable"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/schemas"
)

// receiveLoop long-polls the mailbox and handles each item. Failures back
// off (full jitter, capped) and are retried; an item not acked is offered
// again by the gateway after its lease.
func (a *Agent) receiveLoop(ctx context.Context) error {
	failures := 0
	// The first poll (and the first after a failure) does not wait, so that
	// readiness reflects the gateway's reachability at once, not after a
	// whole long-poll interval.
	wait := time.Duration(0)
	for ctx.Err() == nil && !a.halted.Load() {
		items, err := a.gw.Poll(ctx, wait, a.cfg.Receive.Max)
		wait = a.cfg.Receive.Wait
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			wait = 0
			a.ready.Store(false)
			d := a.backoff(failures)
			if d < 100*time.Millisecond {
				d = 100 * time.Millisecond
			}
			a.log.Warn("mailbox poll failed", "code", errs.CodeOf(err), "retry_in", d)
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		failures = 0
		a.ready.Store(true)
		// Notices first, one by one in mailbox order (cheap, and the
		// history reads in the order things happened), acked together
		// once applied; then messages, up to Workers at once
		// (handleMessage locks per id). The next poll waits for this
		// batch, whose leases are running.
		var msgs []api.MailboxItem
		var applied []string
		for _, it := range items {
			if ctx.Err() != nil || a.halted.Load() {
				return nil
			}
			switch it.Kind {
			case api.KindNotice:
				if err := a.handleNotice(ctx, it); err != nil {
					a.logItemErr(ctx, it, err)
				} else {
					applied = append(applied, it.Routing.ID)
				}
			case api.KindMessage:
				msgs = append(msgs, it)
			default:
				a.log.Warn("unknown mailbox item kind; left for the lease to expire", "kind", it.Kind)
			}
		}
		a.ackNotices(ctx, applied)
		parallel(ctx, a.cfg.Receive.Workers, msgs, func(it api.MailboxItem) {
			if !a.halted.Load() {
				a.logItemErr(ctx, it, a.handleMessage(ctx, it))
			}
		})
	}
	return nil
}

func (a *Agent) logItemErr(ctx context.Context, it api.MailboxItem, err error) {
	if err != nil && !errors.Is(err, ErrHalted) && ctx.Err() == nil {
		a.log.Warn("mailbox item not taken; will be offered again", "id", it.Routing.ID, "kind", it.Kind, "err", err)
	}
}

// parallel calls fn for every item, at most n at once, and returns when all
// calls have returned. It starts no new call once ctx has ended.
func parallel[T any](ctx context.Context, n int, items []T, fn func(T)) {
	if n <= 1 || len(items) <= 1 {
		for _, it := range items {
			if ctx.Err() != nil {
				return
			}
			fn(it)
		}
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, n)
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(it)
		}()
	}
	wg.Wait()
}

// ackNotices acks applied notices. One not acked is offered again after
// its lease, and applying it again changes nothing.
func (a *Agent) ackNotices(ctx context.Context, ids []string) {
	a.ackBatches(ctx, ids, "notice", func(string) bool { return true })
}

// ackBatches acks ids at the gateway, up to api.MaxAckBatch in one request
// (the gateway commits them together), and calls acked for each id the
// gateway acked or no longer has (not_found: acked before a crash, or
// gone); acked returning false stops. A failed request stops too: what is
// left is acked on a later pass. kind names the items in the logs.
func (a *Agent) ackBatches(ctx context.Context, ids []string, kind string, acked func(id string) bool) {
	for len(ids) > 0 && ctx.Err() == nil && !a.halted.Load() {
		batch := ids[:min(len(ids), api.MaxAckBatch)]
		ids = ids[len(batch):]
		failed, err := a.gw.AckMany(ctx, batch)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("ack failed; will retry", "kind", kind, "items", len(batch), "code", errs.CodeOf(err))
			}
			return
		}
		for _, id := range batch {
			if err := failed[id]; err != nil && errs.CodeOf(err) != errs.NotFound {
				a.log.Warn("ack failed; will retry", "kind", kind, "id", id, "code", errs.CodeOf(err))
				continue
			}
			if !acked(id) {
				return
			}
		}
	}
}

// handleNotice applies a verified gateway notice to the outgoing message it
// is about; the caller acks it. An unverifiable notice is recorded in the
// audit log and acked too (a forged notice must not block the mailbox; it
// changes nothing).
func (a *Agent) handleNotice(ctx context.Context, it api.MailboxItem) error {
	claims, err := a.gw.VerifyNotice(it.Notice)
	switch {
	case err != nil:
		a.log.Warn("gateway notice did not verify; ignored", "item", it.Routing.ID)
		a.record(ctx, "notice.unverified", it.Routing.ID, nil)
	case claims.From != a.account:
		a.log.Warn("gateway notice about another account's message; ignored", "message", claims.MessageID)
		a.record(ctx, "notice.foreign", claims.MessageID, nil)
	default:
		state, ok := noticeState(claims.Event)
		if ok {
			if err := a.applyOut(ctx, claims.MessageID, state, localapi.Receipt{
				Kind: claims.Event, At: claims.At, Issuer: "gateway", Verified: true, Signed: it.Notice,
				Reason: claims.Reason, Detail: claims.Detail,
			}); err != nil && !errors.Is(err, errNotFound) {
				return err
			} else if errors.Is(err, errNotFound) {
				a.log.Warn("gateway notice for an unknown message", "message", claims.MessageID, "event", claims.Event)
			}
		}
	}
	return nil
}

// applyOut records a receipt on an outgoing message and advances its state.
func (a *Agent) applyOut(ctx context.Context, id, state string, r localapi.Receipt) error {
	// The history records when this agent learned of the change, on its own
	// clock, so that steps are ordered and their durations are real; the
	// receipt keeps the time its issuer claims (receipts carry whole seconds).
	at := a.now().UTC()
	rec, err := a.store.updateOut(ctx, id, func(o *outRecord) error {
		if o.hasReceipt(r.Kind, r.Signed) {
			return errSkip
		}
		o.Receipts = append(o.Receipts, r)
		o.advance(localapi.StateChange{State: state, At: at, Reason: r.Reason, Detail: r.Detail})
		return nil
	})
	if err != nil {
		return err
	}
	if rec != nil && rec.State == state {
		if state == localapi.StateReceived {
			a.metrics.latency.Observe(at.Sub(rec.Created).Seconds())
		}
		if state != localapi.StateQueued && state != localapi.StateSent {
			_ = os.Remove(a.envPath(id))
		}
		a.outChanged(ctx, rec, state, r.Reason)
	}
	return nil
}

// inDir is where an incoming message's payload and signed manifest live.
func (a *Agent) inDir(id string) string { return a.store.path(dirInbox, id) }

// handleMessage takes one envelope: dedupe, download, open, validate, record
// durably; acking, receipts and adapter delivery follow in the work loop.
func (a *Agent) handleMessage(ctx context.Context, it api.MailboxItem) error {
	r := it.Routing
	if !uuidRE.MatchString(r.ID) {
		a.log.Warn("mailbox item with an invalid id; rejected")
		return a.gw.Reject(ctx, r.ID, api.RejectRequest{Reason: string(errs.InvalidHeader)})
	}
	unlock := a.idLocks.lock("in/" + r.ID)
	defer unlock()
	if prev, err := a.store.getIn(r.ID); err == nil {
		// Already in the inbox: take it again at the gateway, without a
		// second delivery to the adapter.
		a.metrics.duplicates.Inc()
		a.log.Info("redelivered message already in the inbox", "id", r.ID, "state", prev.State)
		if prev.NeedAck || prev.NeedReject {
			wake(a.wakeWork) // the work loop owes the gateway an answer
			return nil
		}
		if prev.State == localapi.InRejected && prev.RejectCode != "" {
			return a.gw.Reject(ctx, r.ID, api.RejectRequest{Reason: prev.RejectCode})
		}
		return a.gw.Ack(ctx, r.ID)
	} else if !errors.Is(err, errNotFound) {
		return err
	}

	if r.To != a.account {
		return a.refuse(ctx, r, nil, errs.WrongReceiver, []localapi.Reason{{Code: ReasonWrongReceiver}})
	}
	if r.Size > a.cfg.Receive.MaxEnvelopeSize {
		return a.refuse(ctx, r, nil, errs.TooLarge, []localapi.Reason{{Code: string(errs.TooLarge), Message: "envelope larger than this agent accepts"}})
	}

	part := a.store.path(dirSpool, r.ID+".part")
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	if len(it.Content) > 0 && int64(len(it.Content)) == r.Size {
		// It came with the poll (the gateway client checked its digest;
		// digestMatches below checks the spooled file again).
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if _, err := f.WriteAt(it.Content, 0); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	} else if err := a.gw.Download(ctx, r.ID, f); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("spool sync: %w", err)
	}
	if err := a.step(StepDownloaded, r.ID); err != nil {
		return err
	}
	if ok, err := digestMatches(f, r.Digest); err != nil {
		return err
	} else if !ok {
		// Corrupt or truncated download: start over next time.
		_ = f.Truncate(0)
		return errs.New(errs.DigestMismatch, errors.New("downloaded envelope does not match its digest"))
	}

	info, known := a.schemas.Info(r.Type)
	isReceipt := known && info.Receipt
	sender, err := a.senderCerts(ctx, r.From, false)
	if err != nil {
		if errs.CodeOf(err) == errs.UnknownSender {
			return a.refuse(ctx, r, nil, errs.UnknownSender, []localapi.Reason{{Code: ReasonUnknownSender}})
		}
		return err
	}
	tmp := a.store.path(dirSpool, r.ID+".open")
	_ = os.RemoveAll(tmp)
	opened, oerr := a.open(ctx, f, tmp, r, sender)
	if oerr != nil && envelope.ReasonOf(oerr) == envelope.ReasonSigner {
		// The sender may have rotated its certificate: look again, once.
		if fresh, err := a.senderCerts(ctx, r.From, true); err == nil {
			_ = os.RemoveAll(tmp)
			opened, oerr = a.open(ctx, f, tmp, r, fresh)
		}
	}
	if oerr != nil {
		_ = os.RemoveAll(tmp)
		if !envelopeAtFault(ctx, oerr) {
			// This host failed (disk, spool, shutdown), not the envelope:
			// no avvist. Not acked, the item is offered again after its
			// lease (and dead-lettered after max_attempts leases).
			_ = os.Remove(part)
			return &openLocalError{err: oerr}
		}
		reason := envelopeReason(oerr)
		a.log.Warn("envelope refused", "id", r.ID, "from", r.From, "reason", reason, "envelope_reason", envelope.ReasonOf(oerr))
		err := a.refuse(ctx, r, nil, errs.InvalidEnvelope, []localapi.Reason{{Code: reason}})
		_ = os.Remove(part)
		return err
	}
	if !known {
		_ = os.RemoveAll(tmp)
		err := a.refuse(ctx, r, opened.Manifest, errs.UnknownType, []localapi.Reason{{Code: string(errs.UnknownType)}})
		_ = os.Remove(part)
		return err
	}
	// Read under the schema's size limit, not whole: the envelope's limits
	// let a small envelope expand melding.json 200 times, and the schema
	// check would refuse it only once it is all in memory.
	melding, err := durable.ReadFile(filepath.Join(tmp, localapi.MetadataFile), schemas.MaxMeldingSize)
	if errors.Is(err, fs.ErrNotExist) {
		melding = nil // the schema check refuses a case without one
	} else if errors.Is(err, durable.ErrTooLarge) {
		// Refused like any schema failure (the code the schema check gives).
		_ = os.RemoveAll(tmp)
		a.log.Warn("incoming message fails its schema", "id", r.ID, "errors", 1)
		err := a.refuse(ctx, r, opened.Manifest, errs.SchemaInvalid, []localapi.Reason{{Code: schemas.CodeTooLarge,
			Message: fmt.Sprintf("%s is larger than %d bytes", localapi.MetadataFile, schemas.MaxMeldingSize)}})
		_ = os.Remove(part)
		return err
	} else if err != nil {
		// Just written by Open: failing to read it back is this host's
		// failure, not a schema violation of the sender's.
		_ = os.RemoveAll(tmp)
		_ = os.Remove(part)
		return &openLocalError{err: err}
	}
	var names []string
	for _, fe := range opened.Files {
		if fe.Name != localapi.MetadataFile {
			names = append(names, fe.Name)
		}
	}
	if err := a.schemas.Validate(r.Type, melding, names); err != nil {
		_ = os.RemoveAll(tmp)
		reasons := reasonsOf(err)
		a.log.Warn("incoming message fails its schema", "id", r.ID, "errors", len(reasons))
		err := a.refuse(ctx, r, opened.Manifest, errs.SchemaInvalid, reasons)
		_ = os.Remove(part)
		return err
	}
	if isReceipt {
		err := a.takeReceipt(ctx, r, opened, melding)
		_ = os.RemoveAll(tmp)
		_ = os.Remove(part)
		return err
	}

	// Move into the inbox durably, then record it.
	dir := a.inDir(r.ID)
	_ = os.RemoveAll(dir) // leftovers of a crash before the record
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "payload")); err != nil {
		return fmt.Errorf("inbox: %w", err)
	}
	if err := durable.WriteFile(filepath.Join(dir, "manifest.json"), opened.ManifestBytes, 0o600); err != nil {
		return err
	}
	if err := durable.WriteFile(filepath.Join(dir, "signature.p7s"), opened.Signature, 0o600); err != nil {
		return err
	}
	if err := syncTree(dir); err != nil {
		return fmt.Errorf("inbox sync: %w", err)
	}
	if err := durable.SyncDir(a.store.path(dirInbox)); err != nil {
		return err
	}
	files := make([]localapi.File, 0, len(opened.Files))
	for _, fe := range opened.Files {
		files = append(files, localapi.File{Name: fe.Name, Size: fe.Size, SHA256: fe.SHA256, MediaType: fe.MediaType})
	}
	m := opened.Manifest
	now := a.now().UTC()
	rec := &inRecord{
		ID: r.ID, Type: r.Type, From: r.From, To: r.To, Conversation: m.Conversation, InReplyTo: m.InReplyTo,
		Created: m.Created, Expires: m.Expires, Size: r.Size, Files: files,
		NeedAck: true, NeedDeliver: a.receiver != nil,
		PendingReceipts: []pendingReceipt{{Kind: KindMottatt}},
	}
	rec.advance(localapi.StateChange{State: localapi.InStored, At: now})
	if existing, err := a.store.insertIn(ctx, rec); err != nil {
		return fmt.Errorf("record incoming message: %w", err)
	} else if existing != nil {
		return nil
	}
	_ = os.Remove(part)
	a.metrics.inState(rec)
	a.record(ctx, "message.stored", r.ID, map[string]string{"type": r.Type, "from": r.From})
	a.log.Info("message stored", "id", r.ID, "type", r.Type, "from", r.From, "files", len(files))
	if err := a.step(StepInboxWritten, r.ID); err != nil {
		return err
	}
	wake(a.wakeWork)
	return nil
}

func (a *Agent) open(ctx context.Context, f *os.File, outDir string, r api.Routing, sender []*x509.Certificate) (*envelope.Opened, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return envelope.Open(ctx, io.LimitReader(f, a.cfg.Receive.MaxEnvelopeSize), outDir, envelope.OpenOptions{
		Keys:        a.envelopeKeys(),
		Roots:       a.roots,
		SenderCerts: sender,
		Expect:      envelope.Binding{ID: r.ID, Type: r.Type, From: r.From, To: a.account},
		Limits:      envelope.Limits{MaxEnvelope: a.cfg.Receive.MaxEnvelopeSize},
		Now:         a.now,
		TempDir:     a.store.path(dirSpool),
		Sync:        true,
	})
}

// senderCerts returns the sender account's registered certificates.
func (a *Agent) senderCerts(ctx context.Context, from string, fresh bool) ([]*x509.Certificate, error) {
	acct, _, err := a.catalog.account(ctx, from, fresh)
	if err != nil {
		if errs.CodeOf(err) == errs.NotFound {
			return nil, errs.New(errs.UnknownSender, err)
		}
		return nil, err
	}
	certs := a.catalog.certs(acct)
	if len(certs) == 0 {
		return nil, errs.New(errs.UnknownSender, errors.New("sender has no usable certificate"))
	}
	return certs, nil
}

// envelopeAtFault reports whether err, a failure to open an incoming
// envelope, lies with the envelope itself, so that the sender gets a signed
// avvist. Only the envelope package's verdicts on the bytes count (the
// Reasons of what it checks: decryption, tag, signature, chain, signer,
// digests, binding, limits, format, names), and only while ctx is live and
// no operating-system or context error is in the chain. Everything else is
// this host's failure and is retried, never answered: reading the spooled
// ciphertext or writing the plaintext (ReasonIO), unusable options or
// output directory (ReasonUsage), an error that is no verdict at all, and
// any failure once ctx has ended (shutdown). Classifying the envelope's
// faults positively keeps an unforeseen local error from ever becoming a
// signed rejection; a really bad envelope retried in error is refused on a
// later offer.
func envelopeAtFault(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var (
		pathErr *fs.PathError
		linkErr *os.LinkError
		sysErr  *os.SyscallError
		errno   syscall.Errno
	)
	if errors.As(err, &pathErr) || errors.As(err, &linkErr) || errors.As(err, &sysErr) || errors.As(err, &errno) {
		return false
	}
	switch envelope.ReasonOf(err) {
	case envelope.ReasonDecrypt, envelope.ReasonTag, envelope.ReasonSignature, envelope.ReasonChain,
		envelope.ReasonSigner, envelope.ReasonDigest, envelope.ReasonBinding, envelope.ReasonLimits,
		envelope.ReasonFormat, envelope.ReasonNames:
		return true
	}
	return false
}

// openLocalError is a failure of this host to open (or read back) an
// incoming envelope. handleMessage returns it instead of refusing: the item
// is not acked and the gateway offers it again. Its text, which the receive
// loop logs, holds the envelope's reason and the system's error but no
// path: the paths under the output directory are payload file names, which
// can hold personal data. The whole cause stays reachable with errors.Is/As.
type openLocalError struct{ err error }

func (e *openLocalError) Error() string {
	msg := "open envelope: failed on this host"
	r := envelope.ReasonOf(e.err)
	if r != "" {
		msg += " (" + string(r) + ")"
	}
	var errno syscall.Errno
	switch {
	case errors.Is(e.err, context.Canceled):
		return msg + ": " + context.Canceled.Error()
	case errors.Is(e.err, context.DeadlineExceeded):
		return msg + ": " + context.DeadlineExceeded.Error()
	case errors.As(e.err, &errno):
		return msg + ": " + errno.Error()
	case r == "" || r == envelope.ReasonIO || r == envelope.ReasonUsage:
		// The envelope package formats some causes into its text (%v),
		// which drops the errno from the chain: keep what follows the
		// last ": ", the system's own words after "op path". (Not for a
		// verdict's text, which can quote a file name.)
		s := e.err.Error()
		if i := strings.LastIndex(s, ": "); i >= 0 {
			return msg + ": " + s[i+2:]
		}
	}
	return msg
}

func (e *openLocalError) Unwrap() error { return e.err }

// envelopeReason maps an envelope failure to a receipt reason code.
func envelopeReason(err error) string {
	switch envelope.ReasonOf(err) {
	case envelope.ReasonSignature, envelope.ReasonChain, envelope.ReasonSigner, envelope.ReasonDigest:
		return ReasonBadSignature
	case envelope.ReasonBinding:
		return ReasonBindingMismatch
	}
	return ReasonInvalidEnvelope
}

// refuse records an incoming message as rejected (its id is kept, so a
// redelivery is refused again without work), rejects it at the gateway and
// queues the signed avvist receipt to the sender named in the routing header
// (not for a receipt: receipts are never answered with receipts).
func (a *Agent) refuse(ctx context.Context, r api.Routing, m *envelope.Manifest, code errs.Code, reasons []localapi.Reason) error {
	info, known := a.schemas.Info(r.Type)
	now := a.now().UTC()
	rec := &inRecord{
		ID: r.ID, Type: r.Type, From: r.From, To: r.To, Size: r.Size, Created: now, Expires: r.Expires,
		Receipt: known && info.Receipt, Reasons: reasons, NeedReject: true, RejectCode: string(code),
	}
	if m != nil {
		rec.Conversation, rec.InReplyTo, rec.Created = m.Conversation, m.InReplyTo, m.Created
	}
	if !rec.Receipt && uuidRE.MatchString(r.From) {
		rec.PendingReceipts = []pendingReceipt{{Kind: KindAvvist, Reasons: reasons}}
	}
	detail := ""
	if len(reasons) > 0 {
		detail = reasons[0].Code
	}
	rec.advance(localapi.StateChange{State: localapi.InRejected, At: now, Reason: string(code), Detail: detail})
	existing, err := a.store.insertIn(ctx, rec)
	if err != nil {
		return fmt.Errorf("record refused message: %w", err)
	}
	if existing == nil {
		a.metrics.inState(rec)
		a.metrics.refused.WithLabelValues(string(code)).Inc()
		a.record(ctx, "message.refused", r.ID, map[string]string{"code": string(code), "reason": detail, "from": r.From})
	}
	wake(a.wakeWork)
	return nil
}

func digestMatches(f *os.File, want string) (bool, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	got := "sha-256=:" + base64.StdEncoding.EncodeToString(h.Sum(nil)) + ":"
	return got == want, nil
}

// --- work loop: acks, gateway rejects, receipts, adapter deliveries ---

// workLoop finishes what incoming messages still owe, in this order per
// message: the gateway's ack (or reject), the receipts to the sender, the
// adapter delivery. It runs at start (finishing work a crash left) and
// whenever woken, and at least every second for due retries.
// workLoop answers the gateway (ack, reject) and queues receipts for
// stored messages; deliverLoop hands them to the adapter once that is done.
// They are apart so that a slow case system never holds up acks (whose
// leases run) or receipts.
func (a *Agent) workLoop(ctx context.Context) error {
	return a.passLoop(ctx, a.wakeWork, func(ctx context.Context) {
		a.workPass(ctx, workAck, workReject, workReceipt)
		wake(a.wakeDeliver)
	})
}

// deliverLoop keeps up to Receive.Workers deliveries under way. A pass
// starts deliveries for messages not already under way and does not wait
// for them: one case the case system sits on never holds up the others.
func (a *Agent) deliverLoop(ctx context.Context) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		busy = map[string]bool{}
		sem  = make(chan struct{}, a.cfg.Receive.Workers)
	)
	defer wg.Wait()
	return a.passLoop(ctx, a.wakeDeliver, func(ctx context.Context) {
		ids, err := a.store.work(workDeliver)
		if err != nil {
			a.log.Error("list work", "err", err)
			return
		}
		for _, id := range ids {
			if ctx.Err() != nil || a.halted.Load() {
				return
			}
			mu.Lock()
			taken := busy[id]
			mu.Unlock()
			if taken || !a.deliverable(id) {
				continue
			}
			select {
			case sem <- struct{}{}:
			default:
				return // all workers busy; a finishing one wakes the loop
			}
			mu.Lock()
			busy[id] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := a.deliver(ctx, id)
				if err != nil && !errors.Is(err, ErrHalted) && ctx.Err() == nil {
					a.log.Warn("incoming work failed; will retry", "id", id, "work", string(workDeliver), "code", errs.CodeOf(err))
				}
				mu.Lock()
				delete(busy, id)
				mu.Unlock()
				<-sem
				if err == nil {
					wake(a.wakeDeliver) // a worker is free for the next one
				}
			}()
		}
	})
}

// passLoop runs pass now, then whenever woken and at least every second.
func (a *Agent) passLoop(ctx context.Context, woken <-chan struct{}, pass func(context.Context)) error {
	for ctx.Err() == nil && !a.halted.Load() {
		pass(ctx)
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-woken:
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

// workPass does the pending work of each kind in turn (ack or reject, then
// receipts; delivery is deliverLoop's): acks in batches of one request,
// the rest up to Receive.Workers messages at once within a kind.
func (a *Agent) workPass(ctx context.Context, kinds ...byte) {
	for _, kind := range kinds {
		ids, err := a.store.work(kind)
		if err != nil {
			a.log.Error("list work", "err", err)
			return
		}
		if kind == workAck {
			a.ackIn(ctx, ids)
			if ctx.Err() != nil || a.halted.Load() {
				return
			}
			continue
		}
		parallel(ctx, a.cfg.Receive.Workers, ids, func(id string) {
			if ctx.Err() != nil || a.halted.Load() {
				return
			}
			var err error
			switch kind {
			case workReject:
				err = a.rejectIn(ctx, id)
			case workReceipt:
				err = a.sendReceipts(ctx, id)
			}
			if err != nil && !errors.Is(err, ErrHalted) && ctx.Err() == nil {
				a.log.Warn("incoming work failed; will retry", "id", id, "work", string(kind), "code", errs.CodeOf(err))
			}
		})
		if ctx.Err() != nil || a.halted.Load() {
			return
		}
	}
}

// ackIn acks stored incoming messages at the gateway in batches, then
// records each as acked; any failure is retried on a later pass.
func (a *Agent) ackIn(ctx context.Context, ids []string) {
	a.ackBatches(ctx, ids, "message", func(id string) bool {
		if err := a.step(StepAcked, id); err != nil {
			return false
		}
		if _, err := a.store.updateIn(ctx, id, func(r *inRecord) error { r.NeedAck = false; return nil }); err != nil && ctx.Err() == nil {
			a.log.Warn("incoming work failed; will retry", "id", id, "work", "ack", "code", errs.CodeOf(err))
		}
		return true
	})
}

func (a *Agent) rejectIn(ctx context.Context, id string) error {
	rec, err := a.store.getIn(id)
	if err != nil {
		return err
	}
	detail := ""
	if len(rec.Reasons) > 0 {
		detail = rec.Reasons[0].Code
	}
	if err := a.gw.Reject(ctx, id, api.RejectRequest{Reason: rec.RejectCode, Detail: detail}); err != nil && errs.CodeOf(err) != errs.NotFound {
		return err
	}
	if err := a.step(StepAcked, id); err != nil {
		return err
	}
	_, err = a.store.updateIn(ctx, id, func(r *inRecord) error { r.NeedReject = false; return nil })
	return err
}

// deliverable reports whether deliver has something to do for id now
// (not waiting for its ack, its receipts or its next try), so that the
// deliver loop does not spin on a message that is not due.
func (a *Agent) deliverable(id string) bool {
	rec, err := a.store.getIn(id)
	if err != nil {
		return true // let deliver meet and report the error
	}
	return rec.NeedDeliver && !rec.NeedAck && len(rec.PendingReceipts) == 0 && !rec.NextDeliver.After(a.now())
}

// deliver hands a stored message to the receiving adapter.
func (a *Agent) deliver(ctx context.Context, id string) error {
	rec, err := a.store.getIn(id)
	if err != nil {
		return err
	}
	if !rec.NeedDeliver || rec.NeedAck || len(rec.PendingReceipts) > 0 {
		return nil // ack and mottatt first
	}
	if a.receiver == nil {
		_, err := a.store.updateIn(ctx, id, func(r *inRecord) error { r.NeedDeliver = false; return nil })
		return err
	}
	if rec.NextDeliver.After(a.now()) {
		return nil
	}
	d, err := a.delivery(rec)
	if err != nil {
		return err
	}
	if derr := a.deliverTo(ctx, d); derr != nil {
		if ctx.Err() != nil {
			return nil
		}
		tries := rec.DeliverTries + 1
		next := a.now().Add(a.backoff(tries))
		a.metrics.deliverRetries.Inc()
		// A file-system adapter's error names the payload file, which can
		// hold personal data: the log gets the operation and the cause.
		a.log.Warn("adapter delivery failed; will retry", "id", id, "adapter", a.receiver.Name(), "tries", tries, "next", next, "err", durable.Pathless(derr))
		_, err := a.store.updateIn(ctx, id, func(r *inRecord) error {
			r.DeliverTries, r.NextDeliver = tries, next
			return nil
		})
		return err
	}
	if err := a.step(StepDelivered, id); err != nil {
		return err
	}
	now := a.now().UTC()
	rec, err = a.store.updateIn(ctx, id, func(r *inRecord) error {
		r.NeedDeliver = false
		r.advance(localapi.StateChange{State: localapi.InDelivered, At: now, Detail: "adapter " + a.receiver.Name()})
		return nil
	})
	if err != nil {
		return err
	}
	if rec.State == localapi.InDelivered {
		a.metrics.inState(rec)
		a.record(ctx, "message.delivered", id, map[string]string{"adapter": a.receiver.Name()})
	}
	return nil
}

// delivery builds the adapter's view of a stored message.
func (a *Agent) delivery(rec *inRecord) (adapterDelivery, error) {
	dir := a.inDir(rec.ID)
	manifest, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return adapterDelivery{}, err
	}
	sig, err := os.ReadFile(filepath.Join(dir, "signature.p7s"))
	if err != nil {
		return adapterDelivery{}, err
	}
	return adapterDelivery{
		ID: rec.ID, Type: rec.Type, From: rec.From, To: rec.To, Conversation: rec.Conversation, InReplyTo: rec.InReplyTo,
		Created: rec.Created, Expires: rec.Expires, Dir: filepath.Join(dir, "payload"), Files: rec.Files,
		Manifest: manifest, Signature: sig, ReceiptID: receiptID(rec.ID, KindMottatt),
	}, nil
}

// hexSHA256 is the hex SHA-256 of b.
func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
