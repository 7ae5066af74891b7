package schemas_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kurer/kurer/schemas"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/invalid")

// invalidCase is one file testdata/invalid/NAME.json: a message built from
// an example (base) with members set and deleted and payload files added
// and removed, or the raw bytes of NAME.raw. NAME.golden.json holds the
// FieldErrors Validate must return.
type invalidCase struct {
	Type        string         `json:"type"`
	Base        string         `json:"base,omitempty"`
	Set         map[string]any `json:"set,omitempty"`
	Delete      []string       `json:"delete,omitempty"`
	AddFiles    []string       `json:"add_files,omitempty"`
	RemoveFiles []string       `json:"remove_files,omitempty"` // "*" removes all
}

type builtCase struct {
	name    string
	typ     string
	melding []byte
	files   []string
}

func loadInvalidCases(tb testing.TB) []builtCase {
	tb.Helper()
	paths, err := filepath.Glob("testdata/invalid/*.json")
	if err != nil {
		tb.Fatal(err)
	}
	var out []builtCase
	for _, p := range paths {
		if strings.HasSuffix(p, ".golden.json") {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		var c invalidCase
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			tb.Fatalf("%s: %v", p, err)
		}
		out = append(out, buildCase(tb, name, c))
	}
	if len(out) == 0 {
		tb.Fatal("no invalid cases in testdata/invalid")
	}
	return out
}

func buildCase(tb testing.TB, name string, c invalidCase) builtCase {
	tb.Helper()
	bc := builtCase{name: name, typ: c.Type}
	if c.Base == "" {
		raw, err := os.ReadFile(filepath.Join("testdata/invalid", name+".raw"))
		if err != nil {
			tb.Fatalf("%s: no base and no .raw: %v", name, err)
		}
		bc.melding = raw
	} else {
		dir := filepath.Join(casesDir, c.Base)
		raw, err := os.ReadFile(filepath.Join(dir, schemas.MeldingFile))
		if err != nil {
			tb.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var doc any
		if err := dec.Decode(&doc); err != nil {
			tb.Fatal(err)
		}
		keys := make([]string, 0, len(c.Set))
		for k := range c.Set {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			doc = patch(tb, doc, k, c.Set[k], false)
		}
		for _, k := range c.Delete {
			doc = patch(tb, doc, k, nil, true)
		}
		if bc.melding, err = json.MarshalIndent(doc, "", "  "); err != nil {
			tb.Fatal(err)
		}
		bc.files = payloadFiles(tb, dir)
	}
	for _, r := range c.RemoveFiles {
		n := len(bc.files)
		bc.files = slices.DeleteFunc(bc.files, func(f string) bool { return r == "*" || f == r })
		if len(bc.files) == n {
			tb.Fatalf("%s: remove_files %q removes nothing", name, r)
		}
	}
	bc.files = append(bc.files, c.AddFiles...)
	return bc
}

// patch sets (or deletes) the member at a JSON pointer; the parent must exist.
func patch(tb testing.TB, doc any, ptr string, val any, del bool) any {
	tb.Helper()
	toks := strings.Split(strings.TrimPrefix(ptr, "/"), "/")
	parent := doc
	for _, t := range toks[:len(toks)-1] {
		switch p := parent.(type) {
		case map[string]any:
			parent = p[t]
		case []any:
			i, err := strconv.Atoi(t)
			if err != nil || i >= len(p) {
				tb.Fatalf("pointer %s: bad index %s", ptr, t)
			}
			parent = p[i]
		default:
			tb.Fatalf("pointer %s: no container at %s", ptr, t)
		}
	}
	last := toks[len(toks)-1]
	switch p := parent.(type) {
	case map[string]any:
		if del {
			if _, ok := p[last]; !ok {
				tb.Fatalf("delete %s: not present", ptr)
			}
			delete(p, last)
		} else {
			p[last] = val
		}
	case []any:
		i, err := strconv.Atoi(last)
		if err != nil || i >= len(p) || del {
			tb.Fatalf("pointer %s: bad array operation", ptr)
		}
		p[i] = val
	default:
		tb.Fatalf("pointer %s: parent is not a container", ptr)
	}
	return doc
}

// TestGoldenInvalid validates every invalid case and compares the errors
// (path, code, message) with its golden file. go test -run Golden -update
// rewrites them; review the diff.
func TestGoldenInvalid(t *testing.T) {
	reg := schemas.Default()
	cases := loadInvalidCases(t)
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.typ] = true
	}
	for _, ti := range reg.Types() {
		if !covered[ti.Name] {
			t.Errorf("type %s has no invalid case in testdata/invalid", ti.Name)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := reg.Validate(c.typ, c.melding, c.files)
			var ve *schemas.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want *ValidationError, got %v", err)
			}
			if ve.Type != c.typ || len(ve.Errors) == 0 {
				t.Fatalf("bad ValidationError %+v", ve)
			}
			got, err := json.MarshalIndent(ve.Errors, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata/invalid", c.name+".golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("errors differ from %s\n got: %s\nwant: %s", golden, got, want)
			}
			// Error() is one "PATH: message" line per error.
			if lines := strings.Split(ve.Error(), "\n"); len(lines) != len(ve.Errors) {
				t.Errorf("Error() has %d lines for %d errors", len(lines), len(ve.Errors))
			}
		})
	}
}
