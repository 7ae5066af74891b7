package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/durable"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/httprecover"
)

// Local API limits on request shape (payload limits are in the config).
const (
	maxFieldSize  = 1024
	maxFields     = 32
	maxEventsWait = 60 * time.Second
	maxListLimit  = 10000
)

// apiHandler is the local API (agent/localapi, openapi.yaml).
func (a *Agent) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+localapi.PathHealth, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET "+localapi.PathReady, a.handleReady)
	mux.HandleFunc("GET "+localapi.PathOpenAPI, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(localapi.OpenAPI)
	})
	auth := a.requireToken
	mux.Handle("POST "+localapi.PathMessages, auth(a.handleSend))
	mux.Handle("GET "+localapi.PathMessages, auth(a.handleList))
	mux.Handle("GET "+localapi.PathMessage+"{id}", auth(a.handleDetail))
	mux.Handle("GET "+localapi.PathMessage+"{id}/manifest", auth(a.handleManifest))
	mux.Handle("GET "+localapi.PathMessage+"{id}/files/{name...}", auth(a.handleFile))
	mux.Handle("POST "+localapi.PathMessage+"{id}/processed", auth(a.handleProcessed))
	mux.Handle("POST "+localapi.PathMessage+"{id}/rejected", auth(a.handleRejected))
	mux.Handle("GET "+localapi.PathEvents, auth(a.handleEvents))
	mux.Handle("/", auth(func(w http.ResponseWriter, _ *http.Request) {
		errs.Write(w, errs.Newf(errs.NotFound, "no such endpoint"))
	}))
	// A panic in a handler answers 500 internal_error and is logged with
	// its type and stack, not its value: this process holds plaintext.
	return httprecover.Handler(a.log, mux, httprecover.Options{})
}

func (a *Agent) handleReady(w http.ResponseWriter, _ *http.Request) {
	if !a.Ready() {
		errs.Write(w, errs.Newf(errs.Unavailable, "the gateway has not been reached yet"))
		return
	}
	// The outbox, inbox and receipts are promised durable: a store that
	// cannot commit (closed, failed or stalled) takes nothing in.
	if err := a.store.db.Health(); err != nil {
		errs.Write(w, errs.Newf(errs.Unavailable, "the agent's store cannot commit"))
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "ready\n")
}

// requireToken checks the Bearer token in constant time (over digests, so
// the length does not leak either).
func (a *Agent) requireToken(h http.HandlerFunc) http.Handler {
	want := sha256.Sum256([]byte(a.token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kurer-agent"`)
			errs.Write(w, errs.Newf(errs.Unauthenticated, "a valid Bearer token is required"))
			return
		}
		h(w, r)
	})
}

// writeError answers err with its public code; a schema failure lists every
// error with its path. Causes stay in the log.
func (a *Agent) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := errs.CodeOf(err)
	if code.Status() >= 500 {
		a.log.Error("local api request failed", "method", r.Method, "route", r.Pattern, "code", code, "err", durable.Pathless(err))
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(errs.SchemaInvalid.Status())
		_ = json.NewEncoder(w).Encode(localapi.ErrorBody{
			Code: string(errs.SchemaInvalid), Message: errs.SchemaInvalid.Message(),
			Detail: fmt.Sprintf("%d schema error(s)", len(ve.Reasons)), Errors: ve.Reasons,
		})
		return
	}
	errs.Write(w, err)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// handleSend streams a multipart send: fields, metadata and files are read
