package agent_test

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/openapitest"
)

// The parts of an OpenAPI 3 document the drift tests read.
type (
	oaSpec struct {
		OpenAPI    string                     `yaml:"openapi"`
		Paths      map[string]map[string]oaOp `yaml:"paths"`
		Components struct {
			SecuritySchemes map[string]struct {
				Type   string `yaml:"type"`
				Scheme string `yaml:"scheme"`
			} `yaml:"securitySchemes"`
			Parameters map[string]oaParam   `yaml:"parameters"`
			Schemas    map[string]*oaSchema `yaml:"schemas"`
		} `yaml:"components"`
	}
	oaOp struct {
		Security   []map[string][]string `yaml:"security"`
		Parameters []oaParam             `yaml:"parameters"`
		Responses  map[string]any        `yaml:"responses"`
	}
	oaParam struct {
		Ref      string `yaml:"$ref"`
		Name     string `yaml:"name"`
		In       string `yaml:"in"`
		Required bool   `yaml:"required"`
	}
	oaSchema struct {
		Ref        string               `yaml:"$ref"`
		Type       string               `yaml:"type"`
		Format     string               `yaml:"format"`
		Enum       []string             `yaml:"enum"`
		Required   []string             `yaml:"required"`
		Properties map[string]*oaSchema `yaml:"properties"`
		Items      *oaSchema            `yaml:"items"`
		AllOf      []*oaSchema          `yaml:"allOf"`
	}
)

