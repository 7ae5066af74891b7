package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/schemas"
)

// syncEvery: a spooled upload is fsynced after this many bytes, so that a
// cut connection keeps most of what arrived durably.
const syncEvery = 16 << 20

var reContentRange = regexp.MustCompile(`^bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})$`)

// ParseDigest decodes an RFC 9530 Content-Digest value with a sha-256 entry.
func ParseDigest(v string) ([]byte, error) {
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		b64, ok := strings.CutPrefix(part, "sha-256=:")
		if !ok || !strings.HasSuffix(b64, ":") {
			continue
		}
		sum, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(b64, ":"))
		if err != nil || len(sum) != sha256.Size {
			return nil, errors.New("invalid sha-256 digest")
		}
		return sum, nil
	}
	return nil, errors.New("no sha-256 entry in Content-Digest")
}

// FormatDigest is the Content-Digest value of a SHA-256 sum.
func FormatDigest(sum []byte) string {
	return "sha-256=:" + base64.StdEncoding.EncodeToString(sum) + ":"
}

// contentRange is a parsed Content-Range of a resumed upload.
type contentRange struct {
	start, end, total int64
	set               bool
}

// routingFromRequest reads and checks the routing header of a submit.
func (s *Server) routingFromRequest(r *http.Request, account string) (api.Routing, []byte, contentRange, error) {
	h := r.Header
	rt := api.Routing{
		ID: r.PathValue("id"), From: h.Get(api.HeaderFrom), To: h.Get(api.HeaderTo), Type: h.Get(api.HeaderType),
		Conversation: h.Get(api.HeaderConversation), InReplyTo: h.Get(api.HeaderInReplyTo),
	}
	var cr contentRange
	bad := func(format string, args ...any) (api.Routing, []byte, contentRange, error) {
		return rt, nil, cr, errs.Newf(errs.InvalidHeader, format, args...)
	}
	if !isUUID(rt.ID) {
		return bad("message id must be a lower-case UUID")
	}
	if !isUUID(rt.From) || !isUUID(rt.To) {
		return bad("%s and %s must be account ids", api.HeaderFrom, api.HeaderTo)
	}
	if rt.From != account {
		return rt, nil, cr, errs.Newf(errs.Forbidden, "an account sends only as itself")
	}
	if !reType.MatchString(rt.Type) {
		return bad("invalid %s", api.HeaderType)
	}
	if (rt.Conversation != "" && !isUUID(rt.Conversation)) || (rt.InReplyTo != "" && !isUUID(rt.InReplyTo)) {
		return bad("conversation and in-reply-to must be UUIDs")
	}
	exp, err := time.Parse(time.RFC3339, h.Get(api.HeaderExpires))
	if err != nil {
		return bad("%s must be RFC 3339", api.HeaderExpires)
	}
	rt.Expires = exp.UTC()
	sum, err := ParseDigest(h.Get(api.HeaderDigest))
	if err != nil {
		return bad("Content-Digest must carry sha-256")
	}
	rt.Digest = FormatDigest(sum)
	if r.ContentLength < 0 {
		return bad("Content-Length is required")
	}
	rt.Size = r.ContentLength
	if v := h.Get("Content-Range"); v != "" {
		m := reContentRange.FindStringSubmatch(v)
		if m == nil {
			return bad("Content-Range must be bytes START-END/TOTAL")
		}
		cr.start, _ = strconv.ParseInt(m[1], 10, 64)
		cr.end, _ = strconv.ParseInt(m[2], 10, 64)
		cr.total, _ = strconv.ParseInt(m[3], 10, 64)
		cr.set = true
		if cr.end < cr.start || cr.end >= cr.total || cr.end-cr.start+1 != r.ContentLength {
			return bad("Content-Range does not match Content-Length")
		}
		rt.Size = cr.total
	}
	if v := h.Get(api.HeaderSize); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n != rt.Size {
			return bad("%s does not match the total size", api.HeaderSize)
		}
	}
	if rt.Size > int64(s.cfg.MaxMessageSize) {
		return rt, nil, cr, errs.Newf(errs.TooLarge, "at most %d bytes", int64(s.cfg.MaxMessageSize))
	}
	return rt, sum, cr, nil
}

