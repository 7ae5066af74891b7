package schemas

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/unicode/norm"
)

// The checks after the schema: what JSON Schema cannot say. They run on
// the decoded document even when the schema failed, defensively (any shape),
// so that one Validate reports everything it can.

var typeNameRE = regexp.MustCompile(`^no\.kurer\.[a-z]+(\.[a-z]+)+\.v[0-9]+$`)

func postChecks(r *Registry, info *TypeInfo, doc any, files []string) []FieldError {
	var out []FieldError
	out = append(out, checkFiles(info, doc, files)...)
	out = append(out, checkBirthDates(doc, "")...)
	if info.Receipt {
		if t, ok := str(get(doc, "meldingstype")); ok && typeNameRE.MatchString(t) && !r.CanAnswer(info.Name, t) {
			out = append(out, FieldError{"/meldingstype", CodeAnswerReference, "is not a message type this receipt answers"})
		}
	}
	if check, ok := typeChecks[info.Name]; ok {
		out = append(out, check(doc)...)
	}
	return out
}

var typeChecks = map[string]func(doc any) []FieldError{
	TypeSakOverforing: func(doc any) []FieldError {
		var out []FieldError
		out = append(out, sameMunicipality(doc, "/avsender/kommune/kommunenummer", "/mottaker/kommune/kommunenummer")...)
		for i, t := range arr(get(doc, "tiltak")) {
			out = append(out, dateOrder(t, "/tiltak/"+strconv.Itoa(i), "fra", "til")...)
		}
		return out
	},
	TypeDokumentasjonForesporsel: func(doc any) []FieldError {
		var out []FieldError
		out = append(out, sameMunicipality(doc, "/fra/kommune/kommunenummer", "/til/kommune/kommunenummer")...)
		seen := map[string]bool{}
		for i, d := range arr(get(doc, "etterspurte_dokumenter")) {
			p := "/etterspurte_dokumenter/" + strconv.Itoa(i)
			if id, ok := str(get(d, "id")); ok {
				if seen[id] {
					out = append(out, FieldError{p + "/id", CodeDuplicateID, "the same id is used by an earlier requested item"})
				}
				seen[id] = true
			}
			out = append(out, dateOrder(get(d, "periode"), p+"/periode", "fra", "til")...)
		}
		return out
	},
	TypeDokumentasjonSvar: func(doc any) []FieldError {
		var out []FieldError
		answered := map[string]bool{}
		docs := arr(get(doc, "dokumenter"))
		for _, d := range docs {
			for _, id := range arr(get(d, "besvarer")) {
				if s, ok := str(id); ok {
					answered[s] = true
				}
			}
		}
		notDelivered := arr(get(doc, "ikke_levert"))
		seen := map[string]bool{}
		for i, n := range notDelivered {
			p := "/ikke_levert/" + strconv.Itoa(i) + "/id"
			id, ok := str(get(n, "id"))
			if !ok {
				continue
			}
			if answered[id] {
				out = append(out, FieldError{p, CodeAnswerReference, "the item is also answered by a document"})
			}
			if seen[id] {
				out = append(out, FieldError{p, CodeDuplicateID, "the same id is used by an earlier item"})
			}
			seen[id] = true
		}
		if _, isArr := get(doc, "dokumenter").([]any); isArr && len(docs) == 0 && len(notDelivered) == 0 {
			out = append(out, FieldError{"/dokumenter", CodeEmptyAnswer, "the answer must deliver a document or list the items not delivered"})
		}
		return out
	},
	TypeRapportering: func(doc any) []FieldError {
		per := get(doc, "periode")
		out := dateOrder(per, "/periode", "fra", "til")
		if len(out) > 0 {
			return out
		}
		from, ok1 := date(get(per, "fra"))
		to, ok2 := date(get(per, "til"))
		if !ok1 || !ok2 {
			return out
		}
		for i, h := range arr(get(doc, "hendelser")) {
			if d, ok := date(get(h, "dato")); ok && (d.Before(from) || d.After(to)) {
				out = append(out, FieldError{"/hendelser/" + strconv.Itoa(i) + "/dato", CodeRange, "is outside the report's period"})
			}
		}
		return out
	},
}

