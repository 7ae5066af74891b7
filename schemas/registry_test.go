package schemas_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/kurer/kurer/schemas"
)

var allTypes = []string{
	schemas.TypeBekymringsmelding,
	schemas.TypeDokumentasjonForesporsel,
	schemas.TypeDokumentasjonSvar,
	schemas.TypeRapportering,
	schemas.TypeSakOverforing,
	schemas.TypeAvvist,
	schemas.TypeBehandlet,
	schemas.TypeMottatt,
}

func TestRegistryTypes(t *testing.T) {
	reg := schemas.Default()
	types := reg.Types()
	var names []string
	for _, ti := range types {
		names = append(names, ti.Name)
	}
	want := slices.Sorted(slices.Values(allTypes))
	if !slices.Equal(names, want) {
		t.Fatalf("types = %v, want %v", names, want)
	}
	for _, ti := range types {
		if ti.Title == "" || ti.Description == "" || ti.DefaultTTL <= 0 {
			t.Errorf("%s: incomplete %+v", ti.Name, ti)
		}
		if ti.Receipt != strings.HasPrefix(ti.Name, "no.kurer.kvittering.") {
			t.Errorf("%s: receipt flag %v", ti.Name, ti.Receipt)
		}
		got, ok := reg.Lookup(ti.Name)
		if !ok || got.Name != ti.Name {
			t.Errorf("Lookup(%s) = %v", ti.Name, ok)
		}
		raw, ok := reg.Schema(ti.Name)
		if !ok {
			t.Fatalf("no schema for %s", ti.Name)
		}
		var sch map[string]any
		if err := json.Unmarshal(raw, &sch); err != nil {
			t.Fatalf("%s: schema is not JSON: %v", ti.Name, err)
		}
		if sch["$schema"] != "https://json-schema.org/draft/2020-12/schema" || sch["additionalProperties"] != false {
			t.Errorf("%s: schema must be draft 2020-12 and closed", ti.Name)
		}
	}
	if _, ok := reg.Lookup("no.kurer.finnes.ikke.v1"); ok {
		t.Error("unknown type found")
	}
	if _, ok := reg.Schema("no.kurer.finnes.ikke.v1"); ok {
		t.Error("unknown type has a schema")
	}
	sak, _ := reg.Lookup(schemas.TypeSakOverforing)
	if sak.DefaultTTL != 30*24*time.Hour || !sak.PayloadRequired || sak.DocumentList != "/dokumenter" {
		t.Errorf("sak.overforing: %+v", sak)
	}
}

// TestAnswers: svar answers foresporsel; every receipt answers every
// business type and nothing answers a receipt; AnsweredBy is the inverse.
func TestAnswers(t *testing.T) {
	reg := schemas.Default()
	for _, ti := range reg.Types() {
		for _, other := range reg.Types() {
			answers := reg.CanAnswer(ti.Name, other.Name)
			want := (ti.Receipt && !other.Receipt) ||
				(ti.Name == schemas.TypeDokumentasjonSvar && other.Name == schemas.TypeDokumentasjonForesporsel)
			if answers != want {
				t.Errorf("CanAnswer(%s, %s) = %v, want %v", ti.Name, other.Name, answers, want)
			}
			if slices.Contains(other.AnsweredBy, ti.Name) != answers {
				t.Errorf("%s.AnsweredBy and %s.Answers disagree", other.Name, ti.Name)
			}
		}
	}
	// Lookup returns copies: changing one does not change the registry.
	ti, _ := reg.Lookup(schemas.TypeMottatt)
	ti.Answers[0] = "x"
	again, _ := reg.Lookup(schemas.TypeMottatt)
	if again.Answers[0] == "x" {
		t.Error("Lookup shares its slices")
	}
}

func TestValidateUnknownType(t *testing.T) {
	err := schemas.Default().Validate("no.kurer.finnes.ikke.v1", []byte(`{}`), nil)
	if !errors.Is(err, schemas.ErrUnknownType) {
		t.Fatalf("got %v, want ErrUnknownType", err)
	}
	var ve *schemas.ValidationError
	if errors.As(err, &ve) {
		t.Fatal("unknown type must not be a ValidationError")
	}
}

