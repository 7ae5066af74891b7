package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kurer/kurer/schemas"
)

func runSchemaCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := NewRootCommand()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(t.Context())
	code := ExitOK
	if err != nil {
		code = ExitError
		var ee *ExitErr
		if errors.As(err, &ee) {
			code = ee.Code
		}
	}
	return out.String(), code
}

const sakExample = "../../examples/cases/sak-overforing"

func TestSchemaList(t *testing.T) {
	out, code := runSchemaCLI(t, "schema", "list")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, ti := range schemas.Default().Types() {
		if !strings.Contains(out, ti.Name) {
			t.Errorf("list lacks %s:\n%s", ti.Name, out)
		}
	}
	if !strings.Contains(out, "30d") || !strings.Contains(out, "every non-receipt type") {
		t.Errorf("list lacks TTL or answers:\n%s", out)
	}

	out, code = runSchemaCLI(t, "schema", "list", "--output", "json")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	var views []struct {
		Name       string   `json:"name"`
		AnsweredBy []string `json:"answered_by"`
		DefaultTTL string   `json:"default_ttl"`
		Receipt    bool     `json:"receipt"`
	}
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(views) != len(schemas.Default().Types()) {
		t.Fatalf("%d types in JSON", len(views))
	}
	for _, v := range views {
		if v.Name == schemas.TypeSakOverforing && (v.DefaultTTL != "720h0m0s" || len(v.AnsweredBy) != 3) {
			t.Errorf("sak.overforing: %+v", v)
		}
	}
	if _, code := runSchemaCLI(t, "schema", "list", "--output", "xml"); code != ExitUsage {
		t.Errorf("bad --output: exit %d", code)
	}
}

func TestSchemaShow(t *testing.T) {
	out, code := runSchemaCLI(t, "schema", "show", schemas.TypeSakOverforing)
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	want, _ := schemas.Default().Schema(schemas.TypeSakOverforing)
	if strings.TrimSpace(out) != strings.TrimSpace(string(want)) {
		t.Error("show does not print the schema")
	}
	if _, code := runSchemaCLI(t, "schema", "show", "no.kurer.finnes.ikke.v1"); code != ExitUsage {
		t.Errorf("unknown type: exit %d", code)
	}
}

func TestSchemaValidate(t *testing.T) {
	melding := filepath.Join(sakExample, "melding.json")
	out, code := runSchemaCLI(t, "schema", "validate", schemas.TypeSakOverforing, melding)
	if code != ExitOK || !strings.Contains(out, "valid "+schemas.TypeSakOverforing+" (5 payload file(s))") {
		t.Fatalf("example: exit %d: %s", code, out)
	}

	// A copy with a wrong control digit, an unknown field, and one document
	// file missing from --files: one line per error, exit 1.
	var doc map[string]any
	b, err := os.ReadFile(melding)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	doc["barn"].(map[string]any)["fodselsnummer"] = "15831451236"
	doc["ukjent"] = 1
	bad, _ := json.Marshal(doc)
	work := t.TempDir()
	badFile := filepath.Join(work, "melding.json")
	if err := os.WriteFile(badFile, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	files := filepath.Join(work, "payload")
	for _, n := range []string{"01-bekymringsmelding-2024-01-19.txt", "02-undersokelsesrapport-2024-03-08.txt",
		"03-vedtak-hjelpetiltak-2024-03-18.txt", "04-tiltaksplan-2026-06-10.txt"} {
		fp := filepath.Join(files, "dokumenter", n)
		if err := os.MkdirAll(filepath.Dir(fp), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fp, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, code = runSchemaCLI(t, "schema", "validate", "--files", files, schemas.TypeSakOverforing, badFile)
	if code != ExitError {
		t.Fatalf("invalid: exit %d: %s", code, out)
	}
	wantLines := []string{
		"/barn/fodselsnummer: the control digits of the fødselsnummer or D-number are wrong (mod 11) [checksum]",
		"/dokumenter/4/fil: the file named here is not in the envelope [document_missing]",
		"/ukjent: is not a known field here [additional_property]",
	}
	if got := strings.Split(strings.TrimSpace(out), "\n"); strings.Join(got, "\n") != strings.Join(wantLines, "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", out, strings.Join(wantLines, "\n"))
	}

	out, code = runSchemaCLI(t, "schema", "validate", "--output", "json", "--files", files, schemas.TypeSakOverforing, badFile)
	var res struct {
		Valid  bool                 `json:"valid"`
		Files  []string             `json:"files"`
		Errors []schemas.FieldError `json:"errors"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != ExitError || res.Valid || len(res.Errors) != 3 || len(res.Files) != 4 {
		t.Fatalf("json: exit %d, %v: %s", code, err, out)
	}

	// Without --files the folder of FILE is used: here it holds only FILE and payload/.
	out, code = runSchemaCLI(t, "schema", "validate", schemas.TypeSakOverforing, badFile)
	if code != ExitError || !strings.Contains(out, "payload/dokumenter/01-bekymringsmelding-2024-01-19.txt") {
		t.Fatalf("default --files: exit %d: %s", code, out)
	}

	for name, args := range map[string][]string{
		"unknown type": {"schema", "validate", "no.kurer.finnes.ikke.v1", melding},
		"missing file": {"schema", "validate", schemas.TypeSakOverforing, filepath.Join(work, "nope.json")},
		"dir as file":  {"schema", "validate", schemas.TypeSakOverforing, work},
		"bad --files":  {"schema", "validate", "--files", filepath.Join(work, "nope"), schemas.TypeSakOverforing, badFile},
	} {
		if _, code := runSchemaCLI(t, args...); code != ExitUsage {
			t.Errorf("%s: exit %d, want %d", name, code, ExitUsage)
		}
	}
}

func TestSchemaValidateEveryExample(t *testing.T) {
	b, err := os.ReadFile("../../examples/cases/cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Cases []struct{ Dir, Type string } `json:"cases"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	for _, c := range idx.Cases {
		out, code := runSchemaCLI(t, "schema", "validate", c.Type, filepath.Join("../../examples/cases", c.Dir, "melding.json"))
		if code != ExitOK {
			t.Errorf("%s: exit %d: %s", c.Dir, code, out)
		}
	}
}

func TestSchemaExport(t *testing.T) {
	dst := t.TempDir()
	out, code := runSchemaCLI(t, "schema", "export", dst)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, out)
	}
	// The export is a complete registry: schemas.New loads it.
	reg, err := schemas.New(os.DirFS(dst))
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Types()) != len(schemas.Default().Types()) {
		t.Fatalf("exported %d types", len(reg.Types()))
	}
	if _, err := os.Stat(filepath.Join(dst, "jsonschema", "felles.schema.json")); err != nil {
		t.Fatal(err)
	}
}
