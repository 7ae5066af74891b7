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
	"math/rand/v2"
	"mime"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/durable"
	"github.com/kurer/kurer/internal/errs"
)

// ValidationError is a send refused because melding.json does not match its
// type's schema. Reasons carry every path; the public code is
// errs.SchemaInvalid.
type ValidationError struct {
	Reasons []localapi.Reason
	Cause   error
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%s: %d error(s)", errs.SchemaInvalid, len(e.Reasons))
}

// Unwrap lets errs.CodeOf see errs.SchemaInvalid.
func (e *ValidationError) Unwrap() error { return errs.New(errs.SchemaInvalid, e.Cause) }

// Send validates, seals and durably queues c, and returns once the sealed
// envelope is fsynced in the outbox and recorded as queued. With c.ID set,
// the same case sent again answers the same; other content with that id is
// an errs.Conflict.
func (a *Agent) Send(ctx context.Context, c adapter.Case) (localapi.SendResponse, error) {
	return a.send(ctx, c, false)
}

func (a *Agent) send(ctx context.Context, c adapter.Case, receipt bool) (localapi.SendResponse, error) {
	if a.halted.Load() {
		return localapi.SendResponse{}, errs.New(errs.Unavailable, ErrHalted)
	}
	info, ok := a.schemas.Info(c.Type)
	if !ok {
		return localapi.SendResponse{}, errs.Newf(errs.UnknownType, "%s", c.Type)
	}
	if receipt != info.Receipt {
		return localapi.SendResponse{}, errs.Newf(errs.BadRequest, "receipt types are sent by the agent only")
	}
	if c.ID == "" {
		// Version 7: time-ordered, so the gateway's index takes new
		// messages at its end rather than on random pages.
		u, err := uuid.NewV7()
		if err != nil {
			return localapi.SendResponse{}, errs.New(errs.Internal, err)
		}
		c.ID = u.String()
	} else if !uuidRE.MatchString(c.ID) {
		return localapi.SendResponse{}, errs.Newf(errs.BadRequest, "id: want a lowercase UUID")
	}
	for _, id := range []string{c.Conversation, c.InReplyTo} {
		if id != "" && !uuidRE.MatchString(id) {
			return localapi.SendResponse{}, errs.Newf(errs.BadRequest, "conversation and in_reply_to: want lowercase UUIDs")
		}
	}
	names := make([]string, 0, len(c.Files))
	for _, f := range c.Files {
		if err := checkFileName(f.Name); err != nil {
			return localapi.SendResponse{}, err
		}
		if slices.Contains(names, f.Name) {
			return localapi.SendResponse{}, errs.Newf(errs.BadRequest, "file %q given twice", f.Name)
		}
		names = append(names, f.Name)
	}

	unlock := a.idLocks.lock(c.ID)
	defer unlock()
	hash, err := sendHash(c)
	if err != nil {
		return localapi.SendResponse{}, errs.New(errs.BadRequest, err)
	}
	if prev, err := a.store.getOut(c.ID); err == nil {
		if prev.SendHash != hash && !receipt {
			return localapi.SendResponse{}, errs.Newf(errs.Conflict, "message %s exists with other content", c.ID)
		}
		return localapi.SendResponse{ID: prev.ID, State: prev.State}, nil
	} else if !errors.Is(err, errNotFound) {
		return localapi.SendResponse{}, err
	}

	if err := a.schemas.Validate(c.Type, c.Metadata, names); err != nil {
		return localapi.SendResponse{}, validationError(err)
	}
	to, err := a.catalog.resolve(ctx, c.To, c.Type)
	if err != nil {
		return localapi.SendResponse{}, catalogError(err)
	}
	if !receipt && !slices.Contains(to.Types, c.Type) {
		return localapi.SendResponse{}, errs.Newf(errs.TypeNotAccepted, "%s", c.Type)
	}
	recips := a.catalog.sealCerts(to)
	if len(recips) == 0 {
		return localapi.SendResponse{}, errs.Newf(errs.UnknownReceiver, "the receiver has no usable certificate")
	}
	now := a.now().UTC()
	expires := c.Expires
	if expires.IsZero() {
		ttl := info.DefaultTTL
		if ttl <= 0 {
			ttl = 14 * 24 * time.Hour
		}
		expires = now.Add(ttl)
	}
	if !expires.After(now) {
		return localapi.SendResponse{}, errs.Newf(errs.Expired, "expires is in the past")
	}

	m := &envelope.Manifest{
		ID: c.ID, Type: c.Type, From: a.account, To: to.ID,
		Conversation: c.Conversation, InReplyTo: c.InReplyTo,
		Created: now, Expires: expires.UTC().Truncate(time.Second),
	}
	files := make([]envelope.File, 0, len(c.Files)+1)
	meta := c.Metadata
	files = append(files, envelope.File{
		Name: localapi.MetadataFile, MediaType: "application/json", Size: int64(len(meta)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(meta))), nil },
	})
	for _, f := range c.Files {
		st, err := os.Stat(f.Path)
		if err != nil {
			return localapi.SendResponse{}, errs.New(errs.BadRequest, fmt.Errorf("file %s: %w", f.Name, err))
		}
		mt := f.MediaType
		if mt == "" {
			mt = mime.TypeByExtension(path.Ext(f.Name))
		}
		if mt == "" {
			mt = "application/octet-stream"
		}
		p := f.Path
		files = append(files, envelope.File{Name: f.Name, MediaType: mt, Size: st.Size(),
			Open: func() (io.ReadCloser, error) { return os.Open(p) }})
	}

	size, digest, err := a.sealToOutbox(ctx, m, files, recips)
	if err != nil {
		return localapi.SendResponse{}, err
	}
	rec := &outRecord{
		ID: c.ID, Type: c.Type, From: a.account, To: to.ID,
		Conversation: c.Conversation, InReplyTo: c.InReplyTo,
		Created: now, Expires: m.Expires, Size: size, Digest: digest,
		SendHash: hash, Receipt: receipt, Pending: true, NextAttempt: now,
	}
	rec.advance(localapi.StateChange{State: localapi.StateQueued, At: now})
	if existing, err := a.store.insertOut(ctx, rec); err != nil {
		return localapi.SendResponse{}, fmt.Errorf("record outgoing message: %w", err)
	} else if existing != nil { // cannot happen under the id lock; keep the first
		return localapi.SendResponse{ID: existing.ID, State: existing.State}, nil
	}
	a.metrics.queued(rec)
	a.record(ctx, "message.queued", c.ID, map[string]string{"type": c.Type, "to": to.ID, "digest": digest})
	a.log.Info("message queued", "id", c.ID, "type", c.Type, "to", to.ID, "size", size, "receipt", receipt)
	if err := a.step(StepOutboxWritten, c.ID); err != nil {
		return localapi.SendResponse{}, errs.New(errs.Unavailable, err)
	}
	wake(a.wakeUpload)
	return localapi.SendResponse{ID: c.ID, State: localapi.StateQueued}, nil
}