// TestValidateLimits: size and depth are refused before parsing, exactly
// at the limit.
func TestValidateLimits(t *testing.T) {
	reg := schemas.Default()
	valid, err := os.ReadFile(filepath.Join(casesDir, "kvittering-mottatt", schemas.MeldingFile))
	if err != nil {
		t.Fatal(err)
	}
	pad := func(n int) []byte { // valid JSON of exactly n bytes: trailing spaces
		b := slices.Clone(valid)
		for len(b) < n {
			b = append(b, ' ')
		}
		return b
	}
	if err := reg.Validate(schemas.TypeMottatt, pad(schemas.MaxMeldingSize), nil); err != nil {
		t.Fatalf("message of exactly the limit refused: %v", err)
	}
	assertOnly(t, reg.Validate(schemas.TypeMottatt, pad(schemas.MaxMeldingSize+1), nil), schemas.CodeTooLarge)

	nest := func(depth int) []byte { // depth counts the top-level object
		inner := strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1)
		return []byte(`{"x":` + inner + `}`)
	}
	// At the limit the scan passes and the schema complains about x.
	assertOnly(t, reg.Validate(schemas.TypeMottatt, nest(schemas.MaxDepth), nil), schemas.CodeAdditionalProperty, schemas.CodeRequired)
	assertOnly(t, reg.Validate(schemas.TypeMottatt, nest(schemas.MaxDepth+1), nil), schemas.CodeTooDeep)
	// A deep document far over the size limit still answers quickly with too_large.
	assertOnly(t, reg.Validate(schemas.TypeMottatt, []byte(strings.Repeat("[", 4<<20)), nil), schemas.CodeTooLarge)
}

// assertOnly checks err is a ValidationError whose codes are all in codes.
func assertOnly(tb testing.TB, err error, codes ...string) {
	tb.Helper()
	var ve *schemas.ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) == 0 {
		tb.Fatalf("want ValidationError with %v, got %v", codes, err)
	}
	for _, fe := range ve.Errors {
		if !slices.Contains(codes, fe.Code) {
			tb.Fatalf("unexpected error %+v, want only %v", fe, codes)
		}
	}
}

// TestReceiptsMatchSchemas: the Go receipt types marshal to documents the
// receipt schemas accept, and a validation error becomes avvist reasons.
func TestReceiptsMatchSchemas(t *testing.T) {
	reg := schemas.Default()
	at := time.Date(2026, 11, 23, 10, 4, 5, 123456789, time.FixedZone("CET", 3600))
	id := "0193a6f0-9e2b-7c41-8d0a-5b7f3e21c9d4"

	verr := reg.Validate(schemas.TypeSakOverforing, []byte(`{"hast":"x"}`), nil)
	var ve *schemas.ValidationError
	if !errors.As(verr, &ve) {
		t.Fatal(verr)
	}
	reasons := ve.Reasons()
	if len(reasons) != len(ve.Errors) || reasons[0].Code != ve.Errors[0].Code || reasons[0].Path != ve.Errors[0].Path {
		t.Fatalf("Reasons() = %+v", reasons)
	}

	tests := []struct {
		typ string
		v   any
	}{
		{schemas.TypeMottatt, schemas.NewMottatt(id, schemas.TypeSakOverforing, at)},
		{schemas.TypeAvvist, schemas.NewAvvist(id, schemas.TypeSakOverforing, at, reasons)},
		{schemas.TypeBehandlet, schemas.NewBehandlet(id, schemas.TypeSakOverforing, at, "BGO-2026-4471")},
		{schemas.TypeBehandlet, schemas.NewBehandlet(id, schemas.TypeRapportering, at, "")},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.v)
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.Validate(tt.typ, b, nil); err != nil {
			t.Errorf("%s %s does not validate:\n%v", tt.typ, b, err)
		}
		if !strings.Contains(string(b), `"tidspunkt":"2026-11-23T09:04:05Z"`) {
			t.Errorf("%s: time not UTC seconds: %s", tt.typ, b)
		}
	}
	// An avvist without reasons, or about a receipt, is refused.
	b, _ := json.Marshal(schemas.NewAvvist(id, schemas.TypeSakOverforing, at, nil))
	assertOnly(t, reg.Validate(schemas.TypeAvvist, b, nil), schemas.CodeType, schemas.CodeMinItems)
	b, _ = json.Marshal(schemas.NewMottatt(id, schemas.TypeAvvist, at))
	assertOnly(t, reg.Validate(schemas.TypeMottatt, b, nil), schemas.CodeAnswerReference)
}

