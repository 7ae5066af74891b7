package localapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kurer/kurer/internal/errs"
)

// Limits the client applies to what the agent answers (limits before parsers).
const (
	// maxJSONResponse caps a JSON answer (listings, details, events).
	maxJSONResponse = 16 << 20
	// maxErrorBody caps an error body read for its code.
	maxErrorBody = 64 << 10
)

// Client calls an agent's local API. It is safe for concurrent use. Every
// error it returns carries a public code: errors.As(err, new(*errs.Error))
// always holds; a connection failure has the code errs.Unavailable.
type Client struct {
	base  *url.URL // scheme+host (+ path prefix) requests are made against
	token string
	hc    *http.Client
	ua    string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient replaces the HTTP client (e.g. for a custom transport). For
// a unix:// base URL the client's transport is replaced by a unix dialer.
// The client must not set Timeout: long polls and large uploads are bounded by
// the caller's context instead.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// WithUserAgent sets the User-Agent header (default "kurer-localapi").
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.ua = ua }
}

// NewClient returns a client for the agent at baseURL, which is
// http://127.0.0.1:PORT (optionally with a path prefix) or
// unix:///path/to/agent.sock. token is the local API's Bearer token ("" sends
// none).
func NewClient(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("agent url: %w", err)
	}
	c := &Client{token: token, ua: "kurer-localapi"}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("agent url %q: no host", baseURL)
		}
		c.base = &url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimSuffix(u.Path, "/")}
	case "unix":
		sock := u.Path
		if sock == "" {
			sock = u.Opaque
		}
		if sock == "" {
			return nil, fmt.Errorf("agent url %q: no socket path", baseURL)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		hc := *c.hc
		hc.Transport = tr
		c.hc = &hc
		c.base = &url.URL{Scheme: "http", Host: "agent"}
	default:
		return nil, fmt.Errorf("agent url %q: scheme must be http, https or unix", baseURL)
	}
	return c, nil
}

// SendFile is one payload file of a send. Open is called once, when the file's
// part is written; the content is streamed, never held in memory.
type SendFile struct {
	// Name is the file's name in the envelope: a relative path with /
	// separators.
	Name string
	// Open returns the content; the client closes it.
	Open func() (io.ReadCloser, error)
	// Size is the content length in bytes, used for progress; -1 if unknown.
	Size int64
}

// SendRequest is one case to send.
type SendRequest struct {
	// Type is the message type, e.g. no.kurer.barnevern.sak.overforing.v1.
	Type string
	// To is the receiver: an account id (UUID), "municipality:NNNN" or
	// "org:NNNNNNNNN".
	To string
	// ID is an optional client-chosen message id (UUID) that makes retries of
	// the send idempotent.
	ID           string
	Conversation string
	InReplyTo    string
	// Expires is optional; zero uses the type's default.
	Expires time.Time
	// Metadata is the business message JSON (validated by the agent against
	// the type's schema).
	Metadata []byte
	Files    []SendFile
	// Progress, if set, is called as payload bytes are written to the
	// agent: sent so far and the total (-1 if a file's size is unknown). It
	// is called from the uploading goroutine.
	Progress func(sent, total int64)
}

