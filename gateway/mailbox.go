package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/internal/errs"
)

const defaultPollItems = 10

// maxPollInlineTotal bounds the envelope bytes one poll answer carries
// inline (the rest are downloaded as usual).
const maxPollInlineTotal = 1 << 20

// handlePoll is GET /v1/mailbox?wait=30s&max=N: a long poll that leases up to
// max items and answers as soon as there is at least one, or after wait.
func (s *Server) handlePoll(w http.ResponseWriter, r *http.Request, account string) {
	q := r.URL.Query()
	wait := time.Duration(0)
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			s.fail(w, r, errs.Newf(errs.BadRequest, "wait must be a duration such as 30s"))
			return
		}
		wait = min(d, s.cfg.MaxPollWait)
	}
	max := defaultPollItems
	if v := q.Get("max"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			s.fail(w, r, errs.Newf(errs.BadRequest, "max must be a positive number"))
			return
		}
		max = min(n, s.cfg.MaxPollItems)
	}
	var inline int64
	if v := q.Get("inline"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			s.fail(w, r, errs.Newf(errs.BadRequest, "inline must be a number of bytes"))
			return
		}
		inline = min(n, int64(s.cfg.InlineMax))
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + s.cfg.BodyIdleTimeout))
	var timer <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	}
	ctx := r.Context()
	for {
		woken := s.q.Wait(account)
		now := s.now()
		items, err := s.q.Lease(ctx, account, max, now, now.Add(s.cfg.LeaseTimeout))
		if err != nil {
			s.fail(w, r, errs.New(errs.Internal, err))
			return
		}
		if len(items) > 0 || timer == nil {
			s.answerPoll(w, r, account, items, inline)
			return
		}
		select {
		case <-woken:
		case <-timer:
			s.answerPoll(w, r, account, nil, 0)
			return
		case <-s.stopping:
			s.answerPoll(w, r, account, nil, 0)
			return
		case <-ctx.Done():
			return
		}
	}
}

// answerPoll writes the leased items. Messages up to inline bytes (and
// maxPollInlineTotal in all) carry their envelope, which saves the receiver
// a download request per small message.
func (s *Server) answerPoll(w http.ResponseWriter, r *http.Request, account string, items []store.Item, inline int64) {
	out := api.MailboxResponse{Items: make([]api.MailboxItem, 0, len(items))}
	budget := int64(maxPollInlineTotal)
	for _, it := range items {
		mi := api.MailboxItem{Kind: it.Kind, Routing: it.Routing, Attempt: it.Attempts, LeaseUntil: it.LeaseUntil.UTC()}
		if it.Kind == api.KindNotice {
			mi.Notice = it.Receipt
		} else {
			if size := it.Routing.Size; size > 0 && size <= inline && size <= budget {
				if b := s.inlineContent(r.Context(), it.Routing.ID, size); b != nil {
					mi.Content, budget = b, budget-size
				}
			}
			s.met.transition(api.StateLeased, it.Routing.Type)
		}
		out.Items = append(out.Items, mi)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Add("Vary", "Accept")
	if acceptsMultipart(r.Header) {
		writePollMultipart(w, out)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// writePollMultipart writes a poll answer as multipart/mixed: first the
// JSON without contents, then each content raw in its own part, in item
// order. This spares both sides base64 and JSON scanning of the envelopes.
func writePollMultipart(w http.ResponseWriter, out api.MailboxResponse) {
	contents := make([][]byte, len(out.Items))
	for i := range out.Items {
		contents[i], out.Items[i].Content = out.Items[i].Content, nil
	}
	mw := multipart.NewWriter(w)
	h := w.Header()
	h.Set("Content-Type", mime.FormatMediaType(api.MediaMultipart, map[string]string{"boundary": mw.Boundary()}))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	part, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {api.MediaJSON}})
	if err != nil {
		return
	}
	if err := json.NewEncoder(part).Encode(out); err != nil {
		return
	}
	for i, b := range contents {
		if b == nil {
			continue
		}
		part, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":      {api.MediaOctetStream},
			api.HeaderMessageID: {out.Items[i].Routing.ID},
			api.HeaderDigest:    {out.Items[i].Routing.Digest},
		})
		if err != nil {
			return
		}
		if _, err := part.Write(b); err != nil {
			return
		}
	}
	_ = mw.Close()
}

// acceptsMultipart reports whether the Accept header names multipart/mixed
// with a q above 0. Wildcards (*/*, multipart/*) do not count: only clients
// that know the layout get it.
func acceptsMultipart(h http.Header) bool {
	for _, v := range h.Values("Accept") {
		for _, rng := range strings.Split(v, ",") {
			mt, params, _ := strings.Cut(rng, ";")
			if strings.EqualFold(strings.TrimSpace(mt), api.MediaMultipart) && qAboveZero(params) {
				return true
			}
		}
	}
	return false
}

