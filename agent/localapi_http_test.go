package agent_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"testing"

	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/schemas"
)

// TestLocalAPISendRefusals posts cases to a running agent's local API over
// HTTP, as a case system does, and checks the status, the stable error code
// and, for schema errors, the JSON path of every error in the body; a
// refused case is not queued, not recorded and never reaches the gateway.
func TestLocalAPISendRefusals(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	tr := n.Nodes["trondheim"]
	c := exampleCase(t)
	invalid := bytes.Replace(c.Metadata, []byte(`"hast": false`), []byte(`"hast": "nei"`), 1)
	invalid = bytes.Replace(invalid, []byte(`"saksnummer": "2024/1187",`), nil, 1)
	if bytes.Equal(invalid, c.Metadata) {
		t.Fatal("example case changed: nothing replaced")
	}

	tests := []struct {
		name     string
		fields   map[string]string // form fields besides metadata
		metadata []byte            // nil: no metadata part
		status   int
		code     errs.Code
		// errors: schema error code per JSON path that must be in the body.
		errors map[string]string
	}{
		{name: "schema-invalid", metadata: invalid, status: http.StatusUnprocessableEntity, code: errs.SchemaInvalid,
			errors: map[string]string{"/hast": schemas.CodeType, "/avsender/saksnummer": schemas.CodeRequired}},
		// Malformed JSON is a schema error at the document root with the
		// stable field code "syntax" (docs/message-types.md), the same
		// code a receiving agent puts in an avvist receipt.
		{name: "malformed-json", metadata: []byte(`{"hast": false,`), status: http.StatusUnprocessableEntity,
			code: errs.SchemaInvalid, errors: map[string]string{"": schemas.CodeSyntax}},
		{name: "not-json-at-all", metadata: []byte("hast=false"), status: http.StatusUnprocessableEntity,
			code: errs.SchemaInvalid, errors: map[string]string{"": schemas.CodeSyntax}},
		{name: "no-metadata", status: http.StatusBadRequest, code: errs.BadRequest},
		{name: "unknown-field", metadata: c.Metadata, fields: map[string]string{"prioritet": "hoy"},
			status: http.StatusBadRequest, code: errs.BadRequest},
		{name: "bad-expires", metadata: c.Metadata, fields: map[string]string{localapi.FieldExpires: "i morgen"},
			status: http.StatusBadRequest, code: errs.BadRequest},
		{name: "unknown-type", metadata: c.Metadata, fields: map[string]string{localapi.FieldType: "no.kurer.ukjent.v1"},
			status: http.StatusUnprocessableEntity, code: errs.UnknownType},
	}
	gw := n.Client("trondheim")
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := "22222222-2222-4333-8444-00000000000" + string(rune('0'+i))
			fields := map[string]string{localapi.FieldType: schemas.TypeSakOverforing, localapi.FieldTo: "municipality:0301",
				localapi.FieldID: id}
			for k, v := range tc.fields {
				fields[k] = v
			}
			status, body := postCase(t, tr, fields, tc.metadata)
			if status != tc.status {
				t.Fatalf("status %d, want %d; body %s", status, tc.status, body)
			}
			var eb localapi.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("error body is not JSON: %v: %s", err, body)
			}
			if eb.Code != string(tc.code) || eb.Message == "" {
				t.Fatalf("error body %+v, want code %s and a message", eb, tc.code)
			}
			got := map[string]string{}
			for _, e := range eb.Errors {
				got[e.Path] = e.Code
			}
			for path, code := range tc.errors {
				if c, ok := got[path]; !ok || c != code {
					t.Errorf("body lacks error %q at path %q; errors %+v", code, path, eb.Errors)
				}
			}
			if len(tc.errors) == 0 && len(eb.Errors) != 0 {
				t.Errorf("unexpected schema errors %+v", eb.Errors)
			}
			// Nothing queued, nothing recorded, nothing at the gateway.
			if out := listOut(t, tr); len(out) != 0 {
				t.Fatalf("outgoing list %+v, want empty", out)
			}
			if _, err := tr.Agent.Message(id); err == nil {
				t.Fatal("the refused case is recorded")
			}
			if _, err := gw.Status(t.Context(), id); errs.CodeOf(err) != errs.NotFound {
				t.Fatalf("gateway knows the refused case: %v", err)
			}
		})
	}

	// The same request with valid metadata is taken: the refusals above
	// are about the metadata, not the request's shape.
	status, body := postCase(t, tr, map[string]string{localapi.FieldType: schemas.TypeSakOverforing,
		localapi.FieldTo: "municipality:0301"}, c.Metadata)
	if status != http.StatusAccepted {
		t.Fatalf("valid case: status %d: %s", status, body)
	}
	if out := listOut(t, tr); len(out) != 1 {
		t.Fatalf("outgoing list %+v, want the one valid case", out)
	}
}

// postCase posts a multipart send to node's local API: fields, the metadata
// part (when not nil) and every document of the example case (its
// melding.json lists them all); it returns the status and the body.
func postCase(t *testing.T, node *agenttest.Node, fields map[string]string, metadata []byte) (int, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if metadata != nil {
		w, err := mw.CreateFormFile(localapi.FieldMetadata, localapi.MetadataFile)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(metadata)
	}
	for _, f := range exampleCase(t).Files {
		b, err := os.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		w, err := mw.CreateFormFile(localapi.FieldFile, f.Name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(b)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, node.URL+localapi.PathMessages, &buf)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+node.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// listOut lists node's outgoing messages through the local API.
func listOut(t *testing.T, node *agenttest.Node) []localapi.MessageSummary {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, node.URL+localapi.PathMessages+"?direction=out", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+node.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("list: status %d", resp.StatusCode)
	}
	var out []localapi.MessageSummary
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}