// handleSubmit is PUT /v1/messages/{id}.
func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request, account string) {
	rt, sum, cr, err := s.routingFromRequest(r, account)
	if err != nil {
		s.refuse(w, r, err)
		return
	}
	ctx := r.Context()
	// Idempotency: the id is known already.
	if it, err := s.st.Item(ctx, rt.ID); err == nil {
		s.answerExisting(w, r, it, rt)
		return
	} else if !errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	now := s.now()
	if _, err := s.st.Account(ctx, rt.From); err != nil {
		s.refuse(w, r, errs.New(errs.UnknownSender, err))
		return
	}
	recv, err := s.st.Account(ctx, rt.To)
	if err != nil {
		s.refuse(w, r, errs.New(errs.UnknownReceiver, err))
		return
	}
	if _, known := schemas.Default().Lookup(rt.Type); !known {
		s.refuse(w, r, errs.New(errs.UnknownType, nil))
		return
	}
	if !containsString(recv.Types, rt.Type) {
		s.refuse(w, r, errs.New(errs.TypeNotAccepted, nil))
		return
	}
	if !rt.Expires.After(now) {
		s.refuse(w, r, errs.New(errs.Expired, nil))
		return
	}
	if !cr.set && rt.Size <= int64(s.cfg.InlineMax) {
		s.submitInline(w, r, rt, sum)
		return
	}
	s.submitSpooled(w, r, rt, sum, cr)
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// refuse answers a submit refusal (nothing stored) and counts it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	s.met.refusals.WithLabelValues(string(errs.CodeOf(err))).Inc()
	s.fail(w, r, err)
}

// answerExisting answers a submit of a known id: the same answer for the
// same routing and content, a conflict otherwise.
func (s *Server) answerExisting(w http.ResponseWriter, r *http.Request, it store.Item, rt api.Routing) {
	if it.Kind != api.KindMessage || !it.Routing.SameSubmit(rt) {
		s.refuse(w, r, errs.New(errs.Conflict, nil))
		return
	}
	writeJSON(w, http.StatusOK, api.SubmitResponse{ID: it.Routing.ID, State: api.StateAccepted, Receipt: it.Receipt})
}

// idleReader extends the connection's read deadline while bytes arrive.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	_ = ir.rc.SetReadDeadline(time.Now().Add(ir.idle))
	return ir.r.Read(p)
}

func (s *Server) submitInline(w http.ResponseWriter, r *http.Request, rt api.Routing, sum []byte) {
	body := &idleReader{r: r.Body, rc: http.NewResponseController(w), idle: s.cfg.BodyIdleTimeout}
	buf := make([]byte, rt.Size+1)
	n, err := io.ReadFull(body, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		s.refuse(w, r, errs.New(errs.BadRequest, fmt.Errorf("read body: %w", err)))
		return
	}
	if int64(n) != rt.Size {
		s.refuse(w, r, errs.New(errs.SizeMismatch, nil))
		return
	}
	buf = buf[:n]
	got := sha256.Sum256(buf)
	if !bytes.Equal(got[:], sum) {
		s.refuse(w, r, errs.New(errs.DigestMismatch, nil))
		return
	}
	s.accept(w, r, rt, store.Payload{Inline: buf})
}

func (s *Server) lockUpload(id string) bool {
	s.uploadsMu.Lock()
	defer s.uploadsMu.Unlock()
	if s.uploads[id] {
		return false
	}
	s.uploads[id] = true
	return true
}

func (s *Server) unlockUpload(id string) {
	s.uploadsMu.Lock()
	delete(s.uploads, id)
	s.uploadsMu.Unlock()
}

// submitSpooled streams a large (or resumed) upload into its partial file.
func (s *Server) submitSpooled(w http.ResponseWriter, r *http.Request, rt api.Routing, sum []byte, cr contentRange) {
	ctx := r.Context()
	if !s.lockUpload(rt.ID) {
		w.Header().Set("Retry-After", "1")
		s.fail(w, r, errs.Newf(errs.Unavailable, "an upload of this id is in progress"))
		return
	}
	defer s.unlockUpload(rt.ID)
	_, _, prevErr := s.st.Upload(ctx, rt.ID)
	path, err := s.st.StartUpload(ctx, rt, s.now())
	if errors.Is(err, store.ErrExists) {
		s.refuse(w, r, errs.Newf(errs.Conflict, "a partial upload of this id with other content exists"))
		return
	}
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	start := int64(0)
	if cr.set {
		start = cr.start
	}
	if start != have {
		if start == 0 {
			// A fresh full upload replaces a partial one.
			if err := f.Truncate(0); err != nil {
				s.fail(w, r, errs.New(errs.Internal, err))
				return
			}
			have = 0
		} else {
			w.Header().Set(api.HeaderUploadOffset, strconv.FormatInt(have, 10))
			if prevErr != nil {
				_ = s.st.DropUpload(ctx, rt.ID) // nothing was there: keep nothing
			}
			s.refuse(w, r, errs.Newf(errs.UploadOffset, "the stored part ends at %d", have))
			return
		}
	}
	h := sha256.New()
	if have > 0 {
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, have)); err != nil {
			s.fail(w, r, errs.New(errs.Internal, err))
			return
		}
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	body := &idleReader{r: r.Body, rc: http.NewResponseController(w), idle: s.cfg.BodyIdleTimeout}
	written, err := copySynced(f, h, io.LimitReader(body, r.ContentLength+1))
	if err != nil {
		// Cut connection or write failure: keep what arrived, durably.
		_ = f.Sync()
		s.log.Info("upload interrupted", "id", rt.ID, "offset", have+written)
		s.fail(w, r, errs.New(errs.BadRequest, fmt.Errorf("upload interrupted: %w", err)))
		return
	}
	total := have + written
	if written != r.ContentLength || total != rt.Size {
		_ = s.st.DropUpload(ctx, rt.ID)
		s.refuse(w, r, errs.New(errs.SizeMismatch, nil))
		return
	}
	if !bytes.Equal(h.Sum(nil), sum) {
		_ = s.st.DropUpload(ctx, rt.ID)
		s.refuse(w, r, errs.New(errs.DigestMismatch, nil))
		return
	}
	if err := f.Sync(); err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	if err := f.Close(); err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	s.accept(w, r, rt, store.Payload{SpoolFile: path})
}

