package hostile_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/schemas"
)

// exampleDir is the valid example case (Trondheim -> Oslo) the agent cases
// start from and break.
const exampleDir = "../../examples/cases/sak-overforing"

// exampleFile is one payload file of the example case.
type exampleFile struct{ name, path string }

// loadExample returns the example's melding.json, decoded for editing, and
// its documents.
func loadExample(t *testing.T) (map[string]any, []exampleFile) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(exampleDir, "melding.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(exampleDir, "dokumenter"))
	if err != nil {
		t.Fatal(err)
	}
	var files []exampleFile
	for _, e := range ents {
		files = append(files, exampleFile{"dokumenter/" + e.Name(), filepath.Join(exampleDir, "dokumenter", e.Name())})
	}
	return m, files
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sealCase seals melding.json and files from node from to node to, signed
// with from's real key and encrypted to to's real certificate, as a sending
// agent would (but without its schema check). It returns the envelope and
// the routing header that goes with it.
func sealCase(t *testing.T, n *agenttest.Network, from, to string, melding []byte, files []envelope.File) ([]byte, api.Routing, error) {
	t.Helper()
	f, r := n.Nodes[from], n.Nodes[to]
	now := time.Now().UTC().Truncate(time.Second)
	m := envelope.Manifest{ID: uuid.NewString(), Type: schemas.TypeSakOverforing, From: f.ID, To: r.ID,
		Created: now, Expires: now.Add(24 * time.Hour)}
	all := append([]envelope.File{{Name: localapi.MetadataFile, MediaType: "application/json", Size: int64(len(melding)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(melding)), nil }}}, files...)
	var out bytes.Buffer
	err := envelope.Seal(context.Background(), &out, &m, all, envelope.SealOptions{
		Signer: f.Account.Key, SignerCert: f.Account.Cert, Recipients: []*x509.Certificate{r.Account.Cert},
	})
	if err != nil {
		return nil, api.Routing{}, err
	}
	sum := sha256.Sum256(out.Bytes())
	rt := api.Routing{ID: m.ID, From: f.ID, To: r.ID, Type: m.Type, Expires: m.Expires, Size: int64(out.Len()),
		Digest: "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"}
	return out.Bytes(), rt, nil
}

func fileOf(name, path string) envelope.File {
	st, err := os.Stat(path)
	size := int64(-1)
	if err == nil {
		size = st.Size()
	}
	return envelope.File{Name: name, Size: size, Open: func() (io.ReadCloser, error) { return os.Open(path) }}
}

func memFile(name, content string) envelope.File {
	return envelope.File{Name: name, Size: int64(len(content)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(content)), nil
	}}
}

// emptyDir asserts that dir holds nothing (a missing dir is empty).
func emptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("%s holds %v, want nothing", dir, names)
	}
}