// qAboveZero reports whether the media range parameters params
// ("a=b;q=0.5") give a q above 0 (or none, which means 1).
func qAboveZero(params string) bool {
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(k), "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return err == nil && q > 0
		}
	}
	return true
}

// idleWriter extends the connection's write deadline while bytes move.
type idleWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (iw *idleWriter) Write(p []byte) (int, error) {
	_ = iw.rc.SetWriteDeadline(time.Now().Add(iw.idle))
	return iw.ResponseWriter.Write(p)
}

func (iw *idleWriter) Unwrap() http.ResponseWriter { return iw.ResponseWriter }

// ownedMessage loads a message of the caller's mailbox.
func (s *Server) ownedItem(r *http.Request, account string) (store.Item, error) {
	return s.ownedItemID(r.Context(), account, r.PathValue("id"))
}

// ownedItemID is ownedItem for an id given otherwise.
func (s *Server) ownedItemID(ctx context.Context, account, id string) (store.Item, error) {
	it, err := s.st.Item(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && it.Owner != account) {
		return it, errs.New(errs.NotFound, err)
	}
	if err != nil {
		return it, errs.New(errs.Internal, err)
	}
	return it, nil
}

// handleContent is GET /v1/mailbox/{id}/content: the envelope bytes, with
// Range support for resumed downloads.
func (s *Server) handleContent(w http.ResponseWriter, r *http.Request, account string) {
	it, err := s.ownedItem(r, account)
	if err == nil && it.Kind != api.KindMessage {
		err = errs.New(errs.NotFound, nil)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if store.Terminal(it.State) {
		s.fail(w, r, errs.New(errs.NotDeliverable, nil))
		return
	}
	p, err := s.st.Payload(r.Context(), it.Routing.ID)
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, errs.New(errs.NotDeliverable, err))
		return
	}
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	defer p.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set(api.HeaderDigest, it.Routing.Digest)
	h.Set("ETag", `"`+strings.TrimSuffix(strings.TrimPrefix(it.Routing.Digest, "sha-256=:"), ":")+`"`)
	h.Set("Cache-Control", "no-store")
	iw := &idleWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: s.cfg.BodyIdleTimeout}
	ew := &contentErrWriter{ResponseWriter: iw, size: p.Size(), fail: func(err error) { s.fail(w, r, err) }}
	http.ServeContent(ew, r, "", time.Time{}, p)
}

// contentErrWriter turns http.ServeContent's text/plain error answers into
// the catalogue's JSON. ServeContent decides what a Range means (single,
// suffix, several as multipart/byteranges, If-Range); only its refusals
// change: 416 (a malformed Range, or one that starts at or beyond the end)
// becomes range_not_satisfiable with Content-Range: bytes */SIZE (RFC
// 9110, section 15.5.17), 412 (an If-Match that is not the envelope's
// ETag) precondition_failed, and a 5xx internal_error. Content-Digest, the
// whole envelope's, stays on a 416: a client resuming a download it
// already has complete checks its copy against it. ServeContent's own text
// body is dropped.
type contentErrWriter struct {
	http.ResponseWriter
	size    int64
	fail    func(error)
	refused bool
}

func (c *contentErrWriter) WriteHeader(code int) {
	if c.refused {
		return
	}
	var err *errs.Error
	switch {
	case code == http.StatusRequestedRangeNotSatisfiable:
		err = errs.New(errs.RangeNotSatisfiable, nil)
	case code == http.StatusPreconditionFailed:
		err = errs.New(errs.PreconditionFailed, nil)
	case code >= 500:
		err = errs.New(errs.Internal, errors.New("serve content: status "+strconv.Itoa(code)))
	default:
		c.ResponseWriter.WriteHeader(code)
		return
	}
	c.refused = true
	h := c.Header()
	h.Del("Content-Length")
	h.Del("ETag")
	h.Set("Cache-Control", "no-store")
	if err.Code == errs.RangeNotSatisfiable {
		h.Set("Content-Range", "bytes */"+strconv.FormatInt(c.size, 10))
	} else {
		h.Del(api.HeaderDigest)
	}
	c.fail(err)
}

func (c *contentErrWriter) Write(p []byte) (int, error) {
	if c.refused {
		return len(p), nil // ServeContent's text body
	}
	return c.ResponseWriter.Write(p)
}