// copySynced copies src to f and h, fsyncing f every syncEvery bytes.
func copySynced(f *os.File, h hash.Hash, src io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var n, sinceSync int64
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			if _, err := f.Write(buf[:k]); err != nil {
				return n, err
			}
			h.Write(buf[:k])
			n += int64(k)
			sinceSync += int64(k)
			if sinceSync >= syncEvery {
				if err := f.Sync(); err != nil {
					return n, err
				}
				sinceSync = 0
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// accept signs the accepted receipt and commits the message.
func (s *Server) accept(w http.ResponseWriter, r *http.Request, rt api.Routing, p store.Payload) {
	now := s.now().UTC()
	n, err := s.signer.notice(rt, api.EventAccepted, "", "", now)
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	it := store.Item{Routing: rt, Receipt: n.JWS, AcceptedAt: now}
	// The receipt is also the accepted notice in the sender's mailbox,
	// for a sender that lost the answer (or reads all outcomes there).
	got, err := s.st.Accept(r.Context(), it, p, n)
	if errors.Is(err, store.ErrExists) {
		if p.SpoolFile != "" {
			_ = s.st.DropUpload(r.Context(), rt.ID)
		}
		s.answerExisting(w, r, got, rt)
		return
	}
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	s.met.transition(api.StateAccepted, rt.Type)
	writeJSON(w, http.StatusCreated, api.SubmitResponse{ID: rt.ID, State: api.StateAccepted, Receipt: got.Receipt})
}

// handleUploadOffset is HEAD /v1/messages/{id}: how much of an upload the
// gateway holds durably (the whole size once accepted).
func (s *Server) handleUploadOffset(w http.ResponseWriter, r *http.Request, account string) {
	id := r.PathValue("id")
	ctx := r.Context()
	if it, err := s.st.Item(ctx, id); err == nil && it.Kind == api.KindMessage && it.Routing.From == account {
		w.Header().Set(api.HeaderUploadOffset, strconv.FormatInt(it.Routing.Size, 10))
		w.Header().Set(api.HeaderSize, strconv.FormatInt(it.Routing.Size, 10))
		w.WriteHeader(http.StatusOK)
		return
	}
	u, path, err := s.st.Upload(ctx, id)
	if err != nil || u.Routing.From != account {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	var off int64
	if s.lockUpload(id) { // not being written now: sync and measure
		if f, err := os.OpenFile(path, os.O_RDWR, 0); err == nil {
			_ = f.Sync()
			if st, err := f.Stat(); err == nil {
				off = st.Size()
			}
			_ = f.Close()
		}
		s.unlockUpload(id)
	} else {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.Header().Set(api.HeaderUploadOffset, strconv.FormatInt(off, 10))
	w.Header().Set(api.HeaderSize, strconv.FormatInt(u.Routing.Size, 10))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// handleStatus is GET /v1/messages/{id}/status, for sender or receiver;
// anyone else gets 404 so that existence does not leak.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request, account string) {
	it, err := s.st.Item(r.Context(), r.PathValue("id"))
	if err != nil || it.Kind != api.KindMessage || (it.Routing.From != account && it.Routing.To != account) {
		s.fail(w, r, errs.New(errs.NotFound, err))
		return
	}
	writeJSON(w, http.StatusOK, toStatus(it))
}

func toStatus(it store.Item) api.MessageStatus {
	h := it.History
	if h == nil {
		h = []api.StateChange{}
	}
	return api.MessageStatus{Routing: it.Routing, State: it.State, Attempts: it.Attempts, History: h}
}
