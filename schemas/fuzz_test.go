package schemas_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kurer/kurer/schemas"
)

// FuzzValidate feeds arbitrary bytes as melding.json of every type, seeded
// from the examples and testdata/invalid. Validate must not panic, must
// return nil, a *ValidationError with well-formed errors, or (never, here)
// an unknown-type error.
func FuzzValidate(f *testing.F) {
	reg := schemas.Default()
	types := reg.Types()
	typeIndex := map[string]uint8{}
	for i, ti := range types {
		typeIndex[ti.Name] = uint8(i)
	}
	for _, c := range loadIndex(f).Cases {
		dir := filepath.Join(casesDir, c.Dir)
		b, err := os.ReadFile(filepath.Join(dir, schemas.MeldingFile))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(typeIndex[c.Type], b, strings.Join(payloadFiles(f, dir), "\n"))
	}
	for _, c := range loadInvalidCases(f) {
		f.Add(typeIndex[c.typ], c.melding, strings.Join(c.files, "\n"))
	}
	f.Fuzz(func(t *testing.T, ti uint8, melding []byte, files string) {
		typ := types[int(ti)%len(types)].Name
		var names []string
		if files != "" {
			names = strings.Split(files, "\n")
		}
		err := reg.Validate(typ, melding, names)
		if err == nil {
			return
		}
		var ve *schemas.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("not a ValidationError: %v", err)
		}
		if ve.Type != typ || len(ve.Errors) == 0 {
			t.Fatalf("bad ValidationError %+v", ve)
		}
		for _, fe := range ve.Errors {
			if fe.Code == "" || fe.Message == "" {
				t.Fatalf("empty code or message: %+v", fe)
			}
			if fe.Path != "" && !strings.HasPrefix(fe.Path, "/") {
				t.Fatalf("path is not a JSON pointer: %q", fe.Path)
			}
			if !utf8.ValidString(fe.Path) && utf8.Valid(melding) {
				t.Fatalf("path not UTF-8: %q", fe.Path)
			}
		}
	})
}
