// Package schemas is kurer's registry of message types: the types file
// (types.json, data), one JSON Schema (draft 2020-12) per type, both embedded,
// and Validate, which checks a business message (the envelope's
// melding.json) and its payload file names against its type.
//
// Validation runs in three steps: limits and a syntax scan before any value
// is built (size, nesting depth, UTF-8, duplicate member names), the JSON
// Schema with format assertions (fodselsnummer and orgnr are custom formats
// that check the mod-11 control digits), and checks in Go that a schema
// cannot express (the document list against the envelope's files, date of
// birth against fødselsnummer, answer references, periods). All errors come
// back together as a *ValidationError with JSON-pointer paths and stable
// codes, without the offending values.
package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Limits applied to melding.json before it is parsed.
const (
	MaxMeldingSize = 1 << 20 // bytes
	MaxDepth       = 64      // nested arrays and objects
	// MaxErrors caps the errors of one Validate (an avvist receipt takes
	// at most 1000 reasons); the last one then says how many were left out.
	MaxErrors = 100
)

// TypesFile is the name of the types file in the registry's file system.
const TypesFile = "types.json"

// SchemaDir is the folder of the JSON Schema files in the registry's file system.
const SchemaDir = "jsonschema"

// MeldingFile is the envelope file that holds the business message
// (agent/localapi.MetadataFile).
const MeldingFile = "melding.json"

const schemaBaseURL = "https://schemas.kurer.no/"

//go:embed types.json jsonschema/*.json
var embedded embed.FS

// Files returns the embedded types file and schemas (types.json and
// jsonschema/*.json), e.g. for export to integrators.
func Files() fs.FS { return embedded }

// TypeInfo describes one message type, as the types file says.
type TypeInfo struct {
	Name        string `json:"name"`
	Title       string `json:"title"`
	Description string `json:"description"`
	// Answers are the types this type answers (the original's type for
	// in_reply_to); AnsweredBy is the inverse.
	Answers    []string `json:"answers"`
	AnsweredBy []string `json:"answered_by"`
	// RequiredFiles are payload file names that must be present besides
	// melding.json.
	RequiredFiles []string `json:"required_files"`
	// PayloadRequired: at least one payload file besides melding.json.
	PayloadRequired bool `json:"payload_required"`
	// DocumentList is the JSON pointer of the list in melding.json whose
	// items' "fil" name the payload files; "" when the type has none (then
	// only RequiredFiles may be present).
	DocumentList string `json:"document_list,omitempty"`
	// Receipt is true for no.kurer.kvittering.*.
	Receipt bool `json:"receipt"`
	// DefaultTTL is the default expiry of a message of this type.
	DefaultTTL time.Duration `json:"-"`
	// SchemaFile is the schema's file name under jsonschema/.
	SchemaFile string `json:"schema"`
}

// Registry holds the message types and their compiled schemas. It is
// immutable and safe for concurrent use.
type Registry struct {
	types map[string]*entry
	names []string
}

type entry struct {
	info   TypeInfo
	raw    []byte
	schema *jsonschema.Schema
}

var (
	defaultOnce sync.Once
	defaultReg  *Registry
)

// Default returns the registry of the embedded types file and schemas,
// compiled once. It panics if they do not compile, which the tests prevent.
func Default() *Registry {
	defaultOnce.Do(func() {
		r, err := New(embedded)
		if err != nil {
			panic("schemas: embedded registry: " + err.Error())
		}
		defaultReg = r
	})
	return defaultReg
}

type typesFile struct {
	Types []struct {
		Name            string   `json:"name"`
		Title           string   `json:"title"`
		Description     string   `json:"description"`
		Schema          string   `json:"schema"`
		Answers         []string `json:"answers"`
		RequiredFiles   []string `json:"required_files"`
		PayloadRequired bool     `json:"payload_required"`
		DocumentList    string   `json:"document_list"`
		Receipt         bool     `json:"receipt"`
		DefaultTTL      string   `json:"default_ttl"`
	} `json:"types"`
}