// loadSpec parses the embedded openapi.yaml and checks that it is OpenAPI 3,
// that every local $ref in it resolves and that no key lacks its value.
func loadSpec(tb testing.TB) *oaSpec {
	tb.Helper()
	var spec oaSpec
	if err := yaml.Unmarshal(localapi.OpenAPI, &spec); err != nil {
		tb.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(spec.OpenAPI, "3.") {
		tb.Fatalf("openapi version %q", spec.OpenAPI)
	}
	openapitest.Check(tb, localapi.OpenAPI)
	return &spec
}

// route is one pattern of the agent's local API mux.
type route struct {
	method, path string // path in OpenAPI form ({name...} -> {name})
	auth         bool   // wrapped in requireToken
}

// servedRoutes reads the routes from apiHandler in server.go: every
// mux.Handle/HandleFunc call, with localapi path constants resolved from
// localapi/api.go. The mux has no list of its patterns, and reading the
// source keeps server.go free of test hooks.
func servedRoutes(tb testing.TB) []route {
	tb.Helper()
	fset := token.NewFileSet()
	consts := map[string]string{}
	apiFile, err := parser.ParseFile(fset, "localapi/api.go", nil, 0)
	if err != nil {
		tb.Fatal(err)
	}
	ast.Inspect(apiFile, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok {
			for i, name := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						consts[name.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
		return true
	})
	var eval func(e ast.Expr) string
	eval = func(e ast.Expr) string {
		switch e := e.(type) {
		case *ast.BasicLit:
			s, err := strconv.Unquote(e.Value)
			if err != nil {
				tb.Fatalf("server.go: pattern literal %s: %v", e.Value, err)
			}
			return s
		case *ast.SelectorExpr:
			if x, ok := e.X.(*ast.Ident); ok && x.Name == "localapi" {
				if v, ok := consts[e.Sel.Name]; ok {
					return v
				}
			}
		case *ast.BinaryExpr:
			if e.Op == token.ADD {
				return eval(e.X) + eval(e.Y)
			}
		}
		tb.Fatalf("server.go: cannot evaluate pattern expression at %s", fset.Position(e.Pos()))
		return ""
	}

	srv, err := parser.ParseFile(fset, "server.go", nil, 0)
	if err != nil {
		tb.Fatal(err)
	}
	var fn *ast.FuncDecl
	for _, d := range srv.Decls {
		if f, ok := d.(*ast.FuncDecl); ok && f.Name.Name == "apiHandler" {
			fn = f
		}
	}
	if fn == nil {
		tb.Fatal("server.go: no apiHandler")
	}
	wild := regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)\.\.\.\}`)
	var routes []route
	catchAll := false
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) != 2 {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
			return true
		}
		if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "mux" {
			return true
		}
		pattern := eval(call.Args[0])
		method, path, ok := strings.Cut(pattern, " ")
		if !ok {
			if pattern != "/" {
				tb.Errorf("server.go: pattern %q has no method", pattern)
			}
			catchAll = true
			return true
		}
		auth := false
		if c, ok := call.Args[1].(*ast.CallExpr); ok {
			if id, ok := c.Fun.(*ast.Ident); ok && id.Name == "auth" {
				auth = true
			}
		}
		routes = append(routes, route{method: method, path: wild.ReplaceAllString(path, "{$1}"), auth: auth})
		return true
	})
	if !catchAll {
		tb.Error("server.go: the catch-all / (401 or not_found) is gone; update openapi.yaml's description")
	}
	if len(routes) < 10 {
		tb.Fatalf("only %d routes found in server.go", len(routes))
	}
	return routes
}

// TestLocalAPIOpenAPIRoutes checks that every route the agent's local API
// serves is in openapi.yaml with its method and its security (Bearer token
// or none), that openapi.yaml describes nothing the agent does not serve,
// and that every path parameter is declared.
func TestLocalAPIOpenAPIRoutes(t *testing.T) {
	spec := loadSpec(t)
	if s := spec.Components.SecuritySchemes["token"]; s.Type != "http" || s.Scheme != "bearer" {
		t.Errorf("securitySchemes.token = %+v, want http bearer", s)
	}
	served := map[string]route{}
	for _, r := range servedRoutes(t) {
		key := r.method + " " + r.path
		served[key] = r
		ops, ok := spec.Paths[r.path]
		if !ok {
			t.Errorf("route %s: path not in openapi.yaml", key)
			continue
		}
		op, ok := ops[strings.ToLower(r.method)]
		if !ok {
			t.Errorf("route %s: method not in openapi.yaml", key)
			continue
		}
		secured := slices.ContainsFunc(op.Security, func(m map[string][]string) bool { _, ok := m["token"]; return ok })
		if secured != r.auth {
			t.Errorf("route %s: needs the token = %v, openapi.yaml says %v", key, r.auth, secured)
		}
		if r.auth {
			if _, ok := op.Responses["401"]; !ok {
				t.Errorf("route %s: no 401 response in openapi.yaml", key)
			}
		}
	}
	params := regexp.MustCompile(`\{([^}]+)\}`)
	for path, ops := range spec.Paths {
		for method, op := range ops {
			key := strings.ToUpper(method) + " " + path
			if _, ok := served[key]; !ok {
				t.Errorf("openapi.yaml: %s is not served by the agent", key)
			}
			declared := map[string]bool{}
			for _, p := range op.Parameters {
				if name, ok := strings.CutPrefix(p.Ref, "#/components/parameters/"); ok {
					p = spec.Components.Parameters[name]
				}
				if p.In == "path" {
					if !p.Required {
						t.Errorf("openapi.yaml: %s: path parameter %s not required", key, p.Name)
					}
					declared[p.Name] = true
				}
			}
			for _, m := range params.FindAllStringSubmatch(path, -1) {
				if !declared[m[1]] {
					t.Errorf("openapi.yaml: %s: path parameter %s not declared", key, m[1])
				}
				delete(declared, m[1])
			}
			for name := range declared {
				t.Errorf("openapi.yaml: %s: parameter %s is not in the path", key, name)
			}
			ok2xx := false
			for code := range op.Responses {
				ok2xx = ok2xx || strings.HasPrefix(code, "2")
			}
			if !ok2xx {
				t.Errorf("openapi.yaml: %s: no 2xx response", key)
			}
		}
	}
}

// TestLocalAPIOpenAPIServed checks that a running agent serves openapi.yaml
// byte for byte without a token, and that every operation in it reaches a
// handler of its own (not the catch-all not_found) on a real agent, with
// and without the token as the spec says.
func TestLocalAPIOpenAPIServed(t *testing.T) {
	file, err := os.ReadFile("localapi/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(bytes.TrimSpace(file)) == 0 || !bytes.Equal(file, localapi.OpenAPI) {
		t.Fatal("localapi.OpenAPI is empty or not localapi/openapi.yaml")
	}
	n := agenttest.NewNetwork(t, "oslo")
	base := n.Nodes["oslo"].URL
	do := func(method, path, tok string, body io.Reader) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}

	resp, got := do(http.MethodGet, localapi.PathOpenAPI, "", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, file) {
		t.Fatalf("GET %s: %d, %d bytes; want 200 and the %d bytes of openapi.yaml", localapi.PathOpenAPI, resp.StatusCode, len(got), len(file))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/yaml" {
		t.Errorf("GET %s: Content-Type %q", localapi.PathOpenAPI, ct)
	}

	// The catch-all answers not_found with this detail; a described
	// operation must never reach it.
	if _, b := do(http.MethodGet, "/v1/no-such-endpoint", agenttest.Token, nil); !strings.Contains(string(b), "no such endpoint") {
		t.Fatalf("catch-all answer changed: %s", b)
	}
	spec := loadSpec(t)
	fill := strings.NewReplacer("{id}", "00000000-0000-4000-8000-000000000000", "{name}", "dir/a.txt")
	for path, ops := range spec.Paths {
		for method, op := range ops {
			name := strings.ToUpper(method) + " " + path
			t.Run(name, func(t *testing.T) {
				body := func() io.Reader {
					if method == "post" {
						return strings.NewReader("{}")
					}
					return nil
				}
				p := fill.Replace(path)
				if path == localapi.PathEvents {
					p += "?wait=0s"
				}
				resp, b := do(strings.ToUpper(method), p, agenttest.Token, body())
				if resp.StatusCode == http.StatusMethodNotAllowed || strings.Contains(string(b), "no such endpoint") {
					t.Fatalf("with the token: %d %s: not served", resp.StatusCode, b)
				}
				if _, ok := op.Responses[strconv.Itoa(resp.StatusCode)]; !ok {
					t.Errorf("with the token: status %d not in openapi.yaml (%s)", resp.StatusCode, b)
				}
				resp, _ = do(strings.ToUpper(method), p, "", body())
				if secured := len(op.Security) > 0; secured != (resp.StatusCode == http.StatusUnauthorized) {
					t.Errorf("without a token: status %d, openapi.yaml security %v", resp.StatusCode, op.Security)
				}
			})
		}
	}
}

// jsonField is one JSON member of a wire type.
type jsonField struct {
	name      string
	omitempty bool
	typ       reflect.Type
}

// jsonFields lists t's JSON members as encoding/json sees them (embedded
// structs flattened).
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		omit := slices.Contains(strings.Split(opts, ","), "omitempty") || slices.Contains(strings.Split(opts, ","), "omitzero")
		out = append(out, jsonField{name: name, omitempty: omit, typ: f.Type})
	}
	return out
}

// resolve follows $ref and merges allOf into one schema.
func (s *oaSpec) resolve(tb testing.TB, sc *oaSchema) *oaSchema {
	tb.Helper()
	if sc == nil {
		return &oaSchema{}
	}
	if name, ok := strings.CutPrefix(sc.Ref, "#/components/schemas/"); ok {
		return s.resolve(tb, s.Components.Schemas[name])
	}
	if len(sc.AllOf) == 0 {
		return sc
	}
	out := &oaSchema{Type: "object", Properties: map[string]*oaSchema{}}
	for _, part := range sc.AllOf {
		p := s.resolve(tb, part)
		for k, v := range p.Properties {
			out.Properties[k] = v
		}
		out.Required = append(out.Required, p.Required...)
	}
	return out
}

// openAPIType is the OpenAPI type of a Go field's JSON form.
func openAPIType(t reflect.Type) string {
	if t == reflect.TypeFor[time.Time]() {
		return "string"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32:
		return "integer"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return t.Kind().String()
}

// TestLocalAPIOpenAPISchemas checks every wire type of localapi against the
// schema of the same name in openapi.yaml: the same JSON members, of the
// same types, and (for answers) required exactly when never omitted; and
// the state, direction and receipt kind enums against their constants.
func TestLocalAPIOpenAPISchemas(t *testing.T) {
	spec := loadSpec(t)
	types := []struct {
		v       any
		request bool // required is not derived from omitempty
	}{
		{localapi.SendResponse{}, false},
		{localapi.StateChange{}, false},
		{localapi.Receipt{}, false},
		{localapi.MessageSummary{}, false},
		{localapi.File{}, false},
		{localapi.MessageDetail{}, false},
		{localapi.RejectRequest{}, true},
		{localapi.Reason{}, false},
		{localapi.Event{}, false},
		{localapi.EventsResponse{}, false},
		{localapi.ErrorBody{}, false},
	}
	for _, tc := range types {
		rt := reflect.TypeOf(tc.v)
		t.Run(rt.Name(), func(t *testing.T) {
			raw, ok := spec.Components.Schemas[rt.Name()]
			if !ok {
				t.Fatalf("openapi.yaml: no schema %s", rt.Name())
			}
			sc := spec.resolve(t, raw)
			fields := jsonFields(rt)
			names := map[string]bool{}
			for _, f := range fields {
				names[f.name] = true
				p, ok := sc.Properties[f.name]
				if !ok {
					t.Errorf("field %s: not in the schema", f.name)
					continue
				}
				if want, got := openAPIType(f.typ), spec.resolve(t, p).Type; got != want {
					t.Errorf("field %s: schema type %q, want %q", f.name, got, want)
				}
				if f.typ == reflect.TypeFor[time.Time]() && p.Format != "date-time" {
					t.Errorf("field %s: want format date-time", f.name)
				}
				if req := slices.Contains(sc.Required, f.name); !tc.request && req == f.omitempty {
					t.Errorf("field %s: in required = %v, want %v (omitempty = %v)", f.name, req, !f.omitempty, f.omitempty)
				}
			}
			for p := range sc.Properties {
				if !names[p] {
					t.Errorf("schema property %s: no such JSON field in %s", p, rt)
				}
			}
			for _, r := range sc.Required {
				if !names[r] {
					t.Errorf("required %s: no such JSON field in %s", r, rt)
				}
			}
		})
	}
	// ErrorBody carries every member of the body errs.Write sends.
	eb := spec.resolve(t, spec.Components.Schemas["ErrorBody"])
	for _, f := range jsonFields(reflect.TypeFor[errs.Body]()) {
		if _, ok := eb.Properties[f.name]; !ok {
			t.Errorf("ErrorBody: lacks %s of errs.Body", f.name)
		}
	}

	out := []string{localapi.StateQueued, localapi.StateSent, localapi.StateDelivered, localapi.StateReceived,
		localapi.StateProcessed, localapi.StateRejected, localapi.StateExpired, localapi.StateFailed}
	in := []string{localapi.InStored, localapi.InDelivered, localapi.InProcessed, localapi.InRejected}
	kinds := []string{api.EventAccepted, api.EventDelivered, api.EventRejected, api.EventExpired, api.EventFailed,
		agent.KindMottatt, agent.KindAvvist, agent.KindBehandlet}
	enums := []struct {
		name   string
		schema *oaSchema
		want   []string
	}{
		{"OutgoingState", spec.Components.Schemas["OutgoingState"], out},
		{"IncomingState", spec.Components.Schemas["IncomingState"], in},
		{"MessageState", spec.Components.Schemas["MessageState"], append(slices.Clone(out), in...)},
		{"Direction", spec.Components.Schemas["Direction"], []string{localapi.DirectionOut, localapi.DirectionIn}},
		{"Receipt.kind", spec.resolve(t, spec.Components.Schemas["Receipt"]).Properties["kind"], kinds},
	}
	for _, e := range enums {
		if e.schema == nil {
			t.Errorf("openapi.yaml: no %s", e.name)
			continue
		}
		if got, want := sortedSet(e.schema.Enum), sortedSet(e.want); !slices.Equal(got, want) {
			t.Errorf("%s enum %v, want %v", e.name, got, want)
		}
	}
}

func sortedSet(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return slices.Compact(out)
}
