package localapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/errs"
)

const testToken = "s3cret-token"

// fakeAgent implements the local API contract minimally, recording what it
// was sent. The real agent is exercised in the integration tests of
// internal/cli; this one checks the client's side of the wire.
type fakeAgent struct {
	t *testing.T

	mu       sync.Mutex
	fields   map[string]string
	metadata []byte
	files    map[string][32]byte // name -> sha256
	sizes    map[string]int64
	// firstFile is closed once the server has read the first byte of a
	// "file" part; used to prove the client streams.
	firstFile chan struct{}
	onceFirst sync.Once
	processed []string
	rejected  map[string]localapi.RejectRequest
	eventsQ   []string
}

func newFakeAgent(t *testing.T) *fakeAgent {
	return &fakeAgent{
		t:         t,
		fields:    map[string]string{},
		files:     map[string][32]byte{},
		sizes:     map[string]int64{},
		firstFile: make(chan struct{}),
		rejected:  map[string]localapi.RejectRequest{},
	}
}

func (f *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		errs.Write(w, errs.New(errs.Unauthenticated, nil))
		return
	}
	p := r.URL.Path
	switch {
	case r.Method == http.MethodPost && p == localapi.PathMessages:
		f.send(w, r)
	case r.Method == http.MethodGet && p == localapi.PathMessages:
		f.mu.Lock()
		f.eventsQ = append(f.eventsQ, r.URL.RawQuery)
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode([]localapi.MessageSummary{{ID: "m1", Direction: r.URL.Query().Get("direction"), State: r.URL.Query().Get("state"), Type: "t"}})
	case r.Method == http.MethodGet && p == localapi.PathEvents:
		q := r.URL.Query()
		if q.Get("after") != "7" || q.Get("wait") != "2s" {
			errs.Write(w, errs.Newf(errs.BadRequest, "query %s", r.URL.RawQuery))
			return
		}
		_ = json.NewEncoder(w).Encode(localapi.EventsResponse{Events: []localapi.Event{{Seq: 8, ID: "m1", State: localapi.StateDelivered}}, Next: 8})
	case r.Method == http.MethodGet && p == localapi.PathReady:
		w.WriteHeader(http.StatusOK)
	case strings.HasPrefix(p, localapi.PathMessage):
		f.message(w, r, strings.TrimPrefix(p, localapi.PathMessage))
	default:
		errs.Write(w, errs.New(errs.NotFound, nil))
	}
}