// part by part under limits; files are spooled to disk, never held in
// memory; the answer 202 comes only after the outbox holds the message.
func (a *Agent) handleSend(w http.ResponseWriter, r *http.Request) {
	lim := a.cfg.LocalAPI
	r.Body = http.MaxBytesReader(w, r.Body, lim.MaxTotalSize+lim.MaxMetadataSize+int64(lim.MaxFiles+maxFields)*4096+(1<<20))
	mr, err := r.MultipartReader()
	if err != nil {
		a.writeError(w, r, errs.Newf(errs.BadRequest, "want multipart/form-data"))
		return
	}
	stage, err := os.MkdirTemp(a.store.path(dirSpool), "send-*")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	defer os.RemoveAll(stage)

	var (
		c        adapter.Case
		haveMeta bool
		fields   int
		total    int64
	)
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			a.writeError(w, r, bodyError(err))
			return
		}
		name := part.FormName()
		switch name {
		case localapi.FieldType, localapi.FieldTo, localapi.FieldID, localapi.FieldConversation,
			localapi.FieldInReplyTo, localapi.FieldExpires:
			fields++
			if fields > maxFields {
				a.writeError(w, r, errs.Newf(errs.BadRequest, "too many fields"))
				return
			}
			v, err := io.ReadAll(io.LimitReader(part, maxFieldSize+1))
			if err != nil {
				a.writeError(w, r, bodyError(err))
				return
			}
			if len(v) > maxFieldSize {
				a.writeError(w, r, errs.Newf(errs.BadRequest, "field %s too long", name))
				return
			}
			s := strings.TrimSpace(string(v))
			switch name {
			case localapi.FieldType:
				c.Type = s
			case localapi.FieldTo:
				c.To = s
			case localapi.FieldID:
				c.ID = s
			case localapi.FieldConversation:
				c.Conversation = s
			case localapi.FieldInReplyTo:
				c.InReplyTo = s
			case localapi.FieldExpires:
				t, err := time.Parse(time.RFC3339, s)
				if err != nil {
					a.writeError(w, r, errs.Newf(errs.BadRequest, "expires: want RFC 3339"))
					return
				}
				c.Expires = t
			}
		case localapi.FieldMetadata:
			if haveMeta {
				a.writeError(w, r, errs.Newf(errs.BadRequest, "metadata given twice"))
				return
			}
			haveMeta = true
			v, err := io.ReadAll(io.LimitReader(part, lim.MaxMetadataSize+1))
			if err != nil {
				a.writeError(w, r, bodyError(err))
				return
			}
			if int64(len(v)) > lim.MaxMetadataSize {
				a.writeError(w, r, errs.Newf(errs.TooLarge, "metadata larger than %d bytes", lim.MaxMetadataSize))
				return
			}
			c.Metadata = v
		case localapi.FieldFile:
			if len(c.Files) >= lim.MaxFiles {
				a.writeError(w, r, errs.Newf(errs.TooLarge, "more than %d files", lim.MaxFiles))
				return
			}
			fname := partFileName(part.Header.Get("Content-Disposition"))
			if err := checkFileName(fname); err != nil {
				a.writeError(w, r, err)
				return
			}
			p := filepath.Join(stage, strconv.Itoa(len(c.Files)))
			n, err := spoolPart(p, part, min(lim.MaxFileSize, lim.MaxTotalSize-total))
			if err != nil {
				a.writeError(w, r, err)
				return
			}
			total += n
			mt := part.Header.Get("Content-Type")
			if mt == "application/octet-stream" {
				mt = "" // the client's default: guess from the name instead
			}
			c.Files = append(c.Files, adapter.File{Name: fname, MediaType: mt, Path: p})
		default:
			a.writeError(w, r, errs.Newf(errs.BadRequest, "unknown field %q", name))
			return
		}
	}
	if c.Type == "" || c.To == "" || !haveMeta {
		a.writeError(w, r, errs.Newf(errs.BadRequest, "type, to and metadata are required"))
		return
	}
	resp, err := a.Send(r.Context(), c)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, resp)
}

// partFileName reads the filename parameter itself: mime/multipart's
// FileName keeps only the base name, and ours are relative paths.
func partFileName(cd string) string {
	_, params, err := mime.ParseMediaType(cd)
	if err != nil {
		return ""
	}
	return params["filename"]
}

// spoolPart copies a part into path, refusing more than max bytes.
func spoolPart(path string, r io.Reader, max int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, io.LimitReader(r, max+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, bodyError(err)
	}
	if n > max {
		return 0, errs.Newf(errs.TooLarge, "a file or the total is larger than allowed")
	}
	return n, nil
}

func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errs.New(errs.TooLarge, err)
	}
	return errs.New(errs.BadRequest, err)
}

func (a *Agent) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dir := q.Get("direction")
	state := q.Get("state")
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxListLimit {
			a.writeError(w, r, errs.Newf(errs.BadRequest, "limit: want 1..%d", maxListLimit))
			return
		}
		limit = n
	}
	out, err := a.List(dir, state, limit)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// List returns messages of a direction ("out", "in" or "" for both) in a
