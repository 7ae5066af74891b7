package schemas_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/kurer/kurer/schemas"
)

// TestDocsComplete: docs/message-types.md names every type and documents
// every FieldError code.
func TestDocsComplete(t *testing.T) {
	b, err := os.ReadFile("../docs/message-types.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, ti := range schemas.Default().Types() {
		if !strings.Contains(doc, "`"+ti.Name+"`") {
			t.Errorf("docs/message-types.md does not name %s", ti.Name)
		}
	}
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(f, func(x ast.Node) bool {
		vs, ok := x.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || !strings.HasPrefix(vs.Names[0].Name, "Code") {
			return true
		}
		lit, ok := vs.Values[0].(*ast.BasicLit)
		if !ok {
			return true
		}
		code, _ := strconv.Unquote(lit.Value)
		n++
		if !strings.Contains(doc, "`"+code+"`") {
			t.Errorf("docs/message-types.md does not document code %s", code)
		}
		return true
	})
	if n < 20 {
		t.Fatalf("found only %d codes in errors.go", n)
	}
}