// sealToOutbox seals into outbox/ID.env through a temp file, fsyncing the
// file and the directory, and returns the envelope's size and RFC 9530
// digest.
func (a *Agent) sealToOutbox(ctx context.Context, m *envelope.Manifest, files []envelope.File, recips []*x509.Certificate) (int64, string, error) {
	dir := a.store.path(dirOutbox)
	tmp, err := os.CreateTemp(dir, m.ID+".*.tmp")
	if err != nil {
		return 0, "", fmt.Errorf("outbox: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	cw := &counter{}
	err = envelope.Seal(ctx, io.MultiWriter(tmp, h, cw), m, files, envelope.SealOptions{
		Profile:    envelope.Profile(a.profile()),
		Signer:     a.keys[0].Signer,
		SignerCert: a.keys[0].Cert,
		Recipients: recips,
		Now:        a.now,
	})
	if err != nil {
		tmp.Close()
		if envelope.ReasonOf(err) == envelope.ReasonIO && ctx.Err() == nil {
			return 0, "", fmt.Errorf("seal: %w", err)
		}
		return 0, "", errs.New(errs.BadRequest, fmt.Errorf("seal: %w", err))
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return 0, "", fmt.Errorf("outbox sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return 0, "", fmt.Errorf("outbox close: %w", err)
	}
	if err := os.Rename(tmp.Name(), a.envPath(m.ID)); err != nil {
		return 0, "", fmt.Errorf("outbox rename: %w", err)
	}
	if err := durable.SyncDir(dir); err != nil {
		return 0, "", fmt.Errorf("outbox sync dir: %w", err)
	}
	return cw.n, "sha-256=:" + base64.StdEncoding.EncodeToString(h.Sum(nil)) + ":", nil
}

func (a *Agent) profile() string {
	if a.cfg.Profile == "fiks" {
		return string(envelope.ProfileFiks)
	}
	return string(envelope.ProfileGCM)
}

func (a *Agent) envPath(id string) string { return a.store.path(dirOutbox, id+".env") }

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// sendHash identifies a send's content for idempotent retries with the
// same id: routing fields, the metadata and every file's name and SHA-256.
func sendHash(c adapter.Case) (string, error) {
	h := sha256.New()
	exp := ""
	if !c.Expires.IsZero() {
		exp = c.Expires.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(h, "%q %q %q %q %q\n", c.Type, c.To, c.Conversation, c.InReplyTo, exp)
	ms := sha256.Sum256(c.Metadata)
	fmt.Fprintf(h, "meta %x\n", ms)
	for _, f := range c.Files {
		fh := sha256.New()
		fd, err := os.Open(f.Path)
		if err != nil {
			return "", fmt.Errorf("file %s: %w", f.Name, err)
		}
		_, err = io.Copy(fh, fd)
		fd.Close()
		if err != nil {
			return "", fmt.Errorf("file %s: %w", f.Name, err)
		}
		fmt.Fprintf(h, "file %q %x\n", f.Name, fh.Sum(nil))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkFileName refuses names the envelope would refuse, early and with a
// public message.
func checkFileName(name string) error {
	switch {
	case name == "" || len(name) > 255:
		return errs.Newf(errs.BadRequest, "file name empty or longer than 255 bytes")
	case name == localapi.MetadataFile:
		return errs.Newf(errs.BadRequest, "file name %s is reserved for the metadata", localapi.MetadataFile)
	case strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || strings.HasPrefix(strings.ToUpper(name), "META-INF/"):
		return errs.Newf(errs.BadRequest, "file name %q not allowed", name)
	case name == "mimetype":
		return errs.Newf(errs.BadRequest, "file name %q not allowed", name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errs.Newf(errs.BadRequest, "file name %q not allowed", name)
		}
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return errs.Newf(errs.BadRequest, "file name with a control character")
		}
	}
	return nil
}

// catalogError gives a catalog failure its public code.
func catalogError(err error) error {
	var e *errs.Error
	if errors.As(err, &e) {
		switch e.Code {
		case errs.NotFound:
			return errs.New(errs.UnknownReceiver, err)
		case errs.BadRequest, errs.UnknownReceiver, errs.TypeNotAccepted, errs.UnknownType:
			return err
		case errs.AmbiguousReceiver:
			// Several accounts answer to the number: nothing is sealed or
			// queued; the detail names them and asks for the account id.
			return err
		}
		return errs.New(errs.Unavailable, err)
	}
	return errs.New(errs.Unavailable, err)
}

// --- uploader ---

// uploadLoop uploads pending outgoing messages when due, and expires those
// whose lifetime ended before the gateway accepted them. It wakes on new
// messages and at the earliest next attempt or expiry.
func (a *Agent) uploadLoop(ctx context.Context) error {
	for {
		next := a.uploadPass(ctx)
		if ctx.Err() != nil {
			return nil
		}
		d := time.Until(next)
		if d < 0 {
			d = 0
		}
		if d > time.Minute {
			d = time.Minute
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-a.wakeUpload:
		case <-t.C:
		}
		t.Stop()
	}
}

// uploadParallel bounds concurrent uploads.
const uploadParallel = 4

func (a *Agent) uploadPass(ctx context.Context) time.Time {
	next := a.now().Add(time.Minute)
	ids, err := a.store.work(workUpload)
	if err != nil {
		a.log.Error("list outbox", "err", err)
		return a.now().Add(time.Second)
	}
	var (
		wg  sync.WaitGroup
		sem = make(chan struct{}, uploadParallel)
		mu  sync.Mutex
	)
	for _, id := range ids {
		rec, err := a.store.getOut(id)
		if err != nil || !rec.Pending {
			continue
		}
		now := a.now()
		if !now.Before(rec.Expires) {
			a.expireLocal(ctx, id)
			continue
		}
		if rec.NextAttempt.After(now) {
			if rec.NextAttempt.Before(next) {
				next = rec.NextAttempt
			}
			if rec.Expires.Before(next) {
				next = rec.Expires
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return next
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if t := a.upload(ctx, id); !t.IsZero() {
				mu.Lock()
				if t.Before(next) {
					next = t
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return next
}

func (a *Agent) expireLocal(ctx context.Context, id string) {
	now := a.now().UTC()
	rec, err := a.store.updateOut(ctx, id, func(r *outRecord) error {
		if !r.Pending {
			return errSkip
		}
		r.advance(localapi.StateChange{State: localapi.StateExpired, At: now, Reason: ReasonExpiredLocally})
		r.Pending = false
		return nil
	})
	if err != nil {
		a.log.Error("expire outgoing message", "id", id, "err", err)
		return
	}
	if rec != nil {
		a.outChanged(ctx, rec, localapi.StateExpired, ReasonExpiredLocally)
		_ = os.Remove(a.envPath(id))
	}
}

// upload submits one message. It returns the time of the next attempt after
// a retryable failure, or zero.
func (a *Agent) upload(ctx context.Context, id string) time.Time {
	unlock := a.idLocks.lock("upload/" + id)
	defer unlock()
	rec, err := a.store.getOut(id)
	if err != nil || !rec.Pending {
		return time.Time{}
	}
	f, err := os.Open(a.envPath(id))
	if err != nil {
		// The outbox file is promised durable before the record exists;
		// without it the message cannot be sent. Never silently: fail it.
		a.log.Error("outbox envelope missing", "id", id, "err", err)
		a.failOut(ctx, id, ReasonGatewayRefused, "outbox envelope missing")
		return time.Time{}
	}
	defer f.Close()
	routing := api.Routing{
		ID: rec.ID, From: rec.From, To: rec.To, Type: rec.Type, Expires: rec.Expires,
		Size: rec.Size, Digest: rec.Digest, Conversation: rec.Conversation, InReplyTo: rec.InReplyTo,
	}
	resp, err := a.gw.Submit(ctx, routing, f)
	if err != nil {
		if ctx.Err() != nil || a.halted.Load() {
			return time.Time{}
		}
		code := errs.CodeOf(err)
		if !retryable(code) {
			a.log.Warn("gateway refused upload", "id", id, "code", code)
			a.failOut(ctx, id, string(code), "the gateway refused the message")
			return time.Time{}
		}
		a.metrics.retries.Inc()
		var next time.Time
		var failed bool
		_, uerr := a.store.updateOut(ctx, id, func(r *outRecord) error {
			if !r.Pending {
				return errSkip
			}
			r.Attempts++
			r.LastError = string(code)
			if r.Attempts >= a.cfg.Retry.MaxAttempts {
				failed = true
				r.advance(localapi.StateChange{State: localapi.StateFailed, At: a.now().UTC(), Reason: ReasonMaxAttempts, Detail: "last error " + string(code)})
				r.Pending = false
				return nil
			}
			next = a.now().Add(a.backoff(r.Attempts))
			r.NextAttempt = next
			return nil
		})
		if uerr != nil {
			a.log.Error("record upload attempt", "id", id, "err", uerr)
			return a.now().Add(time.Second)
		}
		a.log.Info("upload failed; will retry", "id", id, "code", code, "next", next)
		if failed {
			rec, _ := a.store.getOut(id)
			if rec != nil {
				a.outChanged(ctx, rec, localapi.StateFailed, ReasonMaxAttempts)
			}
			return time.Time{}
		}
		return next
	}
	if a.step(StepUploaded, id) != nil {
		return time.Time{}
	}
	rcpt := localapi.Receipt{Kind: api.EventAccepted, At: a.now().UTC(), Issuer: "gateway", Signed: resp.Receipt}
	if resp.Receipt != "" {
		if claims, err := a.gw.VerifyNotice(resp.Receipt); err == nil && claims.MessageID == id && claims.Event == api.EventAccepted {
			rcpt.Verified, rcpt.At = true, claims.At
		} else {
			a.log.Warn("accepted receipt did not verify", "id", id)
		}
	}
	now := a.now().UTC()
	// The gateway's accepted notice (the same receipt, in this agent's
	// mailbox) may have been applied first: then the state is sent
	// already, and the change is counted and audited once, there.
	advanced := false
	rec, err = a.store.updateOut(ctx, id, func(r *outRecord) error {
		if !r.hasReceipt(rcpt.Kind, rcpt.Signed) {
			r.Receipts = append(r.Receipts, rcpt)
		}
		advanced = r.advance(localapi.StateChange{State: localapi.StateSent, At: now})
		r.Pending = false
		return nil
	})
	if err != nil {
		a.log.Error("record upload", "id", id, "err", err)
		return a.now().Add(time.Second)
	}
	_ = os.Remove(a.envPath(id)) // the gateway holds it durably now
	if advanced {
		a.outChanged(ctx, rec, localapi.StateSent, "")
	}
	_ = a.step(StepSent, id)
	return time.Time{}
}

func (a *Agent) failOut(ctx context.Context, id, reason, detail string) {
	rec, err := a.store.updateOut(ctx, id, func(r *outRecord) error {
		r.advance(localapi.StateChange{State: localapi.StateFailed, At: a.now().UTC(), Reason: reason, Detail: detail})
		r.Pending = false
		return nil
	})
	if err != nil {
		a.log.Error("record failure", "id", id, "err", err)
		return
	}
	a.outChanged(ctx, rec, localapi.StateFailed, reason)
}

// retryable reports whether an upload failing with code may succeed later.
func retryable(code errs.Code) bool {
	switch code {
	case errs.Unavailable, errs.Internal, errs.Unauthenticated, errs.TokenExpired,
		errs.InvalidAssertion, errs.ReplayedJTI, errs.DigestMismatch, errs.SizeMismatch:
		return true
	}
	return false
}

// backoff is full jitter: a random duration in [0, min(Max, Initial*2^n)).
func (a *Agent) backoff(attempt int) time.Duration {
	ceil := a.cfg.Retry.Initial
	for i := 1; i < attempt && ceil < a.cfg.Retry.Max; i++ {
		ceil *= 2
	}
	if ceil > a.cfg.Retry.Max {
		ceil = a.cfg.Retry.Max
	}
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil)
}

// outChanged does what follows an outgoing state change: metrics, audit.
func (a *Agent) outChanged(ctx context.Context, rec *outRecord, state, reason string) {
	if rec.State != state {
		return
	}
	a.metrics.outState(rec)
	attrs := map[string]string{"state": state}
	if reason != "" {
		attrs["reason"] = reason
	}
	a.record(ctx, "message.state", rec.ID, attrs)
	a.log.Info("outgoing state", "id", rec.ID, "state", state, "reason", reason)
}