// refusedLeavingNothing asserts that message id is rejected at the
// gateway (by its receiver) and that the receiving node kept nothing of it:
// nothing in the adapter's inbox folder, nothing in the agent's inbox
// store, no plaintext in the spool.
func refusedLeavingNothing(t *testing.T, n *agenttest.Network, node *agenttest.Node, id string) {
	t.Helper()
	st, err := n.Client("trondheim").Status(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != api.StateRejected {
		t.Fatalf("gateway state %q, want %s", st.State, api.StateRejected)
	}
	emptyDir(t, node.Inbox)
	emptyDir(t, filepath.Join(node.DataDir, "inbox"))
	agenttest.Poll(t, "spool to be empty", func() bool {
		ents, _ := os.ReadDir(filepath.Join(node.DataDir, "spool"))
		return len(ents) == 0
	})
}

// avvistFor polls Trondheim's mailbox (its agent is stopped, so the items
// stay there) until the avvist receipt for message id arrives, opens it
// with Trondheim's key, checks it is signed by Oslo's registered
// certificate and bound to its routing header, and returns its content.
// Every item seen is acked.
func avvistFor(t *testing.T, n *agenttest.Network, id string) schemas.Avvist {
	t.Helper()
	c := n.Client("trondheim")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	ctx := t.Context()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		items, err := c.Poll(ctx, time.Second, 100)
		if err != nil {
			t.Fatalf("poll trondheim: %v", err)
		}
		for _, it := range items {
			if it.Kind != api.KindMessage || it.Routing.Type != schemas.TypeAvvist {
				if err := c.Ack(ctx, it.Routing.ID); err != nil {
					t.Fatalf("ack: %v", err)
				}
				continue
			}
			if it.Routing.From != osl.ID || it.Routing.To != tr.ID {
				t.Fatalf("avvist routed %s -> %s, want oslo -> trondheim", it.Routing.From, it.Routing.To)
			}
			spool, err := os.CreateTemp(t.TempDir(), "receipt-*.env")
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Download(ctx, it.Routing.ID, spool); err != nil {
				t.Fatalf("download receipt: %v", err)
			}
			if _, err := spool.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "receipt")
			opened, err := envelope.Open(ctx, spool, out, envelope.OpenOptions{
				Keys:        []envelope.Key{{Cert: tr.Account.Cert, Decrypter: tr.Account.Key.(crypto.Decrypter)}},
				Roots:       n.PKI.Pool,
				SenderCerts: []*x509.Certificate{osl.Account.Cert},
				Expect:      envelope.Binding{ID: it.Routing.ID, Type: schemas.TypeAvvist, From: osl.ID, To: tr.ID},
			})
			spool.Close()
			if err != nil {
				t.Fatalf("the avvist receipt does not open and verify: %v", err)
			}
			if err := c.Ack(ctx, it.Routing.ID); err != nil {
				t.Fatalf("ack: %v", err)
			}
			b, err := os.ReadFile(filepath.Join(out, localapi.MetadataFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := schemas.Default().Validate(schemas.TypeAvvist, b, nil); err != nil {
				t.Fatalf("the avvist receipt fails its own schema: %v", err)
			}
			var av schemas.Avvist
			if err := json.Unmarshal(b, &av); err != nil {
				t.Fatal(err)
			}
			if av.MessageID != id {
				continue // a receipt of an earlier case
			}
			if opened.Manifest.InReplyTo != id {
				t.Fatalf("avvist in_reply_to = %q, want %s", opened.Manifest.InReplyTo, id)
			}
			return av
		}
	}
	t.Fatalf("no avvist receipt for %s in Trondheim's mailbox", id)
	return schemas.Avvist{}
}

// TestAgentIncomingRefusals: Trondheim's account puts correctly sealed and
// signed envelopes with hostile content into the real gateway for Oslo,
// past Trondheim's agent's own checks. Oslo's agent must refuse each with
// the exact reason, release nothing to its inbox folder (the adapter), keep
// nothing in its inbox store, reject it at the gateway, and send Trondheim a
// signed avvist receipt whose reasons carry the schema code and JSON path.
func TestAgentIncomingRefusals(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	// Trondheim's agent would take (and refuse, as it sent no such message)
	// the receipts; stopped, they stay in its mailbox for the test to open.
	if err := n.Stop("trondheim"); err != nil {
		t.Fatal(err)
	}
	osl := n.Nodes["oslo"]
	c := n.Client("trondheim")
	_, docs := loadExample(t)
	var files []envelope.File
	for _, d := range docs {
		files = append(files, fileOf(d.name, d.path))
	}

	cases := []struct {
		name     string
		melding  func(m map[string]any) []byte
		wantCode string // schemas FieldError code
		wantPath string // JSON pointer
	}{
		{"schema-missing-required-field", func(m map[string]any) []byte {
			delete(m, "barn")
			return mustJSON(t, m)
		}, schemas.CodeRequired, "/barn"},
		{"schema-fodselsnummer-control-digit", func(m map[string]any) []byte {
			m["barn"].(map[string]any)["fodselsnummer"] = "15831451236" // valid: ...235
			return mustJSON(t, m)
		}, schemas.CodeChecksum, "/barn/fodselsnummer"},
		{"schema-wrong-type", func(m map[string]any) []byte {
			m["hast"] = "ja"
			return mustJSON(t, m)
		}, schemas.CodeType, "/hast"},
		{"schema-not-json", func(map[string]any) []byte { return []byte(`{"syntetisk": true, "barn": `) },
			schemas.CodeSyntax, ""},
		// One byte over schemas.MaxMeldingSize: Oslo's agent reads
		// melding.json only up to the limit (that it does not read it
		// whole is agent/reserved_melding_limit_test.go's) and refuses it
		// like any schema failure. The example's melding gets a member
		// padded with random letters (spaces would compress past the
		// envelope's ratio limit and be refused at open, not as a melding).
		{"melding-one-byte-over-the-limit", func(m map[string]any) []byte {
			m["pad"] = ""
			valid := mustJSON(t, m)
			rnd := rand.New(rand.NewPCG(1, 2))
			pad := make([]byte, schemas.MaxMeldingSize+1-len(valid))
			for i := range pad {
				pad[i] = 'a' + byte(rnd.IntN(26))
			}
			m["pad"] = string(pad)
			melding := mustJSON(t, m)
			if len(melding) != schemas.MaxMeldingSize+1 {
				t.Fatalf("melding of %d bytes", len(melding))
			}
			return melding
		}, schemas.CodeTooLarge, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := loadExample(t)
			melding := tc.melding(m)
			data, rt, err := sealCase(t, n, "trondheim", "oslo", melding, files)
			if err != nil {
				t.Fatalf("seal: %v", err)
			}
			if _, err := c.Submit(t.Context(), rt, bytes.NewReader(data)); err != nil {
				t.Fatalf("submit: %v", err)
			}
			// Handled: recorded as rejected with the schema code and path.
			var d localapi.MessageDetail
			agenttest.Poll(t, "oslo to refuse the message", func() bool {
				d, err = osl.Agent.Message(rt.ID)
				return err == nil && d.State == localapi.InRejected
			})
			if d.Direction != localapi.DirectionIn || len(d.Files) != 0 {
				t.Fatalf("refused message: direction %s, %d files released", d.Direction, len(d.Files))
			}
			last := d.History[len(d.History)-1]
			if last.Reason != string(errs.SchemaInvalid) {
				t.Fatalf("history reason %q, want %s", last.Reason, errs.SchemaInvalid)
			}
			if !slices.ContainsFunc(d.Reasons, func(r localapi.Reason) bool { return r.Code == tc.wantCode && r.Path == tc.wantPath }) {
				t.Fatalf("reasons %+v, want code %s at path %q", d.Reasons, tc.wantCode, tc.wantPath)
			}
			// The signed avvist reaches the sender with code and path.
			av := avvistFor(t, n, rt.ID)
			if av.MessageType != schemas.TypeSakOverforing {
				t.Fatalf("avvist meldingstype %q", av.MessageType)
			}
			if !slices.ContainsFunc(av.Reasons, func(r schemas.Reason) bool { return r.Code == tc.wantCode && r.Path == tc.wantPath }) {
				t.Fatalf("avvist reasons %+v, want kode %s at sti %q", av.Reasons, tc.wantCode, tc.wantPath)
			}
			refusedLeavingNothing(t, n, osl, rt.ID)
			if d, _ := osl.Agent.Message(rt.ID); d.State != localapi.InRejected {
				t.Fatalf("state moved on to %s after the refusal", d.State)
			}
		})
	}

	// Names equal after NFC ("e" + combining acute, and "é"): the envelope
	// package refuses to seal them, so no such envelope can be made with
	// envelope.Seal; a hand-built container is refused at open
	// (envelope/hostile_test.go, duplicate names).
	t.Run("nfc-duplicate-names-seal-refused", func(t *testing.T) {
		m, _ := loadExample(t)
		_, _, err := sealCase(t, n, "trondheim", "oslo", mustJSON(t, m),
			[]envelope.File{memFile("e\u0301.pdf", "one"), memFile("\u00e9.pdf", "two")})
		if err == nil {
			t.Fatal("seal accepted two names equal after NFC")
		}
		if got := envelope.ReasonOf(err); got != envelope.ReasonNames {
			t.Fatalf("seal reason %q (%v), want %s", got, err, envelope.ReasonNames)
		}
	})
	emptyDir(t, osl.Inbox)
}

