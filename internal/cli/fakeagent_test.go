package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/errs"
)

// scriptAgent is a local API that the test drives by hand: it records sends
// and moves messages through states when told to. It covers the paths a
// real agent reaches only through failures (rejections, expiry, timeouts);
// the happy path runs against the real agent in the integration tests.
type scriptAgent struct {
	token string

	mu     sync.Mutex
	msgs   map[string]*localapi.MessageDetail
	files  map[string]map[string][]byte // id -> name -> content
	meta   map[string][]byte
	fields map[string]map[string]string
	events []localapi.Event
	wake   chan struct{} // closed and replaced on every event
	// onSend, if set, runs (unlocked) after a message is stored.
	onSend func(id string)
	sends  int
	// polls counts long polls (events with a wait) received.
	polls int
}

func newScriptAgent(t *testing.T) (*scriptAgent, string) {
	t.Helper()
	a := &scriptAgent{
		token:  "tok-" + strconv.Itoa(int(time.Now().UnixNano()%1e6)),
		msgs:   map[string]*localapi.MessageDetail{},
		files:  map[string]map[string][]byte{},
		meta:   map[string][]byte{},
		fields: map[string]map[string]string{},
		wake:   make(chan struct{}),
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return a, srv.URL
}

func (a *scriptAgent) tokenFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.token")
	if err := os.WriteFile(p, []byte(a.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// advance moves message id to state (with reason) and records an event.
func (a *scriptAgent) advance(id, state, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.msgs[id]
	now := time.Now()
	m.State, m.Updated = state, now
	m.History = append(m.History, localapi.StateChange{State: state, At: now, Reason: reason})
	switch state {
	case localapi.StateSent:
		m.Receipts = append(m.Receipts, localapi.Receipt{Kind: "accepted", At: now, Issuer: "gateway", Verified: true})
	case localapi.StateReceived:
		m.Receipts = append(m.Receipts, localapi.Receipt{Kind: "mottatt", At: now, Issuer: "acc-oslo", Verified: true})
	case localapi.StateRejected:
		m.Receipts = append(m.Receipts, localapi.Receipt{Kind: "avvist", At: now, Issuer: "acc-oslo", Verified: true, Reason: reason})
	}
	a.events = append(a.events, localapi.Event{Seq: uint64(len(a.events) + 1), ID: id, Direction: localapi.DirectionOut, State: state, At: now, Reason: reason})
	close(a.wake)
	a.wake = make(chan struct{})
}

func (a *scriptAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+a.token {
		errs.Write(w, errs.New(errs.Unauthenticated, nil))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch p := r.URL.Path; {
	case p == localapi.PathMessages && r.Method == http.MethodPost:
		a.send(w, r)
	case p == localapi.PathMessages && r.Method == http.MethodGet:
		a.mu.Lock()
		list := []localapi.MessageSummary{}
		for _, m := range a.msgs {
			if st := r.URL.Query().Get("state"); st == "" || st == m.State {
				list = append(list, m.MessageSummary)
			}
		}
		a.mu.Unlock()
		_ = json.NewEncoder(w).Encode(list)
	case p == localapi.PathEvents:
		after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		if wait > 0 {
			a.mu.Lock()
			a.polls++
			a.mu.Unlock()
		}
		deadline := time.After(wait)
		for {
			a.mu.Lock()
			var evs []localapi.Event
			for _, e := range a.events {
				if e.Seq > after {
					evs = append(evs, e)
				}
				if len(evs) == 2 { // small pages, to exercise paging
					break
				}
			}
			wake := a.wake
			a.mu.Unlock()
			if len(evs) > 0 || wait == 0 {
				next := after
				if len(evs) > 0 {
					next = evs[len(evs)-1].Seq
				}
				_ = json.NewEncoder(w).Encode(localapi.EventsResponse{Events: evs, Next: next})
				return
			}
			select {
			case <-wake:
			case <-deadline:
				wait = 0
			case <-r.Context().Done():
				return
			}
		}
	case strings.HasPrefix(p, localapi.PathMessage):
		id := strings.TrimPrefix(p, localapi.PathMessage)
		a.mu.Lock()
		m, ok := a.msgs[id]
		var d localapi.MessageDetail
		if ok {
			d = *m
			d.History = append([]localapi.StateChange(nil), m.History...)
			d.Receipts = append([]localapi.Receipt(nil), m.Receipts...)
		}
		a.mu.Unlock()
		if !ok {
			errs.Write(w, errs.New(errs.NotFound, nil))
			return
		}
		_ = json.NewEncoder(w).Encode(d)
	default:
		errs.Write(w, errs.New(errs.NotFound, nil))
	}
}

func (a *scriptAgent) send(w http.ResponseWriter, r *http.Request) {
	_, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	mr := multipart.NewReader(r.Body, params["boundary"])
	fields := map[string]string{}
	files := map[string][]byte{}
	var meta []byte
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			errs.Write(w, errs.New(errs.BadRequest, err))
			return
		}
		b, _ := io.ReadAll(part)
		_, dp, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
		switch part.FormName() {
		case localapi.FieldMetadata:
			meta = b
		case localapi.FieldFile:
			files[dp["filename"]] = b
		default:
			fields[part.FormName()] = string(b)
		}
	}
	if !bytes.Contains(meta, []byte(`"ok"`)) {
		errs.Write(w, errs.Newf(errs.SchemaInvalid, "$.ok: missing"))
		return
	}
	a.mu.Lock()
	a.sends++
	id := fields[localapi.FieldID]
	if id == "" {
		id = "0e6f3a52-8b1b-4f57-9a55-00000000000" + strconv.Itoa(a.sends%10)
	}
	now := time.Now()
	a.msgs[id] = &localapi.MessageDetail{MessageSummary: localapi.MessageSummary{
		ID: id, Direction: localapi.DirectionOut, Type: fields[localapi.FieldType], To: fields[localapi.FieldTo],
		State: localapi.StateQueued, Created: now, Updated: now,
	}, History: []localapi.StateChange{{State: localapi.StateQueued, At: now}}}
	a.files[id], a.meta[id], a.fields[id] = files, meta, fields
	a.events = append(a.events, localapi.Event{Seq: uint64(len(a.events) + 1), ID: id, Direction: localapi.DirectionOut, State: localapi.StateQueued, At: now})
	close(a.wake)
	a.wake = make(chan struct{})
	onSend := a.onSend
	a.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(localapi.SendResponse{ID: id, State: localapi.StateQueued})
	if onSend != nil {
		go onSend(id)
	}
}

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runCLI runs the kurer root command with args as main would, returning
// stdout, stderr and the exit code.
func runCLI(ctx context.Context, args ...string) (string, string, int) {
	var out, errb syncBuffer
	code := ExecuteContext(ctx, args, &out, &errb)
	return out.String(), errb.String(), code
}