// Send streams req to the agent as multipart/form-data and returns once the
// agent holds the message durably in its outbox.
func (c *Client) Send(ctx context.Context, req SendRequest) (SendResponse, error) {
	var out SendResponse
	if req.Type == "" || req.To == "" {
		return out, errs.Newf(errs.BadRequest, "type and receiver are required")
	}
	for _, f := range req.Files {
		if f.Name == "" || f.Open == nil {
			return out, errs.Newf(errs.BadRequest, "every file needs a name and an Open function")
		}
		if strings.ContainsAny(f.Name, "\r\n\x00") {
			return out, errs.Newf(errs.BadRequest, "file name with a control character")
		}
	}
	total := int64(0)
	for _, f := range req.Files {
		if f.Size < 0 {
			total = -1
			break
		}
		total += f.Size
	}

	hreq, err := c.newRequest(ctx, http.MethodPost, PathMessages, nil, nil)
	if err != nil {
		return out, err
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	hreq.Body = pr
	hreq.ContentLength = -1
	hreq.Header.Set("Content-Type", mw.FormDataContentType())
	writeErr := make(chan error, 1)
	go func() {
		err := writeSend(mw, req, total)
		pw.CloseWithError(err)
		writeErr <- err
	}()
	err = c.doJSON(hreq, http.StatusAccepted, &out)
	// If the request ended before the body was consumed, unblock the writer
	// and wait for it, so no file stays open and Progress is not called
	// after Send returns.
	pr.CloseWithError(errRequestDone)
	werr := <-writeErr
	var se *sourceError
	if errors.As(werr, &se) {
		return out, &errs.Error{Code: errs.BadRequest, Detail: "reading the files to send", Cause: werr}
	}
	return out, err
}

var errRequestDone = errors.New("request finished")

// sourceError marks a failure to open or read a file being sent, as
// opposed to the upload's end of the pipe closing.
type sourceError struct {
	name string
	err  error
}

func (e *sourceError) Error() string { return e.name + ": " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// sourceReader marks read errors of r as *sourceError.
type sourceReader struct {
	name string
	r    io.Reader
}

func (s sourceReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if err != nil && err != io.EOF {
		err = &sourceError{name: s.name, err: err}
	}
	return n, err
}

// writeSend writes the multipart body: the fields first, then the metadata,
// then each file streamed from its Open.
func writeSend(mw *multipart.Writer, req SendRequest, total int64) error {
	fields := []struct{ k, v string }{
		{FieldType, req.Type},
		{FieldTo, req.To},
		{FieldID, req.ID},
		{FieldConversation, req.Conversation},
		{FieldInReplyTo, req.InReplyTo},
	}
	if !req.Expires.IsZero() {
		fields = append(fields, struct{ k, v string }{FieldExpires, req.Expires.UTC().Format(time.RFC3339)})
	}
	for _, f := range fields {
		if f.v == "" {
			continue
		}
		if err := mw.WriteField(f.k, f.v); err != nil {
			return err
		}
	}
	if req.Metadata != nil {
		h := make(textproto.MIMEHeader)
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, FieldMetadata, MetadataFile))
		h.Set("Content-Type", "application/json")
		w, err := mw.CreatePart(h)
		if err != nil {
			return err
		}
		if _, err := w.Write(req.Metadata); err != nil {
			return err
		}
	}
	var sent int64
	for _, f := range req.Files {
		h := make(textproto.MIMEHeader)
		h.Set("Content-Disposition", `form-data; name="`+FieldFile+`"; filename="`+escapeQuotes(f.Name)+`"`)
		h.Set("Content-Type", "application/octet-stream")
		w, err := mw.CreatePart(h)
		if err != nil {
			return err
		}
		rc, err := f.Open()
		if err != nil {
			return &sourceError{name: f.Name, err: err}
		}
		var dst io.Writer = w
		if req.Progress != nil {
			dst = &progressWriter{w: w, sent: &sent, total: total, fn: req.Progress}
		}
		_, err = io.Copy(dst, sourceReader{name: f.Name, r: rc})
		rc.Close()
		if err != nil {
			return err
		}
	}
	if req.Progress != nil && len(req.Files) == 0 {
		req.Progress(0, total)
	}
	return mw.Close()
}

// escapeQuotes escapes a file name for a Content-Disposition parameter the
// way mime/multipart does (quotes and backslashes).
func escapeQuotes(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}