func (c *contentErrWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// handleAck is POST /v1/mailbox/{id}/ack.
func (s *Server) handleAck(w http.ResponseWriter, r *http.Request, account string) {
	if err := s.ack(r.Context(), account, r.PathValue("id")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleAckBatch is POST /v1/mailbox/ack: acks several items at once. Each
// id is acked as by handleAck; they run together, so the store commits
// them in one group commit and the sender's notices in the same. The
// answer lists what failed, per id, with its code; the rest are acked.
func (s *Server) handleAckBatch(w http.ResponseWriter, r *http.Request, account string) {
	var req api.AckRequest
	if err := decodeJSON(w, r, &req, 64<<10); err != nil {
		s.fail(w, r, err)
		return
	}
	if len(req.IDs) == 0 || len(req.IDs) > api.MaxAckBatch {
		s.fail(w, r, errs.Newf(errs.BadRequest, "ids: 1 to %d", api.MaxAckBatch))
		return
	}
	seen := make(map[string]bool, len(req.IDs))
	for _, id := range req.IDs {
		if seen[id] {
			s.fail(w, r, errs.Newf(errs.BadRequest, "ids: %q twice", id))
			return
		}
		seen[id] = true
	}
	results := make([]error, len(req.IDs))
	var wg sync.WaitGroup
	for i, id := range req.IDs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.guard(r, func() error { return s.ack(r.Context(), account, id) })
		}()
	}
	wg.Wait()
	out := api.AckResponse{Failed: []api.AckFailure{}}
	for i, err := range results {
		if err != nil {
			out.Failed = append(out.Failed, api.AckFailure{ID: req.IDs[i], Code: errs.CodeOf(err)})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// ack marks item id of account's mailbox delivered (a message: with the
// signed delivered notice to its sender) or taken (a notice).
func (s *Server) ack(ctx context.Context, account, id string) error {
	it, err := s.ownedItemID(ctx, account, id)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	var n *store.Notice
	if it.Kind == api.KindMessage && !store.Terminal(it.State) {
		if n, err = s.signer.notice(it.Routing, api.EventDelivered, "", "", now); err != nil {
			return errs.New(errs.Internal, err)
		}
	}
	got, err := s.q.Ack(ctx, account, it.Routing.ID, now, n)
	if err != nil {
		return queueErr(err)
	}
	if it.Kind == api.KindMessage && !store.Terminal(it.State) && got.State == api.StateDelivered {
		s.met.transition(api.StateDelivered, it.Routing.Type)
		s.met.latency.Observe(now.Sub(it.AcceptedAt).Seconds())
		s.met.attempts.Observe(float64(got.Attempts))
	}
	return nil
}

var reReason = regexp.MustCompile(`^[a-z0-9_.]{1,64}$`)

// handleReject is POST /v1/mailbox/{id}/reject.
func (s *Server) handleReject(w http.ResponseWriter, r *http.Request, account string) {
	var req api.RejectRequest
	if err := decodeJSON(w, r, &req, 8<<10); err != nil {
		s.fail(w, r, err)
		return
	}
	if !reReason.MatchString(req.Reason) || len(req.Detail) > 500 || !utf8.ValidString(req.Detail) {
		s.fail(w, r, errs.Newf(errs.BadRequest, "reason must be a code ([a-z0-9_.], at most 64) and detail at most 500 bytes"))
		return
	}
	it, err := s.ownedItem(r, account)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if it.Kind != api.KindMessage {
		s.fail(w, r, errs.Newf(errs.BadRequest, "notices are acked, not rejected"))
		return
	}
	now := s.now().UTC()
	n, err := s.signer.notice(it.Routing, api.EventRejected, req.Reason, req.Detail, now)
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	got, err := s.q.Reject(r.Context(), account, it.Routing.ID, now, req.Reason, req.Detail, n)
	if err != nil {
		s.fail(w, r, queueErr(err))
		return
	}
	if !store.Terminal(it.State) && got.State == api.StateRejected {
		s.met.transition(api.StateRejected, it.Routing.Type)
	}
	w.WriteHeader(http.StatusNoContent)
}

func queueErr(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errs.New(errs.NotFound, err)
	case errors.Is(err, store.ErrState):
		return errs.New(errs.NotDeliverable, err)
	}
	return errs.New(errs.Internal, err)
}

// inlineContent reads a small stored envelope for a poll answer; nil when
// it cannot (the receiver then downloads it).
func (s *Server) inlineContent(ctx context.Context, id string, size int64) []byte {
	p, err := s.st.Payload(ctx, id)
	if err != nil {
		return nil
	}
	defer p.Close()
	if m, ok := p.(interface{ Bytes() []byte }); ok { // already in memory
		if b := m.Bytes(); int64(len(b)) == size {
			return b
		}
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(p, size+1))
	if err != nil || int64(len(b)) != size {
		return nil
	}
	return b
}
