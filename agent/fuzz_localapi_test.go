package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
	"github.com/kurer/kurer/internal/pki/pkitest"
	"github.com/kurer/kurer/schemas"
)

// Fuzz targets for the local API's request decoding: the multipart send
// (fields, metadata JSON, file parts and their names) and the JSON body of
// a rejection. The handler is called directly (no HTTP server, whose
// recover would hide a panic) on an agent built with New but not Run, with
// a catalog-only gateway stub, so nothing is uploaded.

const (
	fuzzBoundary = "kurerfuzz"
	fuzzSender   = "00000000-0000-4000-8000-000000005001"
	fuzzReceiver = "00000000-0000-4000-8000-000000000301"
	fuzzToken    = "fuzz-token-0123456789abcdef"
)

// catalogOnly is a Gateway that knows one receiver (Oslo, municipality
// 0301) and refuses everything else as unavailable.
type catalogOnly struct{ oslo api.Account }

var errFuzzOffline = errs.Newf(errs.Unavailable, "fuzz: no gateway")

func (g catalogOnly) Submit(context.Context, api.Routing, *os.File) (api.SubmitResponse, error) {
	return api.SubmitResponse{}, errFuzzOffline
}
func (g catalogOnly) Poll(context.Context, time.Duration, int) ([]api.MailboxItem, error) {
	return nil, errFuzzOffline
}
func (g catalogOnly) Download(context.Context, string, *os.File) error { return errFuzzOffline }
func (g catalogOnly) Ack(context.Context, string) error                { return errFuzzOffline }
func (g catalogOnly) AckMany(context.Context, []string) (map[string]error, error) {
	return nil, errFuzzOffline
}
func (g catalogOnly) Reject(context.Context, string, api.RejectRequest) error {
	return errFuzzOffline
}
func (g catalogOnly) VerifyNotice(string) (api.NoticeClaims, error) {
	return api.NoticeClaims{}, errFuzzOffline
}

func (g catalogOnly) Lookup(_ context.Context, id string) (api.Account, error) {
	if id == g.oslo.ID {
		return g.oslo, nil
	}
	return api.Account{}, errs.Newf(errs.NotFound, "no such account")
}

func (g catalogOnly) Find(_ context.Context, query, _ string) (api.Account, error) {
	if query == "municipality:0301" || query == "org:974760673" {
		return g.oslo, nil
	}
	return api.Account{}, errs.Newf(errs.NotFound, "no such account")
}

// fuzzAgent builds Trondheim's agent with small local API limits.
// fuzzAgent builds the agent; mod, if given, changes its config and adds
// options before New.
func fuzzAgent(f testing.TB, mod ...func(*Config, *[]Option)) *Agent {
	f.Helper()
	p := pkitest.New(f, "trondheim", "oslo")
	oslo := p.Accounts["oslo"]
	gw := catalogOnly{oslo: api.Account{ID: fuzzReceiver, Name: "oslo", OrgNumber: "974760673", Municipality: "0301",
		Types: []string{schemas.TypeSakOverforing, schemas.TypeMottatt, schemas.TypeAvvist, schemas.TypeBehandlet},
		Certificates: []api.Certificate{{PEM: string(pki.EncodeCertPEM(oslo.Cert)), Fingerprint: pki.Fingerprint(oslo.Cert),
			NotBefore: oslo.Cert.NotBefore, NotAfter: oslo.Cert.NotAfter}}}}
	cfg := Config{Account: fuzzSender, DataDir: f.TempDir(), Dev: true,
		LocalAPI: LocalAPIConfig{Listen: "127.0.0.1:0", MaxFileSize: 64 << 10, MaxTotalSize: 256 << 10,
			MaxFiles: 8, MaxMetadataSize: 64 << 10}}
	tr := p.Accounts["trondheim"]
	opts := []Option{WithKeys(Key{Cert: tr.Cert, Signer: tr.Key}), WithTrustRoots(p.CA.Cert), WithGateway(gw), WithToken(fuzzToken)}
	for _, m := range mod {
		m(&cfg, &opts)
	}
	a, err := New(cfg, slog.New(slog.DiscardHandler), opts...)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = a.Close() })
	return a
}

// fuzzMelding is a valid sak-overforing melding.json (the example case)
// listing the given file names as its documents.
func fuzzMelding(tb testing.TB, names ...string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", "cases", "sak-overforing", "melding.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatal(err)
	}
	var ds []any
	for _, n := range names {
		ds = append(ds, map[string]any{"fil": n, "tittel": "Dokument", "dato": "2024-01-19", "kategori": "melding", "sett_av_familien": true})
	}
	m["dokumenter"] = ds
	out, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return string(out)
}