type progressWriter struct {
	w     io.Writer
	sent  *int64
	total int64
	fn    func(sent, total int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	*p.sent += int64(n)
	p.fn(*p.sent, p.total)
	return n, err
}

// Message returns one message's detail: state history, receipts and, for an
// incoming message, its files.
func (c *Client) Message(ctx context.Context, id string) (MessageDetail, error) {
	var out MessageDetail
	req, err := c.newRequest(ctx, http.MethodGet, PathMessage+url.PathEscape(id), nil, nil)
	if err != nil {
		return out, err
	}
	err = c.doJSON(req, http.StatusOK, &out)
	return out, err
}

// List lists messages by direction (DirectionOut or DirectionIn; "" both),
// state ("" any) and at most limit rows (0: the agent's default).
func (c *Client) List(ctx context.Context, direction, state string, limit int) ([]MessageSummary, error) {
	q := url.Values{}
	if direction != "" {
		q.Set("direction", direction)
	}
	if state != "" {
		q.Set("state", state)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	req, err := c.newRequest(ctx, http.MethodGet, PathMessages, q, nil)
	if err != nil {
		return nil, err
	}
	var out []MessageSummary
	if err := c.doJSON(req, http.StatusOK, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// File opens a received file's content. The caller closes it.
//
// The agent sends the file's SHA-256 (Repr-Digest); reading to the end
// checks it, and a file that does not match ends in ErrDigestMismatch
// instead of io.EOF.
func (c *Client) File(ctx context.Context, id, name string) (io.ReadCloser, error) {
	return c.getStream(ctx, PathMessage+url.PathEscape(id)+"/files/"+escapeName(name))
}

// ErrDigestMismatch ends the read of a file whose bytes do not match the
// digest the agent sent with it.
var ErrDigestMismatch = errors.New("file does not match its digest")

// HeaderReprDigest carries a file's SHA-256 (RFC 9530: sha-256=:base64:).
const HeaderReprDigest = "Repr-Digest"

// ReprDigest formats a hex SHA-256 as a Repr-Digest value.
func ReprDigest(hexSum string) string {
	b, err := hex.DecodeString(hexSum)
	if err != nil {
		return ""
	}
	return "sha-256=:" + base64.StdEncoding.EncodeToString(b) + ":"
}

// verifyingBody hashes what is read and checks it at EOF.
type verifyingBody struct {
	io.ReadCloser
	h    hash.Hash
	want []byte
}

func (v *verifyingBody) Read(p []byte) (int, error) {
	n, err := v.ReadCloser.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF && !bytes.Equal(v.h.Sum(nil), v.want) {
		return n, ErrDigestMismatch
	}
	return n, err
}

// parseReprDigest returns the SHA-256 in a Repr-Digest value, if any.
func parseReprDigest(v string) []byte {
	for _, part := range strings.Split(v, ",") {
		alg, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || !strings.EqualFold(alg, "sha-256") || len(val) < 2 || val[0] != ':' || val[len(val)-1] != ':' {
			continue
		}
		if b, err := base64.StdEncoding.DecodeString(val[1 : len(val)-1]); err == nil && len(b) == sha256.Size {
			return b
		}
	}
	return nil
}

// Manifest opens a received message's manifest.json. The caller closes it.
func (c *Client) Manifest(ctx context.Context, id string) (io.ReadCloser, error) {
	return c.getStream(ctx, PathMessage+url.PathEscape(id)+"/manifest")
}

// escapeName escapes each segment of a relative file name, keeping the /.
func escapeName(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

func (c *Client) getStream(ctx context.Context, path string) (io.ReadCloser, error) {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, responseError(resp)
	}
	if want := parseReprDigest(resp.Header.Get(HeaderReprDigest)); want != nil {
		return &verifyingBody{ReadCloser: resp.Body, h: sha256.New(), want: want}, nil
	}
	return resp.Body, nil
}

// Processed marks a received message processed; the agent sends the signed
// behandlet receipt to the sender.
func (c *Client) Processed(ctx context.Context, id string) error {
	req, err := c.newRequest(ctx, http.MethodPost, PathMessage+url.PathEscape(id)+"/processed", nil, nil)
	if err != nil {
		return err
	}
	return c.doJSON(req, 0, nil)
}

// Rejected marks a received message rejected with reasons; the agent sends
// the signed avvist receipt to the sender.
func (c *Client) Rejected(ctx context.Context, id string, r RejectRequest) error {
	body, err := json.Marshal(r)
	if err != nil {
		return errs.New(errs.BadRequest, err)
	}
	req, err := c.newRequest(ctx, http.MethodPost, PathMessage+url.PathEscape(id)+"/rejected", nil, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.doJSON(req, 0, nil)
}

// Events long-polls state changes after sequence number after, waiting at
// most wait (0: answer at once) for the first one. Pass the answer's Next as
// after on the next call.
func (c *Client) Events(ctx context.Context, after uint64, wait time.Duration) (EventsResponse, error) {
	var out EventsResponse
	q := url.Values{}
	q.Set("after", strconv.FormatUint(after, 10))
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	req, err := c.newRequest(ctx, http.MethodGet, PathEvents, q, nil)
	if err != nil {
		return out, err
	}
	err = c.doJSON(req, http.StatusOK, &out)
	return out, err
}

// LatestEvent returns the sequence number of the agent's newest event (0
// when there is none): the after to pass to Events to see only what
// happens from now on.
func (c *Client) LatestEvent(ctx context.Context) (uint64, error) {
	q := url.Values{}
	q.Set("after", AfterLatest)
	req, err := c.newRequest(ctx, http.MethodGet, PathEvents, q, nil)
	if err != nil {
		return 0, err
	}
	var out EventsResponse
	if err := c.doJSON(req, http.StatusOK, &out); err != nil {
		return 0, err
	}
	return out.Next, nil
}

// Ready returns nil once the agent answers its readiness probe with 200.
func (c *Client) Ready(ctx context.Context) error {
	req, err := c.newRequest(ctx, http.MethodGet, PathReady, nil, nil)
	if err != nil {
		return err
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	if resp.StatusCode != http.StatusOK {
		return errs.Newf(errs.Unavailable, "agent not ready (HTTP %d)", resp.StatusCode)
	}
	return nil
}

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	// path is already escaped (ids and file names by their callers).
	u := c.base.String() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, errs.New(errs.BadRequest, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", c.ua)
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// do sends req; a transport failure becomes errs.Unavailable (or the
// context's error, wrapped, when the context ended).
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, &errs.Error{Code: errs.Unavailable, Detail: "cancelled", Cause: ctxErr}
		}
		return nil, errs.New(errs.Unavailable, err)
	}
	return resp, nil
}

// doJSON sends req and decodes a JSON answer into out (nil: discard). want
// is the expected status; 0 accepts any 2xx.
func (c *Client) doJSON(req *http.Request, want int, out any) error {
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	ok := resp.StatusCode == want || (want == 0 && resp.StatusCode/100 == 2)
	if !ok {
		return responseError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxJSONResponse))
	if err := dec.Decode(out); err != nil {
		return &errs.Error{Code: errs.MalformedJSON, Detail: "agent answer", Cause: err}
	}
	return nil
}

// responseError decodes a non-success answer into *errs.Error.
func responseError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return errs.FromResponse(resp.StatusCode, body)
}