func (f *fakeAgent) send(w http.ResponseWriter, r *http.Request) {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		errs.Write(w, errs.New(errs.BadRequest, err))
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			errs.Write(w, errs.New(errs.BadRequest, err))
			return
		}
		switch part.FormName() {
		case localapi.FieldMetadata:
			b, _ := io.ReadAll(part)
			f.mu.Lock()
			f.metadata = b
			f.mu.Unlock()
		case localapi.FieldFile:
			h := sha256.New()
			var first [1]byte
			n0, _ := io.ReadFull(part, first[:])
			h.Write(first[:n0])
			f.onceFirst.Do(func() { close(f.firstFile) })
			n, err := io.Copy(h, part)
			if err != nil {
				errs.Write(w, errs.New(errs.BadRequest, err))
				return
			}
			var sum [32]byte
			copy(sum[:], h.Sum(nil))
			// Part.FileName() strips directories (filepath.Base): a
			// server must read the raw parameter to keep relative paths.
			_, dp, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
			name := dp["filename"]
			f.mu.Lock()
			f.files[name] = sum
			f.sizes[name] = n + int64(n0)
			f.mu.Unlock()
		default:
			b, _ := io.ReadAll(part)
			f.mu.Lock()
			f.fields[part.FormName()] = string(b)
			f.mu.Unlock()
		}
	}
	f.mu.Lock()
	bad := f.fields[localapi.FieldType] == "bad.type"
	f.mu.Unlock()
	if bad {
		errs.Write(w, errs.Newf(errs.SchemaInvalid, "$.barn.fodselsnummer"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(localapi.SendResponse{ID: "0e6f3a52-8b1b-4f57-9a55-2b7b9d1c3b11", State: localapi.StateQueued})
}

func (f *fakeAgent) message(w http.ResponseWriter, r *http.Request, rest string) {
	id, sub, _ := strings.Cut(rest, "/")
	switch {
	case r.Method == http.MethodGet && sub == "":
		if id != "m1" {
			errs.Write(w, errs.New(errs.NotFound, nil))
			return
		}
		at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
		_ = json.NewEncoder(w).Encode(localapi.MessageDetail{
			MessageSummary: localapi.MessageSummary{ID: "m1", Direction: localapi.DirectionOut, State: localapi.StateReceived},
			History:        []localapi.StateChange{{State: localapi.StateQueued, At: at}, {State: localapi.StateReceived, At: at.Add(time.Second)}},
			Receipts:       []localapi.Receipt{{Kind: "mottatt", Issuer: "acc", Verified: true, At: at.Add(time.Second)}},
		})
	case r.Method == http.MethodGet && strings.HasPrefix(sub, "files/"):
		// r.URL.Path is unescaped: the name comes back as sent.
		fmt.Fprintf(w, "content of %s/%s", id, strings.TrimPrefix(sub, "files/"))
	case r.Method == http.MethodGet && sub == "manifest":
		fmt.Fprint(w, `{"id":"m1"}`)
	case r.Method == http.MethodPost && sub == "processed":
		f.mu.Lock()
		f.processed = append(f.processed, id)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && sub == "rejected":
		var rr localapi.RejectRequest
		if err := json.NewDecoder(r.Body).Decode(&rr); err != nil {
			errs.Write(w, errs.New(errs.MalformedJSON, err))
			return
		}
		f.mu.Lock()
		f.rejected[id] = rr
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		errs.Write(w, errs.New(errs.NotFound, nil))
	}
}

// patterned is a deterministic reader of n bytes that is never held whole.
type patterned struct {
	n, off int64
	// gate, if set, blocks the read at byte gateAt until it is closed.
	gate   <-chan struct{}
	gateAt int64
}

func (p *patterned) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if p.gate != nil && p.off >= p.gateAt {
		<-p.gate
		p.gate = nil
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	if p.gate != nil && p.off+int64(len(b)) > p.gateAt {
		b = b[:p.gateAt-p.off]
	}
	for i := range b {
		b[i] = byte((p.off + int64(i)) * 31 % 251)
	}
	p.off += int64(len(b))
	return len(b), nil
}

func (p *patterned) Close() error { return nil }

func patternSum(n int64) [32]byte {
	h := sha256.New()
	_, _ = io.Copy(h, &patterned{n: n})
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func newClient(t *testing.T, url string) *localapi.Client {
	t.Helper()
	c, err := localapi.NewClient(url, testToken)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSendStreams(t *testing.T) {
	fa := newFakeAgent(t)
	srv := httptest.NewServer(fa)
	defer srv.Close()
	c := newClient(t, srv.URL)

	const big = 8 << 20
	var mu sync.Mutex
	var calls int
	var last, lastTotal int64
	monotonic := true
	req := localapi.SendRequest{
		Type:         "no.kurer.barnevern.sak.overforing.v1",
		To:           "municipality:0301",
		ID:           "0e6f3a52-8b1b-4f57-9a55-2b7b9d1c3b11",
		Conversation: "c1",
		InReplyTo:    "r1",
		Expires:      time.Date(2026, 12, 24, 10, 0, 0, 0, time.FixedZone("CET", 3600)),
		Metadata:     []byte(`{"sak":"1"}`),
		Files: []localapi.SendFile{
			// The big file blocks after its first MiB until the server
			// has read the start of the first file part: a client that
			// buffered the body before sending would deadlock here.
			{Name: "dokumenter/vedtak 1.pdf", Size: big, Open: func() (io.ReadCloser, error) {
				return &patterned{n: big, gate: fa.firstFile, gateAt: 1 << 20}, nil
			}},
			{Name: `rar "navn".txt`, Size: 10, Open: func() (io.ReadCloser, error) { return &patterned{n: 10}, nil }},
			{Name: "tom_æøå.txt", Size: 0, Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("")), nil }},
		},
		Progress: func(sent, total int64) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if sent < last {
				monotonic = false
			}
			last, lastTotal = sent, total
		},
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	resp, err := c.Send(ctx, req)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if resp.ID != req.ID || resp.State != localapi.StateQueued {
		t.Fatalf("response %+v", resp)
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	want := map[string]string{
		localapi.FieldType: req.Type, localapi.FieldTo: req.To, localapi.FieldID: req.ID,
		localapi.FieldConversation: "c1", localapi.FieldInReplyTo: "r1", localapi.FieldExpires: "2026-12-24T09:00:00Z",
	}
	for k, v := range want {
		if fa.fields[k] != v {
			t.Errorf("field %s = %q, want %q", k, fa.fields[k], v)
		}
	}
	if string(fa.metadata) != `{"sak":"1"}` {
		t.Errorf("metadata %q", fa.metadata)
	}
	for _, f := range req.Files {
		if got, want := fa.files[f.Name], patternSum(f.Size); got != want {
			t.Errorf("file %q: digest mismatch (size %d, want %d)", f.Name, fa.sizes[f.Name], f.Size)
		}
	}
	if len(fa.files) != 3 {
		t.Errorf("server got %d files, want 3", len(fa.files))
	}
	if !monotonic || last != big+10 || lastTotal != big+10 || calls < 2 {
		t.Errorf("progress: calls=%d last=%d total=%d monotonic=%v", calls, last, lastTotal, monotonic)
	}
}

func TestSendUnknownSizeProgress(t *testing.T) {
	fa := newFakeAgent(t)
	srv := httptest.NewServer(fa)
	defer srv.Close()
	c := newClient(t, srv.URL)
	var total int64 = 99
	_, err := c.Send(t.Context(), localapi.SendRequest{
		Type: "t", To: "org:974760673", Metadata: []byte(`{}`),
		Files:    []localapi.SendFile{{Name: "a", Size: -1, Open: func() (io.ReadCloser, error) { return &patterned{n: 100}, nil }}},
		Progress: func(_, t int64) { total = t },
	})
	if err != nil {
		t.Fatal(err)
	}
	if total != -1 {
		t.Fatalf("total = %d, want -1 for unknown size", total)
	}
}

func TestErrors(t *testing.T) {
	fa := newFakeAgent(t)
	srv := httptest.NewServer(fa)
	defer srv.Close()

	t.Run("schema error keeps code and detail", func(t *testing.T) {
		c := newClient(t, srv.URL)
		_, err := c.Send(t.Context(), localapi.SendRequest{Type: "bad.type", To: "x", Metadata: []byte(`{}`)})
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != errs.SchemaInvalid || e.Detail != "$.barn.fodselsnummer" {
			t.Fatalf("got %#v", err)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		c, _ := localapi.NewClient(srv.URL, "wrong")
		_, err := c.Message(t.Context(), "m1")
		if errs.CodeOf(err) != errs.Unauthenticated {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("refused while streaming a big file", func(t *testing.T) {
		// The server answers 401 without reading the body; Send must
		// return (not hang on the pipe) and close the file.
		c, _ := localapi.NewClient(srv.URL, "wrong")
		closed := make(chan struct{})
		_, err := c.Send(t.Context(), localapi.SendRequest{Type: "t", To: "x", Files: []localapi.SendFile{{
			Name: "big", Size: 64 << 20,
			Open: func() (io.ReadCloser, error) { return &closeSignal{Reader: &patterned{n: 64 << 20}, ch: closed}, nil },
		}}})
		if errs.CodeOf(err) != errs.Unauthenticated && errs.CodeOf(err) != errs.Unavailable {
			t.Fatalf("got %v", err)
		}
		select {
		case <-closed:
		default:
			t.Fatal("file not closed when Send returned")
		}
	})
	t.Run("not found", func(t *testing.T) {
		c := newClient(t, srv.URL)
		_, err := c.Message(t.Context(), "nope")
		if errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("file that cannot be opened", func(t *testing.T) {
		c := newClient(t, srv.URL)
		_, err := c.Send(t.Context(), localapi.SendRequest{Type: "t", To: "x", Files: []localapi.SendFile{{
			Name: "a", Open: func() (io.ReadCloser, error) { return nil, errors.New("permission denied") },
		}}})
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != errs.BadRequest || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("not our error body", func(t *testing.T) {
		bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
		}))
		defer bad.Close()
		c := newClient(t, bad.URL)
		_, err := c.List(t.Context(), "", "", 0)
		if errs.CodeOf(err) != errs.Unavailable {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		c := newClient(t, "http://"+addr)
		_, err = c.Events(t.Context(), 0, 0)
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != errs.Unavailable {
			t.Fatalf("got %#v", err)
		}
	})
	t.Run("oversized JSON answer", func(t *testing.T) {
		huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"events":[`)
			_, _ = io.Copy(w, io.LimitReader(repeat(' '), 17<<20))
			fmt.Fprint(w, `]}`)
		}))
		defer huge.Close()
		c := newClient(t, huge.URL)
		_, err := c.Events(t.Context(), 0, 0)
		if errs.CodeOf(err) != errs.MalformedJSON {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bad urls", func(t *testing.T) {
		for _, u := range []string{"ftp://x", "http://", "unix://", "::"} {
			if _, err := localapi.NewClient(u, ""); err == nil {
				t.Errorf("%q accepted", u)
			}
		}
	})
}

type closeSignal struct {
	io.Reader
	ch   chan struct{}
	once sync.Once
}

func (c *closeSignal) Close() error { c.once.Do(func() { close(c.ch) }); return nil }

type repeat byte

func (r repeat) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(r)
	}
	return len(b), nil
}

func TestReadCalls(t *testing.T) {
	fa := newFakeAgent(t)
	srv := httptest.NewServer(fa)
	defer srv.Close()
	c := newClient(t, srv.URL)
	ctx := t.Context()

	d, err := c.Message(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if d.State != localapi.StateReceived || len(d.History) != 2 || len(d.Receipts) != 1 || !d.Receipts[0].Verified {
		t.Fatalf("detail %+v", d)
	}
	list, err := c.List(ctx, localapi.DirectionOut, localapi.StateSent, 5)
	if err != nil {
		t.Fatal(err)
	}
	fa.mu.Lock()
	q0 := fa.eventsQ[0]
	fa.mu.Unlock()
	if len(list) != 1 || list[0].Direction != "out" || list[0].State != "sent" || q0 != "direction=out&limit=5&state=sent" {
		t.Fatalf("list %+v query %v", list, q0)
	}
	ev, err := c.Events(ctx, 7, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Next != 8 || len(ev.Events) != 1 || ev.Events[0].State != localapi.StateDelivered {
		t.Fatalf("events %+v", ev)
	}
	rc, err := c.File(ctx, "m1", "dokumenter/a b#?.pdf")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "content of m1/dokumenter/a b#?.pdf" {
		t.Fatalf("file %q", b)
	}
	rc, err = c.Manifest(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(rc)
	rc.Close()
	if string(b) != `{"id":"m1"}` {
		t.Fatalf("manifest %q", b)
	}
	if err := c.Processed(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	rr := localapi.RejectRequest{Reasons: []localapi.Reason{{Code: string(errs.SchemaInvalid), Path: "$.barn"}}}
	if err := c.Rejected(ctx, "m2", rr); err != nil {
		t.Fatal(err)
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if len(fa.processed) != 1 || fa.processed[0] != "m1" || fa.rejected["m2"].Reasons[0].Path != "$.barn" {
		t.Fatalf("processed %v rejected %v", fa.processed, fa.rejected)
	}
	if err := c.Ready(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestUnixSocket(t *testing.T) {
	// Unix socket paths are limited to ~100 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "kl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: newFakeAgent(t), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()

	c := newClient(t, "unix://"+sock)
	d, err := c.Message(t.Context(), "m1")
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != "m1" {
		t.Fatalf("detail %+v", d)
	}
	resp, err := c.Send(t.Context(), localapi.SendRequest{Type: "t", To: "x", Metadata: bytes.Repeat([]byte{' '}, 10)})
	if err != nil || resp.ID == "" {
		t.Fatalf("send over unix socket: %v %+v", err, resp)
	}
}

// TestFileDigestChecked: a file read to the end is checked against the
// Repr-Digest the agent sends; a mismatch ends the read with an error.
func TestFileDigestChecked(t *testing.T) {
	content := "inhold av dokumentet"
	sum := sha256.Sum256([]byte(content))
	other := sha256.Sum256([]byte("noe annet"))
	for _, tc := range []struct {
		name   string
		digest string
		want   error
	}{
		{"matching", localapi.ReprDigest(hex.EncodeToString(sum[:])), nil},
		{"mismatch", localapi.ReprDigest(hex.EncodeToString(other[:])), localapi.ErrDigestMismatch},
		{"absent", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.digest != "" {
					w.Header().Set(localapi.HeaderReprDigest, tc.digest)
				}
				_, _ = io.WriteString(w, content)
			}))
			defer srv.Close()
			rc, err := newClient(t, srv.URL).File(t.Context(), "m1", "a.pdf")
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			b, err := io.ReadAll(rc)
			if !errors.Is(err, tc.want) {
				t.Fatalf("read error %v, want %v", err, tc.want)
			}
			if string(b) != content {
				t.Fatalf("read %q", b)
			}
		})
	}
}