// checkFiles cross-checks the type's document list with the envelope's
// payload file names, both ways, and the required files and payload. Names
// are compared in Unicode NFC, as the envelope stores them, so a list
// written with decomposed æøå still matches.
func checkFiles(info *TypeInfo, doc any, files []string) []FieldError {
	var out []FieldError
	present := map[string]bool{}
	for _, f := range files {
		if f = norm.NFC.String(f); f != MeldingFile {
			present[f] = true
		}
	}
	if info.PayloadRequired && len(present) == 0 {
		out = append(out, FieldError{"", CodePayloadMissing, "the message type requires at least one payload file besides melding.json"})
	}
	allowed := map[string]bool{}
	for _, f := range info.RequiredFiles {
		f = norm.NFC.String(f)
		allowed[f] = true
		if !present[f] {
			out = append(out, FieldError{"", CodeRequiredFile, "the required payload file " + strconv.Quote(f) + " is missing"})
		}
	}
	if info.DocumentList != "" {
		listed := map[string]bool{}
		for i, item := range arr(getPointer(doc, info.DocumentList)) {
			f, ok := str(get(item, "fil"))
			if !ok {
				continue
			}
			f = norm.NFC.String(f)
			p := info.DocumentList + "/" + strconv.Itoa(i) + "/fil"
			if listed[f] {
				out = append(out, FieldError{p, CodeDuplicateFile, "the file is already named by an earlier entry"})
				continue
			}
			listed[f] = true
			allowed[f] = true
			if !present[f] {
				out = append(out, FieldError{p, CodeDocumentMissing, "the file named here is not in the envelope"})
			}
		}
	}
	var unlisted []string
	for f := range present {
		if !allowed[f] {
			unlisted = append(unlisted, f)
		}
	}
	sort.Strings(unlisted)
	for _, f := range unlisted {
		if info.DocumentList != "" {
			out = append(out, FieldError{info.DocumentList, CodeFileUnlisted, "the envelope file " + strconv.Quote(f) + " is not in the document list"})
		} else {
			out = append(out, FieldError{"", CodeFileUnlisted, "the envelope file " + strconv.Quote(f) + " is not expected by this message type"})
		}
	}
	return out
}

// checkBirthDates walks the document: wherever an object has both
// fodselsnummer and fodselsdato, the date must be the one in the number.
func checkBirthDates(v any, ptr string) []FieldError {
	var out []FieldError
	switch x := v.(type) {
	case map[string]any:
		if fnr, ok := str(x["fodselsnummer"]); ok {
			if born, ok := FodselsdatoFromNumber(fnr); ok {
				if d, ok := date(x["fodselsdato"]); ok && !d.Equal(born) {
					out = append(out, FieldError{ptr + "/fodselsdato", CodeBirthDate, "does not match the date in fodselsnummer"})
				}
			}
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, checkBirthDates(x[k], ptr+"/"+escapePointer(k))...)
		}
	case []any:
		for i, e := range x {
			out = append(out, checkBirthDates(e, ptr+"/"+strconv.Itoa(i))...)
		}
	}
	return out
}

func sameMunicipality(doc any, a, b string) []FieldError {
	x, ok1 := str(getPointer(doc, a))
	y, ok2 := str(getPointer(doc, b))
	if ok1 && ok2 && x == y {
		return []FieldError{{b, CodeSameMunicipality, "sender and receiver are the same municipality"}}
	}
	return nil
}

// dateOrder reports obj[to] before obj[from] when both are dates.
func dateOrder(obj any, ptr, from, to string) []FieldError {
	f, ok1 := date(get(obj, from))
	t, ok2 := date(get(obj, to))
	if ok1 && ok2 && t.Before(f) {
		return []FieldError{{ptr + "/" + to, CodeRange, "is before " + from}}
	}
	return nil
}

func get(v any, key string) any {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	return m[key]
}

// getPointer resolves a simple JSON pointer of object member names.
func getPointer(v any, ptr string) any {
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		v = get(v, tok)
	}
	return v
}

func arr(v any) []any {
	a, _ := v.([]any)
	return a
}

func str(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

func date(v any) (time.Time, bool) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.DateOnly, s)
	return t, err == nil
}