// fuzzPart is one part of a seed send: a field (filename "") or a file.
type fuzzPart struct{ name, filename, content string }

func fuzzMultipart(parts ...fuzzPart) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		b.WriteString("--" + fuzzBoundary + "\r\nContent-Disposition: form-data; name=\"" + p.name + "\"")
		if p.filename != "" {
			b.WriteString("; filename=\"" + p.filename + "\"\r\nContent-Type: application/octet-stream")
		}
		b.WriteString("\r\n\r\n" + p.content + "\r\n")
	}
	b.WriteString("--" + fuzzBoundary + "--\r\n")
	return b.Bytes()
}

// fuzzSendSeeds are the in-code seeds of FuzzLocalAPISend (the same shapes
// are in testdata/fuzz/FuzzLocalAPISend).
func fuzzSendSeeds(tb testing.TB) [][]byte {
	ct := "multipart/form-data; boundary=" + fuzzBoundary
	typ := fuzzPart{localapi.FieldType, "", schemas.TypeSakOverforing}
	to := fuzzPart{localapi.FieldTo, "", "municipality:0301"}
	meta := fuzzPart{localapi.FieldMetadata, localapi.MetadataFile, fuzzMelding(tb, "a.txt")}
	file := fuzzPart{localapi.FieldFile, "a.txt", "innhold"}
	_ = ct
	return [][]byte{
		fuzzMultipart(typ, to, meta, file),
		fuzzMultipart(typ, fuzzPart{localapi.FieldTo, "", fuzzReceiver}, fuzzPart{localapi.FieldID, "", "11111111-2222-4333-8444-555555555555"},
			fuzzPart{localapi.FieldExpires, "", "2099-01-01T00:00:00Z"}, meta, file),
		fuzzMultipart(typ, to, meta, file, fuzzPart{localapi.FieldFile, "../x", "x"}),
		fuzzMultipart(typ, to, fuzzPart{localapi.FieldMetadata, "", fuzzMelding(tb, "\u00e9.pdf")},
			fuzzPart{localapi.FieldFile, "e\u0301.pdf", "1"}, fuzzPart{localapi.FieldFile, "\u00e9.pdf", "2"}),
		fuzzMultipart(typ, to, fuzzPart{localapi.FieldMetadata, "", `{"barn": `}, file),
		fuzzMultipart(typ, to, meta, meta, file),
		fuzzMultipart(fuzzPart{localapi.FieldType, "", schemas.TypeAvvist}, to, fuzzPart{localapi.FieldMetadata, "", `{"melding_id":"x"}`}),
		fuzzMultipart(typ, to, meta, fuzzPart{"admin", "", "true"}),
		fuzzMultipart(typ, fuzzPart{localapi.FieldTo, "", "municipality:9999"}, meta, file),
		[]byte("--" + fuzzBoundary + "\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nno.kurer"),
	}
}

// FuzzLocalAPISend posts arbitrary multipart sends to POST /v1/messages.
// The handler must never panic or answer 5xx; a refusal is a catalogue
// error body and queues nothing; a 202 only for a request that an
// independent decoding finds well formed (known non-receipt type, schema-
// valid metadata, safe and distinct file names), with the message queued.
func FuzzLocalAPISend(f *testing.F) {
	a := fuzzAgent(f)
	h := a.apiHandler()
	ct := "multipart/form-data; boundary=" + fuzzBoundary
	for _, s := range fuzzSendSeeds(f) {
		f.Add(ct, s)
	}
	f.Add("application/json", []byte(`{"type":"x"}`))
	f.Add("multipart/form-data", []byte("--\r\n"))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		before, err := a.store.listOut("", maxListLimit, true)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, localapi.PathMessages, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fuzzToken)
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		after, err := a.store.listOut("", maxListLimit, true)
		if err != nil {
			t.Fatal(err)
		}
		if ents, _ := os.ReadDir(a.store.path(dirSpool)); len(ents) != 0 {
			t.Fatalf("send left %d entries in the spool", len(ents))
		}
		if rec.Code >= 500 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if rec.Code != http.StatusAccepted {
			checkErrorBody(t, rec)
			if len(after) != len(before) {
				t.Fatalf("refused send (%d) changed the outgoing list: %d -> %d", rec.Code, len(before), len(after))
			}
			return
		}
		var resp localapi.SendResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("202 body: %v", err)
		}
		if err := wellFormedSend(contentType, body); err != nil {
			t.Fatalf("202 for a send an independent decoding refuses: %v", err)
		}
		o, err := a.store.getOut(resp.ID)
		if err != nil {
			t.Fatalf("202 but %s is not in the store: %v", resp.ID, err)
		}
		if _, err := os.Stat(a.envPath(o.ID)); err != nil {
			t.Fatalf("202 but no envelope in the outbox: %v", err)
		}
	})
}