// localAPI is a raw HTTP client of one agent's local API.
type localAPI struct {
	t   *testing.T
	url string
	hc  *http.Client
}

func newLocalAPI(t *testing.T, nd *agenttest.Node) *localAPI {
	return &localAPI{t: t, url: nd.URL, hc: &http.Client{Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends a request (token "" for none) and returns status and body.
func (l *localAPI) do(method, path, token, contentType string, body []byte) (int, []byte) {
	l.t.Helper()
	req, err := http.NewRequest(method, l.url+path, bytes.NewReader(body))
	if err != nil {
		l.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// outgoing is the agent's outgoing list as its API shows it.
func (l *localAPI) outgoing() string {
	l.t.Helper()
	st, b := l.do(http.MethodGet, localapi.PathMessages+"?direction=out", agenttest.Token, "", nil)
	if st != http.StatusOK {
		l.t.Fatalf("list: %d %s", st, b)
	}
	return string(b)
}

// part is one multipart part of a send.
type part struct {
	name, filename, content string
}

func multipartBody(t *testing.T, parts []part) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		cd := fmt.Sprintf(`form-data; name=%q`, p.name)
		if p.filename != "" {
			cd += `; filename="` + strings.ReplaceAll(p.filename, `"`, `\"`) + `"`
			h.Set("Content-Type", "application/octet-stream")
		}
		h.Set("Content-Disposition", cd)
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(w, p.content)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

// wantError asserts status and code of a local API error body, and that it
// carries nothing internal.
func wantError(t *testing.T, status int, body []byte, code errs.Code) localapi.ErrorBody {
	t.Helper()
	if status != code.Status() {
		t.Fatalf("status %d, want %d (%s); body %s", status, code.Status(), code, body)
	}
	var b localapi.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("error body is not the local API error shape: %v: %s", err, body)
	}
	if b.Code != string(code) || b.Message != code.Message() {
		t.Fatalf("body = %+v, want code %s message %q", b, code, code.Message())
	}
	for _, leak := range []string{"/tmp", "goroutine", "panic", ".go:", "bolt", "x509:", "seal envelope", "spool", "open "} {
		if strings.Contains(string(body), leak) {
			t.Fatalf("error body leaks internal text %q: %s", leak, body)
		}
	}
	return b
}

// TestAgentLocalAPIRefusals: hostile requests at Trondheim's local API (a
// real agent with a real gateway behind it) are refused with the exact
// status and code, and nothing is queued: the outgoing list is unchanged
// and the agent's outbox (the only source of uploads) and send spool stay
// empty.
func TestAgentLocalAPIRefusals(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	tr := n.Nodes["trondheim"]
	l := newLocalAPI(t, tr)
	before := l.outgoing()
	if before != "[]\n" {
		t.Fatalf("outgoing list at start: %s", before)
	}
	exM, docs := loadExample(t)
	valid := string(mustJSON(t, exM))
	var docParts []part
	for _, d := range docs {
		b, err := os.ReadFile(d.path)
		if err != nil {
			t.Fatal(err)
		}
		docParts = append(docParts, part{localapi.FieldFile, d.name, string(b)})
	}
	// send builds a send of the example with the routing fields given, the
	// metadata and the files.
	send := func(typ, to, meta string, files []part) []part {
		p := []part{{localapi.FieldType, "", typ}, {localapi.FieldTo, "", to}, {localapi.FieldMetadata, localapi.MetadataFile, meta}}
		return append(p, files...)
	}
	ok := func() []part { return send(schemas.TypeSakOverforing, "municipality:0301", valid, docParts) }
	// nfcMeta lists the given names as the case's documents.
	nfcMeta := func(names ...string) string {
		m, _ := loadExample(t)
		var ds []any
		for _, nm := range names {
			ds = append(ds, map[string]any{"fil": nm, "tittel": "Dokument", "dato": "2024-01-19", "kategori": "melding", "sett_av_familien": true})
		}
		m["dokumenter"] = ds
		return string(mustJSON(t, m))
	}
	nfcFiles := []part{{localapi.FieldFile, "e\u0301.pdf", "decomposed"}, {localapi.FieldFile, "\u00e9.pdf", "composed"}}
	withFile := func(name string) []part {
		return append(ok(), part{localapi.FieldFile, name, "x"})
	}

	type tcase struct {
		name      string
		method    string
		path      string
		token     string
		ctype     string
		body      []byte
		parts     []part // multipart body (when body is nil)
		want      errs.Code
		wantError *localapi.Reason // for schema_invalid: one error to find
	}
	tok := agenttest.Token
	msgs := localapi.PathMessages
	cases := []tcase{
		// Authentication.
		{name: "send-missing-token", method: "POST", path: msgs, parts: ok(), want: errs.Unauthenticated},
		{name: "send-wrong-token", method: "POST", path: msgs, token: tok + "x", parts: ok(), want: errs.Unauthenticated},
		{name: "send-token-prefix", method: "POST", path: msgs, token: tok[:len(tok)-1], parts: ok(), want: errs.Unauthenticated},
		{name: "list-missing-token", method: "GET", path: msgs, want: errs.Unauthenticated},
		{name: "detail-wrong-token", method: "GET", path: localapi.PathMessage + uuid.NewString(), token: "nope", want: errs.Unauthenticated},
		// Request shape.
		{name: "not-multipart", method: "POST", path: msgs, token: tok, ctype: "application/json", body: []byte(valid), want: errs.BadRequest},
		{name: "truncated-multipart", method: "POST", path: msgs, token: tok, ctype: "multipart/form-data; boundary=xyz",
			body: []byte("--xyz\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nno.kurer"), want: errs.BadRequest},
		{name: "unknown-field", method: "POST", path: msgs, token: tok, parts: append(ok(), part{"admin", "", "true"}), want: errs.BadRequest},
		{name: "metadata-twice", method: "POST", path: msgs, token: tok, parts: append(ok(), part{localapi.FieldMetadata, "", valid}), want: errs.BadRequest},
		{name: "metadata-missing", method: "POST", path: msgs, token: tok, parts: append([]part{{localapi.FieldType, "", schemas.TypeSakOverforing},
			{localapi.FieldTo, "", "municipality:0301"}}, docParts...), want: errs.BadRequest},
		{name: "field-too-long", method: "POST", path: msgs, token: tok, parts: send(strings.Repeat("a", 2000), "municipality:0301", valid, docParts), want: errs.BadRequest},
		{name: "id-not-uuid", method: "POST", path: msgs, token: tok, parts: append(ok(), part{localapi.FieldID, "", "../../x"}), want: errs.BadRequest},
		{name: "expires-garbage", method: "POST", path: msgs, token: tok, parts: append(ok(), part{localapi.FieldExpires, "", "tomorrow"}), want: errs.BadRequest},
		{name: "expires-in-past", method: "POST", path: msgs, token: tok, parts: append(ok(), part{localapi.FieldExpires, "", "2001-01-01T00:00:00Z"}), want: errs.Expired},
		// Metadata.
		{name: "malformed-json-metadata", method: "POST", path: msgs, token: tok, parts: send(schemas.TypeSakOverforing, "municipality:0301", `{"barn": `, docParts),
			want: errs.SchemaInvalid, wantError: &localapi.Reason{Code: schemas.CodeSyntax}},
		{name: "metadata-trailing-data", method: "POST", path: msgs, token: tok, parts: send(schemas.TypeSakOverforing, "municipality:0301", valid+`{}`, docParts),
			want: errs.SchemaInvalid, wantError: &localapi.Reason{Code: schemas.CodeSyntax}},
		{name: "metadata-schema-invalid", method: "POST", path: msgs, token: tok, parts: send(schemas.TypeSakOverforing, "municipality:0301",
			strings.Replace(valid, "15831451235", "15831451236", 1), docParts),
			want: errs.SchemaInvalid, wantError: &localapi.Reason{Code: schemas.CodeChecksum, Path: "/barn/fodselsnummer"}},
		{name: "oversize-metadata", method: "POST", path: msgs, token: tok, parts: send(schemas.TypeSakOverforing, "municipality:0301",
			`{"x":"`+strings.Repeat("a", 4<<20)+`"}`, docParts), want: errs.TooLarge},
		// Routing.
		{name: "unknown-message-type", method: "POST", path: msgs, token: tok, parts: send("no.kurer.finnes.ikke.v1", "municipality:0301", valid, docParts), want: errs.UnknownType},
		{name: "receipt-type-forged", method: "POST", path: msgs, token: tok, parts: send(schemas.TypeAvvist, "municipality:0301",
			`{"melding_id":"`+uuid.NewString()+`","meldingstype":"`+schemas.TypeSakOverforing+`","tidspunkt":"2026-01-01T00:00:00Z","arsaker":[{"kode":"x"}]}`, nil), want: errs.BadRequest},
		{name: "receiver-municipality-not-found", method: "POST", path: msgs, token: tok, parts: send(schemas.TypeSakOverforing, "municipality:9999", valid, docParts), want: errs.UnknownReceiver},
		{name: "receiver-account-not-found", method: "POST", path: msgs, token: tok, parts: send(schemas.TypeSakOverforing, uuid.NewString(), valid, docParts), want: errs.UnknownReceiver},
		{name: "receiver-garbage", method: "POST", path: msgs, token: tok, parts: send(schemas.TypeSakOverforing, "../../v1/admin", valid, docParts), want: errs.BadRequest},
		// File names.
		{name: "path-traversal-dotdot", method: "POST", path: msgs, token: tok, parts: withFile("../x"), want: errs.BadRequest},
		{name: "path-traversal-nested", method: "POST", path: msgs, token: tok, parts: withFile("dokumenter/../../x"), want: errs.BadRequest},
		{name: "path-absolute", method: "POST", path: msgs, token: tok, parts: withFile("/etc/passwd"), want: errs.BadRequest},
		{name: "path-backslash", method: "POST", path: msgs, token: tok, parts: withFile(`..\x`), want: errs.BadRequest},
		{name: "file-named-meta-inf", method: "POST", path: msgs, token: tok, parts: withFile("META-INF/manifest.json"), want: errs.BadRequest},
		{name: "file-named-melding-json", method: "POST", path: msgs, token: tok, parts: withFile(localapi.MetadataFile), want: errs.BadRequest},
		{name: "file-name-missing", method: "POST", path: msgs, token: tok, parts: append(ok(), part{localapi.FieldFile, "", "x"}), want: errs.BadRequest},
		{name: "file-given-twice", method: "POST", path: msgs, token: tok, parts: append(ok(), docParts[0]), want: errs.BadRequest},
		// Names equal after NFC: listed twice, the schema sees the
		// duplicate (it compares NFC names); listed once, the envelope
		// refuses to seal them. Either way nothing is queued.
		{name: "nfc-duplicate-names-listed-twice", method: "POST", path: msgs, token: tok,
			parts: send(schemas.TypeSakOverforing, "municipality:0301", nfcMeta("e\u0301.pdf", "\u00e9.pdf"), nfcFiles),
			want:  errs.SchemaInvalid, wantError: &localapi.Reason{Code: schemas.CodeDuplicateFile, Path: "/dokumenter/1/fil"}},
		{name: "nfc-duplicate-names-listed-once", method: "POST", path: msgs, token: tok,
			parts: send(schemas.TypeSakOverforing, "municipality:0301", nfcMeta("\u00e9.pdf"), nfcFiles), want: errs.BadRequest},
		{name: "case-only-duplicate-names", method: "POST", path: msgs, token: tok,
			parts: send(schemas.TypeSakOverforing, "municipality:0301", nfcMeta("A.pdf", "a.pdf"),
				[]part{{localapi.FieldFile, "A.pdf", "1"}, {localapi.FieldFile, "a.pdf", "2"}}), want: errs.BadRequest},
		// Message ids that are not UUIDs in paths: answered as unknown,
		// never used as a file system path.
		{name: "detail-id-not-uuid", method: "GET", path: localapi.PathMessage + "not-a-uuid", token: tok, want: errs.NotFound},
		{name: "detail-id-encoded-traversal", method: "GET", path: localapi.PathMessage + "..%2F..%2Fagent.db", token: tok, want: errs.NotFound},
		{name: "manifest-id-not-uuid", method: "GET", path: localapi.PathMessage + "not-a-uuid/manifest", token: tok, want: errs.NotFound},
		{name: "manifest-id-encoded-traversal", method: "GET", path: localapi.PathMessage + "..%2Finbox/manifest", token: tok, want: errs.NotFound},
		{name: "file-id-not-uuid", method: "GET", path: localapi.PathMessage + "not-a-uuid/files/a.pdf", token: tok, want: errs.NotFound},
		{name: "file-name-encoded-traversal", method: "GET", path: localapi.PathMessage + uuid.NewString() + "/files/..%2F..%2F..%2Fagent.db", token: tok, want: errs.NotFound},
		{name: "processed-id-not-uuid", method: "POST", path: localapi.PathMessage + "not-a-uuid/processed", token: tok, want: errs.NotFound},
		{name: "rejected-id-not-uuid", method: "POST", path: localapi.PathMessage + "not-a-uuid/rejected", token: tok,
			ctype: "application/json", body: []byte(`{"reasons":[{"code":"x"}]}`), want: errs.NotFound},
		{name: "rejected-malformed-json", method: "POST", path: localapi.PathMessage + uuid.NewString() + "/rejected", token: tok,
			ctype: "application/json", body: []byte(`{"reasons":[{"code":`), want: errs.MalformedJSON},
		{name: "rejected-trailing-data", method: "POST", path: localapi.PathMessage + uuid.NewString() + "/rejected", token: tok,
			ctype: "application/json", body: []byte(`{"reasons":[{"code":"x"}]}{"reasons":[]}`), want: errs.MalformedJSON},
		{name: "rejected-unknown-field", method: "POST", path: localapi.PathMessage + uuid.NewString() + "/rejected", token: tok,
			ctype: "application/json", body: []byte(`{"reasons":[],"state":"processed"}`), want: errs.MalformedJSON},
		// Queries.
		{name: "list-bad-limit", method: "GET", path: msgs + "?limit=-1", token: tok, want: errs.BadRequest},
		{name: "list-bad-direction", method: "GET", path: msgs + "?direction=sideways", token: tok, want: errs.BadRequest},
		{name: "events-bad-wait", method: "GET", path: localapi.PathEvents + "?wait=forever", token: tok, want: errs.BadRequest},
		{name: "unknown-endpoint", method: "GET", path: "/v1/admin/accounts", token: tok, want: errs.NotFound},
	}
	spool := filepath.Join(tr.DataDir, "spool")
	outbox := filepath.Join(tr.DataDir, "outbox")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, ctype := tc.body, tc.ctype
			if body == nil && tc.parts != nil {
				ctype, body = multipartBody(t, tc.parts)
			}
			st, b := l.do(tc.method, tc.path, tc.token, ctype, body)
			eb := wantError(t, st, b, tc.want)
			if tc.wantError != nil && !slices.ContainsFunc(eb.Errors, func(r localapi.Reason) bool {
				return r.Code == tc.wantError.Code && r.Path == tc.wantError.Path
			}) {
				t.Fatalf("schema errors %+v, want %+v", eb.Errors, *tc.wantError)
			}
			if got := l.outgoing(); got != before {
				t.Fatalf("outgoing list changed: %s", got)
			}
			emptyDir(t, outbox)
			agenttest.Poll(t, "send spool to be empty", func() bool {
				ents, _ := os.ReadDir(spool)
				return len(ents) == 0
			})
		})
	}
	// Control: the same agent accepts a valid send with a non-ASCII (NFC)
	// name, so the refusals above are the checks, not a broken harness.
	t.Run("control-valid-send-accepted", func(t *testing.T) {
		ctype, body := multipartBody(t, send(schemas.TypeSakOverforing, "municipality:0301", nfcMeta("\u00e9.pdf"),
			[]part{{localapi.FieldFile, "\u00e9.pdf", "composed"}}))
		st, b := l.do("POST", msgs, tok, ctype, body)
		if st != http.StatusAccepted {
			t.Fatalf("valid send: %d %s", st, b)
		}
		if l.outgoing() == before {
			t.Fatal("valid send not listed")
		}
	})
}