// state ("" for any), oldest first, at most limit.
func (a *Agent) List(direction, state string, limit int) ([]localapi.MessageSummary, error) {
	out := []localapi.MessageSummary{}
	switch direction {
	case "", localapi.DirectionOut, localapi.DirectionIn:
	default:
		return nil, errs.Newf(errs.BadRequest, "direction: want out or in")
	}
	if direction != localapi.DirectionIn {
		if state != "" {
			if _, ok := outRank[state]; !ok && direction == localapi.DirectionOut {
				return nil, errs.Newf(errs.BadRequest, "state: not an outgoing state")
			}
		}
		recs, err := a.store.listOut(state, limit, false)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			out = append(out, outSummary(r))
		}
	}
	if direction != localapi.DirectionOut {
		if state != "" {
			if _, ok := inRank[state]; !ok && direction == localapi.DirectionIn {
				return nil, errs.Newf(errs.BadRequest, "state: not an incoming state")
			}
		}
		recs, err := a.store.listIn(state, limit, false)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			out = append(out, inSummary(r))
		}
	}
	// Each direction gave its oldest limit; merged, the oldest limit of all.
	slices.SortStableFunc(out, func(x, y localapi.MessageSummary) int {
		if c := x.Created.Compare(y.Created); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func outSummary(r *outRecord) localapi.MessageSummary {
	return localapi.MessageSummary{ID: r.ID, Direction: localapi.DirectionOut, Type: r.Type, From: r.From, To: r.To,
		State: r.State, Size: r.Size, Created: r.Created, Updated: r.History[len(r.History)-1].At}
}

func inSummary(r *inRecord) localapi.MessageSummary {
	return localapi.MessageSummary{ID: r.ID, Direction: localapi.DirectionIn, Type: r.Type, From: r.From, To: r.To,
		State: r.State, Size: r.Size, Created: r.Created, Updated: r.History[len(r.History)-1].At}
}

// Message returns a message's detail: state, history and receipts (and, for
// an incoming message, its files).
func (a *Agent) Message(id string) (localapi.MessageDetail, error) {
	if o, err := a.store.getOut(id); err == nil {
		return localapi.MessageDetail{MessageSummary: outSummary(o), Conversation: o.Conversation, InReplyTo: o.InReplyTo,
			Expires: o.Expires, History: o.History, Receipts: nonNil(o.Receipts)}, nil
	} else if !errors.Is(err, errNotFound) {
		return localapi.MessageDetail{}, err
	}
	in, err := a.store.getIn(id)
	if errors.Is(err, errNotFound) {
		return localapi.MessageDetail{}, errs.Newf(errs.NotFound, "no such message")
	}
	if err != nil {
		return localapi.MessageDetail{}, err
	}
	return localapi.MessageDetail{MessageSummary: inSummary(in), Conversation: in.Conversation, InReplyTo: in.InReplyTo,
		Expires: in.Expires, History: in.History, Receipts: nonNil(in.Receipts), Files: in.Files, Reasons: in.Reasons}, nil
}

func nonNil(r []localapi.Receipt) []localapi.Receipt {
	if r == nil {
		return []localapi.Receipt{}
	}
	return r
}

func (a *Agent) handleDetail(w http.ResponseWriter, r *http.Request) {
	d, err := a.Message(r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// storedIn returns an incoming case that has its payload in the inbox.
func (a *Agent) storedIn(id string) (*inRecord, error) {
	rec, err := a.store.getIn(id)
	if err != nil || rec.Receipt || rec.Files == nil {
		return nil, errs.Newf(errs.NotFound, "no such received message")
	}
	return rec, nil
}

func (a *Agent) handleManifest(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := a.storedIn(id); err != nil {
		a.writeError(w, r, err)
		return
	}
	f, err := os.Open(filepath.Join(a.inDir(id), "manifest.json"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.Copy(w, f)
}

func (a *Agent) handleFile(w http.ResponseWriter, r *http.Request) {
	id, name := r.PathValue("id"), r.PathValue("name")
	rec, err := a.storedIn(id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var file *localapi.File
	for i := range rec.Files {
		if rec.Files[i].Name == name {
			file = &rec.Files[i]
		}
	}
	if file == nil { // only names from the signed manifest are served
		a.writeError(w, r, errs.Newf(errs.NotFound, "no such file"))
		return
	}
	f, err := os.Open(filepath.Join(a.inDir(id), "payload", filepath.FromSlash(name)))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	defer f.Close()
	ct := file.MediaType
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.FormatInt(file.Size, 10))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set(localapi.HeaderReprDigest, localapi.ReprDigest(file.SHA256))
	_, _ = io.Copy(w, f)
}

func (a *Agent) handleProcessed(w http.ResponseWriter, r *http.Request) {
	if err := a.Processed(r.Context(), r.PathValue("id")); err != nil {
		a.writeError(w, r, err)
		return
	}
	d, err := a.Message(r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (a *Agent) handleRejected(w http.ResponseWriter, r *http.Request) {
	var req localapi.RejectRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		a.writeError(w, r, errs.New(errs.MalformedJSON, err))
		return
	}
	if _, err := dec.Token(); err != io.EOF { // one JSON value, nothing after it
		a.writeError(w, r, errs.Newf(errs.MalformedJSON, "data after the JSON value"))
		return
	}
	if err := a.Rejected(r.Context(), r.PathValue("id"), req.Reasons); err != nil {
		a.writeError(w, r, err)
		return
	}
	d, err := a.Message(r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	if s := q.Get("after"); s == localapi.AfterLatest {
		n, err := a.store.lastEvent()
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		after = n
	} else if s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			a.writeError(w, r, errs.Newf(errs.BadRequest, "after: want a sequence number"))
			return
		}
		after = n
	}
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			a.writeError(w, r, errs.Newf(errs.BadRequest, "wait: want a duration such as 30s"))
			return
		}
		wait = min(d, maxEventsWait)
	}
	resp, err := a.Events(r.Context(), after, wait)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// Events returns state changes with Seq > after, waiting up to wait for the
// first one.
func (a *Agent) Events(ctx context.Context, after uint64, wait time.Duration) (localapi.EventsResponse, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		ch := a.store.watch()
		evs, next, err := a.store.events(after, 1000)
		if err != nil {
			return localapi.EventsResponse{}, err
		}
		if len(evs) > 0 || wait <= 0 {
			if evs == nil {
				evs = []localapi.Event{}
			}
			return localapi.EventsResponse{Events: evs, Next: next}, nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			wait = 0
		case <-ctx.Done():
			return localapi.EventsResponse{Events: []localapi.Event{}, Next: after}, nil
		case <-a.halt:
			return localapi.EventsResponse{Events: []localapi.Event{}, Next: after}, nil
		}
	}
}
