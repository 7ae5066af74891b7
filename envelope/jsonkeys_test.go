package envelope

import (
	"fmt"
	"strings"
	"testing"
)

// TestManifestKeysDifferingOnlyInCase: a signed manifest with two keys
// that differ only in case (or by a Unicode fold, such as the Kelvin sign
// for k) is refused: encoding/json would bind the last one to the field, a
// case-sensitive reader (the case system that gets the manifest) the
// first, so the two would see different senders or ids.
func TestManifestKeysDifferingOnlyInCase(t *testing.T) {
	valid := func(extra string) []byte {
		mb, err := marshalManifest(&Manifest{ID: "5d0f0000-0000-4000-8000-000000000001", Type: "t", From: "a", To: "b",
			Created: corpusTime, Files: []FileEntry{{Name: "a.txt", Size: 3, SHA256: fmt.Sprintf("%064x", 1), MediaType: "text/plain"}}})
		if err != nil {
			t.Fatal(err)
		}
		s := string(mb)
		return []byte(strings.Replace(s, "{", "{"+extra, 1))
	}
	if _, err := ParseManifest(valid(""), Limits{}); err != nil {
		t.Fatalf("the valid manifest: %v", err)
	}
	for _, extra := range []string{
		`"ID":"ffffffff-0000-4000-8000-000000000001",`,
		`"From":"mallory",`,
		`"TO":"mallory",`,
		`"tYpe":"x",`,
		`"\u212Aey":"x","key":"y",`, // Kelvin sign folds to k
	} {
		_, err := ParseManifest(valid(extra), Limits{})
		if err == nil || ReasonOf(err) != ReasonFormat || !strings.Contains(err.Error(), "duplicate key") {
			t.Errorf("%s: %v, want a format error for a duplicate key", extra, err)
		}
	}
	// Header names that differ only in case are duplicates too (header
	// names are case-insensitive where they come from).
	hdr := []byte(`{"id":"x","type":"t","from":"a","to":"b","created":"2026-01-01T00:00:00Z","headers":{"X-Ref":"1","x-ref":"2"},"files":[]}`)
	if _, err := ParseManifest(hdr, Limits{}); err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Errorf("headers differing in case: %v", err)
	}
}

func TestFoldKey(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{"id", "ID", true}, {"from", "fRoM", true}, {"\u212A", "k", true}, {"\u017F", "S", true},
		{"id", "idd", false}, {"to", "t0", false}, {"æ", "Æ", true}, {"ß", "ss", false},
	} {
		if got := foldKey(c.a) == foldKey(c.b); got != c.same || got != strings.EqualFold(c.a, c.b) {
			t.Errorf("foldKey(%q) == foldKey(%q): %v, want %v (strings.EqualFold agrees)", c.a, c.b, got, c.same)
		}
	}
}