// TestNewFromFS: a registry from another file system, exercising required
// files, payload_required without a document list, and the load checks.
func TestNewFromFS(t *testing.T) {
	felles, err := os.ReadFile("jsonschema/felles.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	schema := `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,
		"required":["orgnr"],"properties":{"orgnr":{"$ref":"felles.schema.json#/$defs/orgnr"}}}`
	typesJSON := func(extra string) string {
		return `{"types":[{"name":"no.kurer.test.skjema.v1","title":"t","description":"d","schema":"s.json",
			"answers":[],"required_files":["skjema.pdf"],"payload_required":true,"receipt":false,"default_ttl":"1h"}` + extra + `]}`
	}
	fsys := fstest.MapFS{
		"types.json":                    {Data: []byte(typesJSON(""))},
		"jsonschema/s.json":             {Data: []byte(schema)},
		"jsonschema/felles.schema.json": {Data: felles},
	}
	reg, err := schemas.New(fsys)
	if err != nil {
		t.Fatal(err)
	}
	ok := []byte(`{"orgnr":"315000009"}`)
	if err := reg.Validate("no.kurer.test.skjema.v1", ok, []string{"skjema.pdf", "melding.json"}); err != nil {
		t.Fatalf("valid: %v", err)
	}
	assertOnly(t, reg.Validate("no.kurer.test.skjema.v1", ok, nil), schemas.CodePayloadMissing, schemas.CodeRequiredFile)
	assertOnly(t, reg.Validate("no.kurer.test.skjema.v1", ok, []string{"annet.pdf"}), schemas.CodeRequiredFile, schemas.CodeFileUnlisted)
	assertOnly(t, reg.Validate("no.kurer.test.skjema.v1", []byte(`{"orgnr":"315000008"}`), []string{"skjema.pdf"}), schemas.CodeChecksum)

	bad := map[string]fstest.MapFS{
		"duplicate type":  {"types.json": {Data: []byte(typesJSON(`,{"name":"no.kurer.test.skjema.v1","schema":"s.json","default_ttl":"1h"}`))}},
		"answers unknown": {"types.json": {Data: []byte(typesJSON(`,{"name":"no.kurer.test.svar.v1","schema":"s.json","default_ttl":"1h","answers":["no.kurer.x.v1"]}`))}},
		"receipt flag":    {"types.json": {Data: []byte(typesJSON(`,{"name":"no.kurer.kvittering.x.v1","schema":"s.json","default_ttl":"1h"}`))}},
		"bad ttl":         {"types.json": {Data: []byte(typesJSON(`,{"name":"no.kurer.test.y.v1","schema":"s.json","default_ttl":"soon"}`))}},
		"missing schema":  {"types.json": {Data: []byte(typesJSON(`,{"name":"no.kurer.test.z.v1","schema":"nope.json","default_ttl":"1h"}`))}},
		"no types file":   {},
	}
	for name, m := range bad {
		if name != "no types file" {
			m["jsonschema/s.json"] = &fstest.MapFile{Data: []byte(schema)}
			m["jsonschema/felles.schema.json"] = &fstest.MapFile{Data: felles}
		}
		if _, err := schemas.New(m); err == nil {
			t.Errorf("%s: New accepted a bad registry", name)
		}
	}
	// A schema that refers outside the registry is refused (no file or network loads).
	remote := fstest.MapFS{
		"types.json":        {Data: []byte(typesJSON(""))},
		"jsonschema/s.json": {Data: []byte(`{"$ref":"https://example.com/x.json"}`)},
	}
	if _, err := schemas.New(remote); err == nil {
		t.Error("New loaded a schema from outside the registry")
	}
}

// TestConcurrentValidate: the registry is safe for concurrent use (run with -race).
func TestConcurrentValidate(t *testing.T) {
	reg := schemas.Default()
	dir := filepath.Join(casesDir, "sak-overforing")
	melding, err := os.ReadFile(filepath.Join(dir, schemas.MeldingFile))
	if err != nil {
		t.Fatal(err)
	}
	files := payloadFiles(t, dir)
	errc := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() {
			var err error
			for j := 0; j < 20 && err == nil; j++ {
				err = reg.Validate(schemas.TypeSakOverforing, melding, files)
			}
			errc <- err
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// TestValidateMaxErrors: a message with thousands of errors yields
// MaxErrors errors, the last saying how many more there were.
func TestValidateMaxErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"kommune":{"kommunenummer":"5001","navn":"T","orgnr":"315000009"},"periode":{"fra":"2026-01-01","til":"2026-03-31"},"hendelser":[`)
	for i := 0; i < 500; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"x":1}`)
	}
	b.WriteString(`]}`)
	err := schemas.Default().Validate(schemas.TypeRapportering, []byte(b.String()), nil)
	var ve *schemas.ValidationError
	if !errors.As(err, &ve) {
		t.Fatal(err)
	}
	if len(ve.Errors) != schemas.MaxErrors {
		t.Fatalf("%d errors, want %d", len(ve.Errors), schemas.MaxErrors)
	}
	last := ve.Errors[len(ve.Errors)-1]
	// 500 items x (4 required + 1 unknown field) = 2500; 99 shown.
	if last.Code != schemas.CodeTooManyErrors || last.Message != "2401 more errors not shown" {
		t.Fatalf("last error %+v", last)
	}
}

func BenchmarkValidate(b *testing.B) {
	reg := schemas.Default()
	dir := filepath.Join(casesDir, "sak-overforing")
	melding, err := os.ReadFile(filepath.Join(dir, schemas.MeldingFile))
	if err != nil {
		b.Fatal(err)
	}
	files := payloadFiles(b, dir)
	b.SetBytes(int64(len(melding)))
	b.ReportAllocs()
	for b.Loop() {
		if err := reg.Validate(schemas.TypeSakOverforing, melding, files); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFileNamesNFC: the document list and the envelope's names are compared
// in NFC (the envelope normalises names; a list may come decomposed).
func TestFileNamesNFC(t *testing.T) {
	reg := schemas.Default()
	b, err := os.ReadFile(filepath.Join(casesDir, "bekymringsmelding", schemas.MeldingFile))
	if err != nil {
		t.Fatal(err)
	}
	nfd := "vedlegg/bre\u0301v fra bo\u0308rn a\u030a.txt" // é, ö, å decomposed
	nfc := "vedlegg/brév fra börn å.txt"
	m := strings.Replace(string(b), `"journalnotat-helsestasjon.txt"`, strconvQuote(nfd), 1)
	if err := reg.Validate(schemas.TypeBekymringsmelding, []byte(m), []string{nfc}); err != nil {
		t.Fatalf("NFD list vs NFC file: %v", err)
	}
	m = strings.Replace(string(b), `"journalnotat-helsestasjon.txt"`, strconvQuote(nfc), 1)
	if err := reg.Validate(schemas.TypeBekymringsmelding, []byte(m), []string{nfd}); err != nil {
		t.Fatalf("NFC list vs NFD file: %v", err)
	}
	assertOnly(t, reg.Validate(schemas.TypeBekymringsmelding, []byte(m), []string{"vedlegg/brev fra born a.txt"}),
		schemas.CodeDocumentMissing, schemas.CodeFileUnlisted)
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
