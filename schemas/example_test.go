package schemas_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kurer/kurer/schemas"
)

const casesDir = "../examples/cases"

type caseEntry struct {
	Dir  string `json:"dir"`
	Type string `json:"type"`
	From string `json:"from"`
	To   string `json:"to"`
}

type caseIndex struct {
	Cases []caseEntry `json:"cases"`
}

func loadIndex(tb testing.TB) caseIndex {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(casesDir, "cases.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var idx caseIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		tb.Fatal(err)
	}
	return idx
}

// payloadFiles lists the files under dir (relative, / separated) except
// melding.json at the top, as the envelope would carry them.
func payloadFiles(tb testing.TB, dir string) []string {
	tb.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel != schemas.MeldingFile {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return files
}

// TestExamplesValid: every example case validates against its type, and
// every type has at least one example.
func TestExamplesValid(t *testing.T) {
	reg := schemas.Default()
	idx := loadIndex(t)
	covered := map[string]bool{}
	for _, c := range idx.Cases {
		t.Run(c.Dir, func(t *testing.T) {
			dir := filepath.Join(casesDir, c.Dir)
			melding, err := os.ReadFile(filepath.Join(dir, schemas.MeldingFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := reg.Validate(c.Type, melding, payloadFiles(t, dir)); err != nil {
				t.Fatalf("example %s is not valid %s:\n%v", c.Dir, c.Type, err)
			}
			info, _ := reg.Lookup(c.Type)
			var doc map[string]any
			if err := json.Unmarshal(melding, &doc); err != nil {
				t.Fatal(err)
			}
			if !info.Receipt && doc["syntetisk"] != true {
				t.Errorf("example %s is not marked \"syntetisk\": true", c.Dir)
			}
			covered[c.Type] = true
		})
	}
	for _, ti := range reg.Types() {
		if !covered[ti.Name] {
			t.Errorf("type %s has no example in %s", ti.Name, casesDir)
		}
	}
	entries, err := os.ReadDir(casesDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() && !slices.ContainsFunc(idx.Cases, func(c caseEntry) bool { return c.Dir == e.Name() }) {
			t.Errorf("folder %s is not in cases.json", e.Name())
		}
	}
}

// TestExamplesFilesMatter: removing any payload file of an example or
// adding a stray one makes it invalid with the cross-check's code.
func TestExamplesFilesMatter(t *testing.T) {
	reg := schemas.Default()
	for _, c := range loadIndex(t).Cases {
		dir := filepath.Join(casesDir, c.Dir)
		melding, err := os.ReadFile(filepath.Join(dir, schemas.MeldingFile))
		if err != nil {
			t.Fatal(err)
		}
		files := payloadFiles(t, dir)
		for i := range files {
			less := slices.Delete(slices.Clone(files), i, i+1)
			assertCode(t, reg.Validate(c.Type, melding, less), schemas.CodeDocumentMissing)
		}
		assertCode(t, reg.Validate(c.Type, melding, append(slices.Clone(files), "stray.txt")), schemas.CodeFileUnlisted)
	}
}

func assertCode(tb testing.TB, err error, code string) {
	tb.Helper()
	var ve *schemas.ValidationError
	if !errors.As(err, &ve) {
		tb.Fatalf("want a ValidationError with %s, got %v", code, err)
	}
	for _, fe := range ve.Errors {
		if fe.Code == code {
			return
		}
	}
	tb.Fatalf("want code %s, got %+v", code, ve.Errors)
}