// wellFormedSend decodes a send on its own and reports why it is not one
// the agent may accept.
func wellFormedSend(contentType string, body []byte) error {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" {
		return errors.New("not multipart/form-data")
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var typ, to, meta string
	var haveMeta bool
	var names []string
	seen := map[string]bool{}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		v, err := io.ReadAll(p)
		if err != nil {
			return err
		}
		switch p.FormName() {
		case localapi.FieldType:
			typ = strings.TrimSpace(string(v))
		case localapi.FieldTo:
			to = strings.TrimSpace(string(v))
		case localapi.FieldMetadata:
			if haveMeta {
				return errors.New("metadata twice")
			}
			meta, haveMeta = string(v), true
		case localapi.FieldFile:
			n := partFileName(p.Header.Get("Content-Disposition"))
			clean, err := envelope.CleanName(n, 255)
			if err != nil || clean == localapi.MetadataFile || strings.HasPrefix(strings.ToLower(clean), "meta-inf/") || strings.ToLower(clean) == "mimetype" {
				return errors.New("unsafe file name")
			}
			if seen[strings.ToLower(clean)] {
				return errors.New("file name twice after NFC")
			}
			seen[strings.ToLower(clean)] = true
			names = append(names, n)
		case localapi.FieldID, localapi.FieldConversation, localapi.FieldInReplyTo, localapi.FieldExpires:
		default:
			return errors.New("unknown field " + p.FormName())
		}
	}
	if typ == "" || to == "" || !haveMeta {
		return errors.New("type, to or metadata missing")
	}
	ti, ok := schemas.Default().Lookup(typ)
	if !ok || ti.Receipt {
		return errors.New("unknown or receipt type")
	}
	if err := schemas.Default().Validate(typ, []byte(meta), names); err != nil {
		return err
	}
	return nil
}

// checkErrorBody asserts a refusal is the local API error shape with a
// catalogue code whose status is the answer's.
func checkErrorBody(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	var b localapi.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("status %d: error body is not the local API error shape: %v: %q", rec.Code, err, rec.Body)
	}
	code := errs.Code(b.Code)
	if code.Status() != rec.Code || b.Message != code.Message() {
		t.Fatalf("status %d with body %+v: not the catalogue entry", rec.Code, b)
	}
}

// FuzzLocalAPIRejected posts arbitrary JSON to POST
// /v1/messages/{id}/rejected for a stored incoming message. It must never
// panic or answer 5xx, and answers 200 only for a body that decodes
// strictly (one JSON value, no unknown fields) with valid reasons.
func FuzzLocalAPIRejected(f *testing.F) {
	a := fuzzAgent(f)
	h := a.apiHandler()
	id := "22222222-3333-4444-8555-666666666666"
	now := time.Now().UTC()
	rec := &inRecord{ID: id, Type: schemas.TypeSakOverforing, From: fuzzReceiver, To: fuzzSender, Created: now,
		Expires: now.Add(time.Hour), Files: []localapi.File{}}
	rec.advance(localapi.StateChange{State: localapi.InStored, At: now})
	if _, err := a.store.insertIn(context.Background(), rec); err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`{"reasons":[{"code":"feil_mottaker","path":"/barn","message":"ikke vår sak"}]}`,
		`{"reasons":[]}`,
		`{}`,
		`{"reasons":[{"code":""}]}`,
		`{"reasons":[{"code":"x"}]}{"reasons":[]}`,
		`{"reasons":[{"code":"x"}],"state":"processed"}`,
		`{"reasons":[{"code":`,
		`[]`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, localapi.PathMessage+id+"/rejected", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fuzzToken)
		req.Header.Set("Content-Type", "application/json")
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, req)
		if rr.Code >= 500 {
			t.Fatalf("status %d: %s", rr.Code, rr.Body)
		}
		if rr.Code != http.StatusOK {
			checkErrorBody(t, rr)
			return
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		var r localapi.RejectRequest
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("200 for a body that does not decode: %v", err)
		}
		if _, err := dec.Token(); err != io.EOF {
			t.Fatalf("200 for a body with data after the JSON value: %q", body)
		}
		for _, x := range r.Reasons {
			if x.Code == "" || len(x.Code) > 64 || len(x.Path) > 1024 || len(x.Message) > 1024 {
				t.Fatalf("200 for an invalid reason %+v", x)
			}
		}
		if d, err := a.Message(id); err != nil || d.State != localapi.InRejected {
			t.Fatalf("200 but the message is %s (%v)", d.State, err)
		}
	})
}