// New builds a registry from a file system holding TypesFile and the schema
// files under SchemaDir (every *.json there is added as a resource, so
// shared definitions can be referenced by relative URL).
func New(fsys fs.FS) (*Registry, error) {
	b, err := fs.ReadFile(fsys, TypesFile)
	if err != nil {
		return nil, fmt.Errorf("read types file: %w", err)
	}
	var tf typesFile
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("parse types file: %w", err)
	}

	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(refuseLoader{})
	c.RegisterFormat(&jsonschema.Format{Name: "fodselsnummer", Validate: validateFodselsnummerFormat})
	c.RegisterFormat(&jsonschema.Format{Name: "orgnr", Validate: validateOrgnrFormat})

	raws := map[string][]byte{}
	names, err := fs.Glob(fsys, SchemaDir+"/*.json")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		rb, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("read schema: %w", err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(rb))
		if err != nil {
			return nil, fmt.Errorf("parse schema %s: %w", n, err)
		}
		base := path.Base(n)
		if err := c.AddResource(schemaBaseURL+base, doc); err != nil {
			return nil, fmt.Errorf("add schema %s: %w", n, err)
		}
		raws[base] = rb
	}

	r := &Registry{types: map[string]*entry{}}
	for _, t := range tf.Types {
		if t.Name == "" {
			return nil, errors.New("types file: a type without name")
		}
		if _, dup := r.types[t.Name]; dup {
			return nil, fmt.Errorf("types file: duplicate type %s", t.Name)
		}
		raw, ok := raws[t.Schema]
		if !ok {
			return nil, fmt.Errorf("type %s: schema file %q not found", t.Name, t.Schema)
		}
		sch, err := c.Compile(schemaBaseURL + t.Schema)
		if err != nil {
			return nil, fmt.Errorf("type %s: compile schema: %w", t.Name, err)
		}
		ttl, err := time.ParseDuration(t.DefaultTTL)
		if err != nil || ttl <= 0 {
			return nil, fmt.Errorf("type %s: default_ttl %q is not a positive duration", t.Name, t.DefaultTTL)
		}
		if t.DocumentList != "" && !strings.HasPrefix(t.DocumentList, "/") {
			return nil, fmt.Errorf("type %s: document_list %q is not a JSON pointer", t.Name, t.DocumentList)
		}
		if t.Receipt != strings.HasPrefix(t.Name, "no.kurer.kvittering.") {
			return nil, fmt.Errorf("type %s: receipt flag does not match the name", t.Name)
		}
		r.types[t.Name] = &entry{
			info: TypeInfo{
				Name:            t.Name,
				Title:           t.Title,
				Description:     t.Description,
				Answers:         sortedCopy(t.Answers),
				AnsweredBy:      []string{},
				RequiredFiles:   sortedCopy(t.RequiredFiles),
				PayloadRequired: t.PayloadRequired,
				DocumentList:    t.DocumentList,
				Receipt:         t.Receipt,
				DefaultTTL:      ttl,
				SchemaFile:      t.Schema,
			},
			raw:    raw,
			schema: sch,
		}
		r.names = append(r.names, t.Name)
	}
	sort.Strings(r.names)
	for _, n := range r.names {
		e := r.types[n]
		for _, a := range e.info.Answers {
			orig, ok := r.types[a]
			if !ok {
				return nil, fmt.Errorf("type %s answers unknown type %s", n, a)
			}
			orig.info.AnsweredBy = append(orig.info.AnsweredBy, n)
		}
	}
	return r, nil
}

func sortedCopy(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

// refuseLoader keeps the compiler from reading files or the network: every
// schema must be in the registry's file system.
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema %s is not in the registry", url)
}

// Types returns all types, sorted by name.
func (r *Registry) Types() []TypeInfo {
	out := make([]TypeInfo, 0, len(r.names))
	for _, n := range r.names {
		out = append(out, r.types[n].info.clone())
	}
	return out
}

// Lookup returns the type with the name.
func (r *Registry) Lookup(name string) (TypeInfo, bool) {
	e, ok := r.types[name]
	if !ok {
		return TypeInfo{}, false
	}
	return e.info.clone(), true
}

// CanAnswer reports whether a message of replyType may answer (be
// in_reply_to) a message of originalType.
func (r *Registry) CanAnswer(replyType, originalType string) bool {
	e, ok := r.types[replyType]
	return ok && slices.Contains(e.info.Answers, originalType)
}

// Schema returns the raw JSON Schema of the type. It references shared
// definitions in felles.schema.json (see Files).
func (r *Registry) Schema(name string) ([]byte, bool) {
	e, ok := r.types[name]
	if !ok {
		return nil, false
	}
	return bytes.Clone(e.raw), true
}

func (t TypeInfo) clone() TypeInfo {
	t.Answers = slices.Clone(t.Answers)
	t.AnsweredBy = slices.Clone(t.AnsweredBy)
	t.RequiredFiles = slices.Clone(t.RequiredFiles)
	return t
}

// Validate checks melding (the bytes of melding.json) against the type's
// schema and the checks after it; files are the names of the envelope's
// payload files (melding.json itself is ignored if present). It returns nil,
// a *ValidationError, or an error wrapping ErrUnknownType.
func (r *Registry) Validate(typeName string, melding []byte, files []string) error {
	e, ok := r.types[typeName]
	if !ok {
		return fmt.Errorf("validate: %w", ErrUnknownType)
	}
	ve := &ValidationError{Type: typeName}
	if fe, ok := preScan(melding); !ok {
		ve.Errors = []FieldError{fe}
		return ve
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(melding))
	if err != nil {
		ve.Errors = []FieldError{{Code: CodeSyntax, Message: "not valid JSON"}}
		return ve
	}
	if _, isObj := doc.(map[string]any); !isObj {
		ve.Errors = []FieldError{{Code: CodeType, Message: "must be a JSON object"}}
		return ve
	}
	var errs []FieldError
	if err := e.schema.Validate(doc); err != nil {
		var sve *jsonschema.ValidationError
		if !errors.As(err, &sve) {
			return fmt.Errorf("validate %s: %w", typeName, err)
		}
		errs = flatten(sve, errs)
	}
	errs = append(errs, postChecks(r, &e.info, doc, files)...)
	if len(errs) == 0 {
		return nil
	}
	ve.Errors = normalize(errs)
	return ve
}

// normalize sorts by path, then code, then message, drops duplicates and
// caps the list at MaxErrors.
func normalize(errs []FieldError) []FieldError {
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i], errs[j]
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.Code != b.Code {
			return a.Code < b.Code
		}
		return a.Message < b.Message
	})
	errs = slices.Compact(errs)
	if len(errs) > MaxErrors {
		more := len(errs) - (MaxErrors - 1)
		errs = append(errs[:MaxErrors-1], FieldError{Code: CodeTooManyErrors, Message: fmt.Sprintf("%d more errors not shown", more)})
	}
	return errs
}
