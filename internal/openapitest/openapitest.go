// Package openapitest checks the OpenAPI descriptions kurer serves (the
// gateway's and the agent's local API) in their tests: that they parse, are
// OpenAPI 3, that every local $ref resolves and that no key lacks its value
// (an unquoted comma in a YAML flow mapping silently makes one).
package openapitest

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Check fails tb for every such defect in the YAML document data.
func Check(tb testing.TB, data []byte) {
	tb.Helper()
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		tb.Fatalf("openapi.yaml: %v", err)
	}
	top, _ := doc.(map[string]any)
	if v, _ := top["openapi"].(string); !strings.HasPrefix(v, "3.") {
		tb.Fatalf("openapi.yaml: openapi version %q, want 3.x", v)
	}
	checkNode(tb, doc, doc)
}

func checkNode(tb testing.TB, doc, n any) {
	tb.Helper()
	switch v := n.(type) {
	case map[string]any:
		for k, e := range v {
			if e == nil {
				tb.Errorf("openapi.yaml: key %q has no value", k)
			}
			if k == "$ref" {
				ref, _ := e.(string)
				if lookupRef(doc, ref) == nil {
					tb.Errorf("openapi.yaml: $ref %q does not resolve", ref)
				}
				continue
			}
			checkNode(tb, doc, e)
		}
	case []any:
		for _, e := range v {
			checkNode(tb, doc, e)
		}
	}
}

// lookupRef resolves a local reference ("#/components/schemas/X") in doc.
func lookupRef(doc any, ref string) any {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	n := doc
	for _, seg := range strings.Split(p, "/") {
		seg = strings.NewReplacer("~1", "/", "~0", "~").Replace(seg)
		m, ok := n.(map[string]any)
		if !ok {
			return nil
		}
		if n, ok = m[seg]; !ok {
			return nil
		}
	}
	return n
}
